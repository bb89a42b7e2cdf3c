"""Model picker: the bundled zoo plus custom .onnx files, with the model card shown and
models whose card does not fit the task refused with a clear message."""
from __future__ import annotations

import os
from typing import List, Optional

from qgis.core import QgsSettings
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import (QComboBox, QFileDialog, QFrame, QHBoxLayout, QLabel, QPushButton,
                                 QSizePolicy, QTextBrowser, QVBoxLayout, QWidget)

from ..plugin.core import tools
from . import checks, logic

SETTINGS_CUSTOM = "skyclear/custom_models"


def custom_models() -> List[str]:
    value = QgsSettings().value(SETTINGS_CUSTOM, [])
    if isinstance(value, str):
        value = [value] if value else []
    return [p for p in (value or []) if p and os.path.isfile(p)]


def remember_custom(path: str) -> None:
    paths = [p for p in custom_models() if os.path.abspath(p) != os.path.abspath(path)]
    QgsSettings().setValue(SETTINGS_CUSTOM, [os.path.abspath(path)] + paths[:19])


class ModelPicker(QWidget):
    """Combo of fitting models (bundled first), "Add .onnx…" button and the card of the choice."""

    changed = pyqtSignal()

    def __init__(self, task_key: str, slot: str = "model", zoo_dir: Optional[str] = None, parent=None):
        super().__init__(parent)
        self.task_key = task_key
        self.slot = slot                         # the registry's model slot: "model", "step_model"
        self.zoo_dir = zoo_dir
        self.refusal: Optional[str] = None
        self.combo = QComboBox()
        self.combo.setObjectName("modelCombo" + ("" if slot == "model" else "Step"))
        self.combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(24)
        self.browse = QPushButton("Add .onnx…")
        self.browse.setToolTip("Use your own ONNX model that carries a SkyClear model card")
        self.card_view = QTextBrowser()          # the model card, scrollable when long
        self.card_view.setObjectName("modelCard")
        self.card_view.setFrameShape(QFrame.StyledPanel)
        self.card_view.setOpenLinks(False)
        self.card_view.setMaximumHeight(150)
        self.card_view.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Minimum)
        self.message = QLabel()
        self.message.setObjectName("modelMessage")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #b00020;")
        self.message.hide()
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.combo, 1)
        row.addWidget(self.browse)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.message)
        layout.addWidget(self.card_view)
        self.combo.currentIndexChanged.connect(self._on_changed)
        self.browse.clicked.connect(self._browse)
        self.refresh()

    # -- content -------------------------------------------------------------------------
    def set_task(self, task_key: str) -> None:
        if task_key != self.task_key:
            self.task_key = task_key
            self.refusal = None
            self.message.hide()
            self.refresh()

    def refresh(self, select: Optional[str] = None) -> None:
        select = select or self.current_path()
        self.combo.blockSignals(True)
        self.combo.clear()
        for path, card in logic.zoo_for_task(self.task_key, zoo_dir=self.zoo_dir, slot=self.slot):
            self.combo.addItem(f"{card.name} {card.version} (bundled)", path)
        zoo = {os.path.abspath(self.combo.itemData(i)) for i in range(self.combo.count())}
        for path in custom_models():
            if os.path.abspath(path) in zoo:
                continue
            card, _ = logic.load_card(path)
            if card is not None and self._refusal_of(card) is None:
                self.combo.addItem(f"{card.name} {card.version} — {os.path.basename(path)}", path)
        if self.combo.count() == 0:
            self.combo.addItem("(no model for this task yet — add an .onnx)", None)
        index = 0
        if select:
            for i in range(self.combo.count()):
                data = self.combo.itemData(i)
                if data and os.path.abspath(data) == os.path.abspath(select):
                    index = i
        self.combo.setCurrentIndex(index)
        self.combo.blockSignals(False)
        self._on_changed()

    def current_path(self) -> Optional[str]:
        if not hasattr(self, "combo") or self.combo.count() == 0:
            return None
        return self.combo.currentData()

    def card(self):
        path = self.current_path()
        if not path:
            return None
        card, _ = logic.load_card(path)
        return card

    def problem(self) -> Optional[str]:
        """Why no usable model is selected (None when one is): the controller's check."""
        spec = tools.tool(self.task_key)
        return checks.slot_problem(spec, spec.slot(self.slot), self.current_path())

    def _refusal_of(self, card) -> Optional[str]:
        return tools.card_problem(tools.tool(self.task_key), card, self.slot)

    # -- user actions ------------------------------------------------------------------------
    def add_model(self, path: str) -> bool:
        """Add a custom model; refuse it (message shown, nothing selected) when it does not fit."""
        card, error = logic.load_card(path)
        if card is None:
            self._refuse(f"Cannot use {os.path.basename(path)}: {error}")
            return False
        refusal = self._refusal_of(card)
        if refusal:
            self._refuse(refusal)
            return False
        self.refusal = None
        self.message.hide()
        remember_custom(path)
        self.refresh(select=path)
        return True

    def _refuse(self, text: str) -> None:
        self.refusal = text
        self.message.setText("✖ " + text)
        self.message.show()

    def _browse(self) -> None:
        start = os.path.dirname(custom_models()[0]) if custom_models() else os.path.expanduser("~")
        path, _ = QFileDialog.getOpenFileName(self, "Choose an ONNX model with a SkyClear card", start,
                                              "ONNX models (*.onnx)")
        if path:
            self.add_model(path)

    def _on_changed(self, *_args) -> None:
        path = self.current_path()
        if path:
            card, error = logic.load_card(path)
            try:
                text = logic.card_summary_html(card, path) if card else f"✖ {error}"
            except Exception as exc:  # an odd card must never break the dialog
                text = f"{card.name}: card could not be shown ({exc})"
            self.card_view.setHtml(text)
        else:
            self.card_view.setHtml("No model selected.")
        self.changed.emit()
