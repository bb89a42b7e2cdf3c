"""The "Model" box: a model picker per registry model slot (the model, the diffusion-step
model) with the options that choose between them (the mode) in between."""
from __future__ import annotations

from typing import Any, Dict

from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import QFormLayout, QGroupBox, QLabel

from ..plugin.core import tools
from . import option_widgets
from .model_manager import ModelPicker
from .options_panel import OptionRows

CARD_HEIGHT = {"model": 120}          # the main model's card gets more room than the others'


class ModelPanel(QGroupBox):
    changed = pyqtSignal(str)         # the slot whose model changed

    def __init__(self, parent=None):
        super().__init__("Model", parent)
        form = QFormLayout(self)
        self.pickers: Dict[str, ModelPicker] = {}
        self.labels: Dict[str, QLabel] = {}
        self.rows = OptionRows()
        keywords = list(dict.fromkeys(slot.keyword for spec in tools.TOOLS for slot in spec.models))
        self._add_picker(form, keywords[0])
        for spec in tools.TOOLS:
            for option in spec.options:
                if option.in_dialog and option.section == "model":
                    self.rows.add(form, spec.key, option)
        for keyword in keywords[1:]:
            self._add_picker(form, keyword)

    def _add_picker(self, form: QFormLayout, keyword: str) -> None:
        first = next(spec for spec in tools.TOOLS if spec.slot(keyword) is not None)
        picker = ModelPicker(first.key, keyword)
        picker.card_view.setMaximumHeight(CARD_HEIGHT.get(keyword, 80))
        label = QLabel(first.slot(keyword).title)
        form.addRow(label, picker)
        picker.changed.connect(lambda keyword=keyword: self.changed.emit(keyword))
        self.pickers[keyword], self.labels[keyword] = picker, label

    def set_tool(self, spec: tools.ToolSpec) -> None:
        """Pickers of the tool's slots offer the models that fit it; the others keep theirs."""
        for keyword, picker in self.pickers.items():
            if spec.slot(keyword) is not None:
                picker.set_task(spec.key)
                self.labels[keyword].setText(spec.slot(keyword).title)

    def without_missing_models(self, spec: tools.ToolSpec) -> None:
        """A slot only some option values use (the diffusion-step model) with no model anywhere
        yet, while the main model is there: choose the option value that runs without it."""
        main = self.pickers[spec.models[0].keyword] if spec.models else None
        if main is None or main.current_path() is None:
            return
        for slot in spec.models[1:]:
            if slot.when and self.pickers[slot.keyword].current_path() is None:
                keyword, allowed = slot.when[0]
                widget, option = self.rows.widget(spec.key, keyword), spec.option(keyword)
                other = next((v for v in (option.choices or {}) if v not in allowed), None)
                if widget is not None and other is not None:
                    option_widgets.set_value(widget, option, other)

    def values(self, tool_key: str) -> Dict[str, Any]:
        return self.rows.values(tool_key)

    def show_for(self, spec: tools.ToolSpec, values: Dict[str, Any]) -> None:
        in_use = {slot.keyword for slot in spec.models_in_use(values)}
        shown = self.rows.show_for(spec.key, values)
        for keyword, picker in self.pickers.items():
            picker.setVisible(keyword in in_use)
            self.labels[keyword].setVisible(keyword in in_use)
        self.setVisible(bool(in_use) or shown)

    def paths(self) -> Dict[str, Any]:
        return {keyword: picker.current_path() for keyword, picker in self.pickers.items()}

    def refusals(self) -> Dict[str, Any]:
        return {keyword: picker.refusal for keyword, picker in self.pickers.items()}
