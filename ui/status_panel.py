"""The bottom of the dialog: the messages (scrolling in a bounded box, so that the buttons
stay on screen), the estimate line, the device in use, the run status and the buttons."""
from __future__ import annotations

import html
from typing import List, Tuple

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

from .checks import ERROR, INFO, WARNING

COLOURS = {ERROR: "#b00020", WARNING: "#b36b00", INFO: "#1f5fa8"}
MARKS = {ERROR: "✖", WARNING: "⚠", INFO: "ℹ"}


def esc(text) -> str:
    return html.escape(str(text), quote=False)


def label(name: str, fmt, style: str = "") -> QLabel:
    widget = QLabel()
    widget.setObjectName(name)
    widget.setWordWrap(True)
    widget.setTextFormat(fmt)
    widget.setStyleSheet(style)
    return widget


class StatusPanel(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.message_label = label("validation", Qt.RichText)
        self.message_label.setAlignment(Qt.AlignLeft | Qt.AlignTop)
        self.message_scroll = QScrollArea()
        self.message_scroll.setObjectName("validationScroll")
        self.message_scroll.setWidgetResizable(True)
        self.message_scroll.setFrameShape(QFrame.NoFrame)
        self.message_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.message_scroll.setWidget(self.message_label)
        self.message_scroll.setMaximumHeight(84)
        self.message_scroll.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Maximum)
        outer.addWidget(self.message_scroll)
        row = QHBoxLayout()
        self.estimate_label = label("estimate", Qt.PlainText)
        self.estimate_button = QPushButton("Estimate now")
        self.estimate_button.setToolTip("Time one real tile now (the estimate also updates by itself when the "
                                        "inputs change)")
        row.addWidget(self.estimate_label, 1)
        row.addWidget(self.estimate_button)
        outer.addLayout(row)
        self.device_label = label("deviceIndicator", Qt.RichText)
        outer.addWidget(self.device_label)
        buttons = QHBoxLayout()
        self.status_label = label("runStatus", Qt.PlainText)
        buttons.addWidget(self.status_label, 1)
        self.run_button = QPushButton("Run")
        self.run_button.setObjectName("runButton")
        self.run_button.setDefault(True)
        self.close_button = QPushButton("Close")
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.close_button)
        outer.addLayout(buttons)

    def show_messages(self, messages: List[Tuple[str, str]], fallback_width: int) -> None:
        if not messages:
            self.message_label.setText("<span style='color:#1b7e2b'>✔ Ready to run.</span>")
        else:
            self.message_label.setText("<br>".join(
                f"<span style='color:{COLOURS[level]}'>{MARKS[level]} {esc(text)}</span>"
                for level, text in messages))
        # as tall as the messages, at most ~4 lines (then it scrolls): the buttons stay on screen
        width = max(200, self.message_scroll.viewport().width() or fallback_width - 30)
        needed = self.message_label.heightForWidth(width)
        self.message_scroll.setFixedHeight(max(20, min(84, needed if needed > 0 else 20) + 2))

    def show_failure(self, exc) -> None:
        self.message_label.setText(f"<span style='color:{COLOURS[ERROR]}'>✖ {esc(exc)}</span>")

    def show_device(self, text: str, ok: bool) -> None:
        self.device_label.setText(("<b>Device:</b> " if ok else "✖ <b>Device:</b> ") + esc(text))
        self.device_label.setStyleSheet("" if ok else f"color: {COLOURS[ERROR]};")

    def show_tasks(self, running: int, last=None) -> None:
        text = f"{running} task(s) running — progress in the QGIS task bar." if running else ""
        if last is not None and not running:
            text = ("Last run: " + ("finished" if last.report is not None else
                                     "cancelled" if last.was_cancelled else f"failed — {last.error}"))
        self.status_label.setText(text)
