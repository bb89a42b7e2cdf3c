"""One widget per registry option kind (``core/tools.py``): make it, read it, set it."""
from __future__ import annotations

from typing import Any

from qgis.PyQt.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QSpinBox, QWidget

from ..plugin.core import tools
from ..plugin.core.words import sentence

SUFFIX = {tools.BOOL: "check", tools.CHOICE: "combo"}    # everything else is a spin box


def camel(keyword: str) -> str:
    """keep_clear -> keepClear"""
    head, *rest = keyword.split("_")
    return head + "".join(p.capitalize() for p in rest)


def object_name(option: tools.Option) -> str:
    """keepClear, clearThreshold; choices get "Combo" (methodCombo)."""
    return camel(option.keyword) + ("Combo" if option.kind == tools.CHOICE else "")


def attribute(option: tools.Option) -> str:
    """The dialog attribute for the widget: steps_spin, keep_clear_check, method_combo."""
    return f"{option.keyword}_{SUFFIX.get(option.kind, 'spin')}"


def make(option: tools.Option) -> QWidget:
    kind = option.kind
    if kind == tools.BOOL:
        widget = QCheckBox(option.title or option.label)
    elif kind == tools.CHOICE:
        widget = QComboBox()
        for key, label in option.choices.items():
            widget.addItem(label, key)
    elif kind == tools.FLOAT:
        widget = QDoubleSpinBox()
        widget.setDecimals(2)
    else:
        widget = QSpinBox()
    if isinstance(widget, (QSpinBox, QDoubleSpinBox)):
        low = -1 if kind == tools.OVERLAP else 0
        widget.setRange(-1 if option.from_model else low if option.minimum is None else option.minimum,
                        2 ** 31 - 1 if option.maximum is None else option.maximum)
        if option.step:
            widget.setSingleStep(option.step)
        if kind in (tools.TILE, tools.OVERLAP):
            widget.setSpecialValueText("model default")
            widget.setSuffix(" px")
        elif option.from_model:
            widget.setSpecialValueText("model's value")
    widget.setObjectName(object_name(option))
    if option.help:
        widget.setToolTip(sentence(option.help))
    set_value(widget, option, option.first_choice)
    return widget


def value(widget: QWidget, option: tools.Option) -> Any:
    """The widget's value in the job's terms (None = the model's tile or overlap)."""
    kind = option.kind
    if kind == tools.BOOL:
        return widget.isChecked()
    if kind == tools.CHOICE:
        return widget.currentData()
    number = widget.value()
    if kind == tools.TILE:
        return number or None
    if kind == tools.OVERLAP or option.from_model:
        return None if number < 0 else number
    return number


def set_value(widget: QWidget, option: tools.Option, given: Any) -> None:
    kind = option.kind
    if kind == tools.BOOL:
        widget.setChecked(given in (True, "true", "1", 1))
    elif kind == tools.CHOICE:
        widget.setCurrentIndex(max(0, widget.findData(given)))
    elif kind == tools.TILE:
        widget.setValue(int(given or 0))
    elif kind == tools.OVERLAP or (option.from_model and given is None):
        widget.setValue(-1 if given is None else int(given))
    elif given is not None:
        widget.setValue(float(given) if kind == tools.FLOAT else int(given))


def changed(widget: QWidget):
    """The widget's "value changed" signal."""
    if isinstance(widget, QCheckBox):
        return widget.toggled
    if isinstance(widget, QComboBox):
        return widget.currentIndexChanged
    return widget.valueChanged


def raw(widget: QWidget) -> Any:
    """What the settings keep: the widget's own value (set_value reads it back)."""
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    if isinstance(widget, QComboBox):
        return widget.currentData()
    return widget.value()
