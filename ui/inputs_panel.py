"""The "Inputs" box: a layer per role of the tool (optical, SAR) with what the tool expects,
the band table and the value-scaling opt-in; layers are preselected by how well they fit
the model (``layer_choice``), and the user's own pick is kept per tool."""
from __future__ import annotations

import os
from typing import Callable, Dict

from qgis.core import QgsMapLayerProxyModel, QgsProject, QgsRasterLayer, QgsSettings
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import QCheckBox, QFormLayout, QGroupBox, QLabel

from ..plugin.core import tools
from . import layer_choice
from .band_table import BandTable
from .layer_info import layer_info, layer_path

S = "skyclear/"
ROLES = ("optical", "sar")


class InputsPanel(QGroupBox):
    layer_changed = pyqtSignal(str)        # a role's layer changed (not by the preselection)

    def __init__(self, expectation: Callable, range_check: Callable, parent=None):
        """``expectation(role)``: what the model (or tool) wants (``layer_choice.Expectation``
        or None); ``range_check(info, role)``: the core's sampled value-range check or None."""
        super().__init__("Inputs", parent)
        self.expectation, self.range_check = expectation, range_check
        form = QFormLayout(self)
        self.combos: Dict[str, QgsMapLayerComboBox] = {}
        self.labels: Dict[str, QLabel] = {}
        self.hints: Dict[str, QLabel] = {}
        for role, name, title in (("optical", "opticalLayer", "Optical"), ("sar", "sarLayer", "SAR")):
            combo = QgsMapLayerComboBox()
            combo.setObjectName(name)
            combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
            combo.setAllowEmptyLayer(role == "sar")
            hint = QLabel()
            hint.setTextFormat(Qt.PlainText)
            hint.setStyleSheet("color: gray;")
            self.labels[role] = QLabel(title)
            form.addRow(self.labels[role], combo)
            form.addRow("", hint)
            self.combos[role], self.hints[role] = combo, hint
            combo.layerChanged.connect(lambda *_, role=role: self._on_layer_changed(role))
            # only a choice made by the user (not the combo's own pick of a new layer) is kept, per tool
            combo.activated.connect(lambda *_, role=role: self.user_chose(role))
        self.bands = BandTable()
        form.addRow(self.bands)
        self.rescale_check = QCheckBox("Scale the input values to the model's range (they do not fit it)")
        self.rescale_check.setObjectName("rescaleValues")
        self.rescale_check.setToolTip("Multiplies the input values so that they fill the range the model was "
                                      "trained on; the result comes back in the input's units.")
        self.rescale_check.hide()
        form.addRow(self.rescale_check)
        self.tool: tools.ToolSpec = tools.TOOLS[0]
        self.loading = True
        self.excluded = set()                       # SkyClear outputs: never preselected as inputs
        self._auto = {role: True for role in ROLES}
        self._previous: Dict[str, object] = {}
        self._chosen: Dict[str, Dict[str, str]] = {}  # tool key -> role -> layer id the user picked
        self._preselecting = False

    def set_tool(self, spec: tools.ToolSpec) -> None:
        self.tool = spec
        for role in ROLES:
            item = spec.input(role)
            hint = (f"expects: {item.hint}" if item and item.hint else
                    "optional: only for models with a SAR input" if item and not item.required else "")
            self.hints[role].setText(hint)
            for widget in (self.labels[role], self.combos[role], self.hints[role]):
                widget.setVisible(item is not None)

    def layer(self, role: str):
        return self.combos[role].currentLayer() if self.tool.input(role) is not None else None

    # -- choices -------------------------------------------------------------------------------
    def user_chose(self, role: str) -> None:
        """The user picked a layer for ``role``: keep it for this tool, even across tool switches."""
        self._auto[role] = False
        layer = self.combos[role].currentLayer()
        choices = self._chosen.setdefault(self.tool.key, {})
        if layer is None:
            choices.pop(role, None)
        else:
            choices[role] = layer.id()

    def restore_choices(self) -> None:
        """On a tool switch: the layers the user chose for this tool before, else the best fits."""
        choices = self._chosen.get(self.tool.key, {})
        layers = QgsProject.instance().mapLayers()
        self._preselecting = True
        try:
            for role, combo in self.combos.items():
                layer = layers.get(choices.get(role, ""))
                self._auto[role] = layer is None
                if layer is not None:
                    combo.setLayer(layer)
        finally:
            self._preselecting = False
        self.preselect()

    def _on_layer_changed(self, role: str) -> None:
        previous = self._previous.get(role)
        self._previous[role] = self.combos[role].currentLayer()
        if self.loading or self._preselecting:
            return
        if previous is not None:   # not the combo's own pick of a first layer: the user chose
            self.user_chose(role)
        self.layer_changed.emit(role)

    def preselect(self, only_if_better: bool = False) -> None:
        """Pick the most plausible layer for each role the user has not chosen himself.
        ``only_if_better`` (layers were added): change a choice only for a strictly more
        plausible layer, and never pick a SkyClear result as an input."""
        outputs = {os.path.abspath(p) for p in self.excluded}
        layers = [l for l in QgsProject.instance().mapLayers().values()
                  if isinstance(l, QgsRasterLayer) and os.path.abspath(layer_path(l) or "/-") not in outputs]
        if not layers:
            return
        infos = {l.id(): layer_info(l) for l in layers}
        by_id = {l.id(): l for l in layers}
        self._preselecting = True
        try:
            for role, combo in self.combos.items():
                item = self.tool.input(role)
                current = combo.currentLayer()
                if item is None or (role == "sar" and not item.required):
                    continue
                if not self._auto.get(role, True) and current is not None:
                    continue
                expectation = self.expectation(role)
                if expectation is None:
                    continue
                other = self.combos["optical"].currentLayer() if role == "sar" else None
                exclude = [other.id()] if other else []
                last = QgsSettings().value(S + f"last_{role}", "")
                first = layer_choice.rank(infos, expectation, exclude=exclude, last_path=last)
                # the sampled value range decides between layers that fit equally well otherwise
                top = [layer_id for value, layer_id in first if value >= first[0][0] - 2][:4]
                checks = {layer_id: self.range_check(infos[layer_id], role) for layer_id in top}
                ranked = layer_choice.rank({k: infos[k] for k in top}, expectation, exclude=exclude,
                                           last_path=last, range_checks=checks)
                best_score, best_id = ranked[0]
                if only_if_better and current is not None and current.id() in infos:
                    current_score = dict((k, v) for v, k in ranked).get(current.id())
                    if current_score is None:        # not even among the close contenders
                        current_score = dict((k, v) for v, k in first).get(current.id(), best_score)
                        best_score = first[0][0]
                    if best_score <= current_score:
                        continue
                combo.setLayer(by_id[best_id])
        finally:
            self._preselecting = False

    def info(self, role: str):
        layer = self.layer(role)
        return layer_info(layer) if layer is not None else None

    def remember(self, settings: QgsSettings) -> None:
        for role in ROLES:
            if self.layer(role) is not None:
                settings.setValue(S + f"last_{role}", layer_path(self.layer(role)))
