"""What the dialog keeps between sessions (QgsSettings under ``skyclear/``): the tool, every
option of every tool (by registry keyword), the models chosen per tool and slot, the last
layers and output folder."""
from __future__ import annotations

from qgis.core import QgsSettings

from ..plugin.core import tools
from . import option_widgets

S = "skyclear/"


def _key(tool_key: str, keyword: str) -> str:
    return S + (f"{tool_key}/{keyword}" if tool_key else keyword)


def save(dialog) -> None:
    s = QgsSettings()
    s.setValue(S + "task", dialog.task.key)
    for tool_key, keyword, widget, _ in dialog.option_widgets():
        s.setValue(_key(tool_key, keyword), option_widgets.raw(widget))
    for keyword, picker in dialog.models.pickers.items():
        if picker.current_path():
            s.setValue(saved_model_key(picker.task_key, keyword), picker.current_path())
    dialog.inputs.remember(s)
    dialog.outputs.remember(s)


def restore(dialog) -> None:
    s = QgsSettings()
    dialog.set_task(s.value(S + "task", tools.TOOLS[0].key))
    for tool_key, keyword, widget, option in dialog.option_widgets():
        try:
            option_widgets.set_value(widget, option, s.value(_key(tool_key, keyword), option.first_choice))
        except (TypeError, ValueError):
            option_widgets.set_value(widget, option, option.first_choice)
    dialog.add_to_map.setChecked(s.value(S + "add_to_map", True) in (True, "true", "1", 1))


def saved_model_key(tool_key: str, slot: str) -> str:
    return S + f"model/{tool_key}/{slot}"


def saved_model(tool_key: str, slot: str) -> str:
    return QgsSettings().value(saved_model_key(tool_key, slot), "") or ""
