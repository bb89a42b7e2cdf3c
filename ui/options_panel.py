"""The "Options" box: each tool's options from the registry (shown for the current tool,
rows hidden or greyed by their ``when`` / ``enabled_when``), a line for each further output
(the cloud-probability map), then the options every tool shares (tile, overlap, device)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QFormLayout, QGroupBox, QLabel, QVBoxLayout, QWidget

from ..plugin.core import tools
from . import option_widgets


class OptionRows:
    """Rows of option widgets in a form layout, keyed by (tool key, option keyword)."""

    def __init__(self):
        self.rows: Dict[Tuple[str, str], Tuple[Optional[QLabel], QWidget, tools.Option]] = {}

    def add(self, form: QFormLayout, tool_key: str, option: tools.Option) -> QWidget:
        widget = option_widgets.make(option)
        if option.kind == tools.BOOL:
            label = None
            form.addRow(widget)
        else:
            label = QLabel(option.title or option.label)
            form.addRow(label, widget)
        self.rows[(tool_key, option.keyword)] = (label, widget, option)
        return widget

    def widget(self, tool_key: str, keyword: str) -> Optional[QWidget]:
        row = self.rows.get((tool_key, keyword))
        return row[1] if row else None

    def values(self, tool_key: str) -> Dict[str, Any]:
        return {keyword: option_widgets.value(widget, option)
                for (key, keyword), (_, widget, option) in self.rows.items() if key == tool_key}

    def show_for(self, tool_key: str, values: Dict[str, Any]) -> bool:
        """Show the rows of ``tool_key`` whose conditions hold; True when any is shown."""
        shown = False
        for (key, _), (label, widget, option) in self.rows.items():
            visible = key == tool_key and tools.holds(option.when, values)
            enabled = tools.holds(option.enabled_when, values)
            for part in (label, widget):
                if part is not None:
                    part.setVisible(visible)
                    part.setEnabled(enabled)
            shown = shown or visible
        return shown

    def items(self):
        return [(key, keyword, widget, option) for (key, keyword), (_, widget, option) in self.rows.items()]


class OptionsPanel(QGroupBox):
    def __init__(self, parent=None):
        super().__init__("Options", parent)
        outer = QVBoxLayout(self)
        self.rows = OptionRows()
        self.sections: Dict[str, QWidget] = {}
        self.notes: Dict[Tuple[str, str], QLabel] = {}
        for spec in tools.TOOLS:
            section = QWidget()
            form = QFormLayout(section)
            form.setContentsMargins(0, 0, 0, 0)
            for output in spec.outputs[1:]:
                if output.note:
                    note = QLabel()
                    note.setTextFormat(Qt.PlainText)
                    note.setObjectName(option_widgets.camel(output.keyword))
                    note.setWordWrap(True)
                    note.setStyleSheet("color: #444;")
                    form.addRow(note)
                    self.notes[(spec.key, output.keyword)] = note
            for option in spec.options:
                if option.in_dialog and option.section == "options":
                    self.rows.add(form, spec.key, option)
            outer.addWidget(section)
            self.sections[spec.key] = section
        common = QFormLayout()
        outer.addLayout(common)
        self.common = OptionRows()
        for option in tools.COMMON:
            if option.in_dialog:
                self.common.add(common, "", option)

    def values(self, tool_key: str) -> Dict[str, Any]:
        return {**self.rows.values(tool_key), **self.common.values("")}

    def show_for(self, tool_key: str, values: Dict[str, Any]) -> None:
        self.rows.show_for(tool_key, values)
        for key, section in self.sections.items():
            section.setVisible(key == tool_key and (
                any(k == key and w.isVisibleTo(section) for k, _, w, _ in self.rows.items())
                or any(k == key for k, _ in self.notes)))

    def set_notes(self, tool_key: str, notes: Dict[str, str]) -> None:
        for (key, keyword), label in self.notes.items():
            if key == tool_key:
                label.setText(notes.get(keyword, ""))

    def widgets(self) -> List[Tuple[str, str, QWidget, tools.Option]]:
        return self.rows.items() + self.common.items()
