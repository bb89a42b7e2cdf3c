"""The SkyClear dialog: choose a task, inputs, model and options, then run it in the background."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Dict, List, Optional, Tuple

import html
import tempfile
import threading

from qgis.core import (Qgis, QgsCoordinateTransform, QgsMapLayerProxyModel, QgsProject,
                       QgsRasterLayer, QgsRectangle, QgsSettings)
from qgis.gui import QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QRect, Qt, QTimer
from qgis.PyQt.QtWidgets import (QAbstractItemView, QApplication, QCheckBox, QComboBox, QDialog,
                                 QDoubleSpinBox, QFormLayout, QFrame, QGridLayout, QGroupBox, QHBoxLayout,
                                 QHeaderView, QLabel, QPushButton, QScrollArea, QSizePolicy, QSpinBox,
                                 QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)

from ..plugin.core import bands as core_bands
from ..plugin.core.raster_io import boxes_overlap
from . import layer_choice, logic
from .dependencies_panel import DependenciesPanel
from .extent_box import ExtentBox
from .model_manager import ModelPicker

S = "skyclear/"
PREFERRED_SIZE = (1180, 900)
MINIMUM_SIZE = (760, 520)
ERROR, WARNING, INFO = "error", "warning", "info"
_COLOURS = {ERROR: "#b00020", WARNING: "#b36b00", INFO: "#1f5fa8"}
_MARKS = {ERROR: "✖", WARNING: "⚠", INFO: "ℹ"}
_DESCRIBE_CACHE: Dict[Tuple[str, float], dict] = {}
_GPU_NAME: Optional[str] = None


def layer_path(layer) -> str:
    return layer.source().split("|")[0] if layer is not None else ""


def layer_info(layer: QgsRasterLayer) -> logic.LayerInfo:
    """Band count, dtype and band descriptions (read with rasterio, cached by mtime)."""
    path = layer_path(layer)
    info = None
    try:
        key = (path, os.path.getmtime(path))
        info = _DESCRIBE_CACHE.get(key)
        if info is None:
            from ..plugin.core.raster_io import describe_raster

            info = _DESCRIBE_CACHE[key] = describe_raster(path)
    except Exception:
        info = None
    count = layer.bandCount()
    if info:
        is_float = str(info["dtype"]).startswith("float")
        descriptions = [d or "" for d in info["descriptions"]]
    else:
        dtype = layer.dataProvider().dataType(1) if count else Qgis.UnknownDataType
        is_float = dtype in (Qgis.Float32, Qgis.Float64)
        descriptions = [""] * count
    crs = layer.crs().authid() if layer.crs().isValid() else ""
    e = layer.extent()
    return logic.LayerInfo(layer.name(), path, count, is_float, descriptions, crs,
                           (e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()),
                           layer.width(), layer.height(), str(info["dtype"]) if info else "")


def gpu_name() -> str:
    """CUDA device name from nvidia-smi (cached), '' when unknown."""
    global _GPU_NAME
    if _GPU_NAME is None:
        _GPU_NAME = ""
        exe = shutil.which("nvidia-smi")
        if exe:
            try:
                out = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=3)
                _GPU_NAME = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
            except Exception:
                _GPU_NAME = ""
    return _GPU_NAME


def device_text(device: str) -> Tuple[str, bool]:
    """(indicator text, ok) for the chosen device."""
    try:
        from ..plugin.core.runtime import gpu_status

        available, reason = gpu_status()
    except Exception as exc:  # onnxruntime broken
        return f"No runtime: {exc}", False
    if available and device in ("auto", "gpu"):
        name = gpu_name()
        return f"Runs on GPU: CUDAExecutionProvider{' — ' + name if name else ''}", True
    if device == "gpu":
        return f"GPU requested but not available: {reason}", False
    why = "" if device == "cpu" and available else f" (GPU not available: {reason})"
    return f"Runs on CPU: CPUExecutionProvider{why}", True


class SkyClearDialog(QDialog):
    def __init__(self, iface=None, parent=None):
        super().__init__(parent)
        self.iface = iface
        self.setObjectName("SkyClearDialog")
        self.setWindowTitle("SkyClear — cloud removal and SAR–optical fusion")
        self.tasks: List = []
        self.messages: List[Tuple[str, str]] = []
        self._measured: Dict[tuple, float] = {}
        self._loading = True
        self._auto_layer = {"optical": True, "sar": True}
        self._previous_layer = {}
        self._chosen: Dict[str, Dict[str, str]] = {}     # task -> role -> layer id the user picked
        self._output_paths = set()
        self._range_cache: Dict[tuple, object] = {}
        self.last_estimate = None
        self.estimate_error: Optional[str] = None
        self._estimate_generation = 0
        self._estimate_job: Optional[dict] = None
        self._revalidate = QTimer(self)
        self._revalidate.setSingleShot(True)
        self._revalidate.setInterval(150)
        self._revalidate.timeout.connect(self._safe_validate)
        # the automatic estimate: one real tile through the engine, in the background,
        # started when the inputs stayed unchanged for a moment
        self._auto_estimate = QTimer(self)
        self._auto_estimate.setSingleShot(True)
        self._auto_estimate.setInterval(700)
        self._auto_estimate.timeout.connect(self._start_estimate)
        self._estimate_poll = QTimer(self)
        self._estimate_poll.setInterval(100)
        self._estimate_poll.timeout.connect(self._poll_estimate)
        self._build()
        self._restore_settings()
        self._loading = False
        self._on_task_changed()
        self.setMinimumSize(MINIMUM_SIZE[0], MINIMUM_SIZE[1])
        self.fit_to_screen()

    # ------------------------------------------------------------------------------------
    # construction
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        head = QHBoxLayout()
        head.addWidget(QLabel("<b>Task</b>"))
        self.task_combo = QComboBox()
        self.task_combo.setObjectName("taskCombo")
        for spec in logic.TASKS:
            self.task_combo.addItem(spec.title, spec.key)
        head.addWidget(self.task_combo, 1)
        self.availability = QLabel()
        self.availability.setObjectName("availability")
        self.availability.setWordWrap(True)
        head.addWidget(self.availability, 2)
        outer.addLayout(head)
        self.task_description = QLabel()
        self.task_description.setWordWrap(True)
        self.task_description.setTextFormat(Qt.PlainText)
        self.task_description.setStyleSheet("color: #444;")
        outer.addWidget(self.task_description)

        self.tabs = QTabWidget()
        self.tabs.setObjectName("tabs")
        outer.addWidget(self.tabs, 1)
        run_page = QWidget()
        grid = QGridLayout(run_page)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        left, right = QVBoxLayout(), QVBoxLayout()
        grid.addLayout(left, 0, 0)
        grid.addLayout(right, 0, 1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setWidget(run_page)
        self.tabs.addTab(scroll, "Run")
        self.dependencies = DependenciesPanel()
        self.tabs.addTab(self.dependencies, "Dependencies")

        # inputs
        inputs = QGroupBox("Inputs")
        form = QFormLayout(inputs)
        self.optical_combo = QgsMapLayerComboBox()
        self.optical_combo.setObjectName("opticalLayer")
        self.optical_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.optical_label = QLabel("Optical")
        form.addRow(self.optical_label, self.optical_combo)
        self.optical_hint = QLabel()
        self.optical_hint.setTextFormat(Qt.PlainText)
        self.optical_hint.setStyleSheet("color: gray;")
        form.addRow("", self.optical_hint)
        self.sar_combo = QgsMapLayerComboBox()
        self.sar_combo.setObjectName("sarLayer")
        self.sar_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.sar_combo.setAllowEmptyLayer(True)
        self.sar_label = QLabel("SAR")
        form.addRow(self.sar_label, self.sar_combo)
        self.sar_hint = QLabel()
        self.sar_hint.setTextFormat(Qt.PlainText)
        self.sar_hint.setStyleSheet("color: gray;")
        form.addRow("", self.sar_hint)
        self.band_note = QLabel()
        self.band_note.setTextFormat(Qt.PlainText)
        self.band_note.setWordWrap(True)
        self.band_note.setStyleSheet("color: #444;")
        self.band_toggle = QPushButton("Edit…")
        self.band_toggle.setObjectName("bandToggle")
        self.band_toggle.setCheckable(True)
        self.band_toggle.setToolTip("Show the band table: which raster band feeds each model band")
        self.band_toggle.toggled.connect(self._show_band_table)
        self.band_toggle.clicked.connect(lambda *_: setattr(self, "_band_auto_open", False))
        band_row = QHBoxLayout()
        band_row.addWidget(self.band_note, 1)
        band_row.addWidget(self.band_toggle, 0, Qt.AlignTop)
        form.addRow(band_row)
        self.band_table = QTableWidget(0, 3)
        self.band_table.setObjectName("bandTable")
        self.band_table.setHorizontalHeaderLabels(["Input", "Model band", "Raster band"])
        self.band_table.verticalHeader().setVisible(False)
        self.band_table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.band_table.setSelectionMode(QAbstractItemView.NoSelection)
        form.addRow(self.band_table)
        self.rescale_check = QCheckBox("Scale the input values to the model's range (they do not fit it)")
        self.rescale_check.setObjectName("rescaleValues")
        self.rescale_check.setToolTip("Multiplies the input values so that they fill the range the model was "
                                      "trained on; the result comes back in the input's units.")
        self.rescale_check.hide()
        form.addRow(self.rescale_check)
        left.addWidget(inputs)

        # model
        self.model_group = QGroupBox("Model")
        model_form = QFormLayout(self.model_group)
        self.model_picker = ModelPicker("custom")
        self.model_label = QLabel("Model")
        model_form.addRow(self.model_label, self.model_picker)
        self.mode_combo = QComboBox()
        self.mode_combo.setObjectName("modeCombo")
        for key, label in logic.OPTICAL_MODES:
            self.mode_combo.addItem(label, key)
        self.mode_label = QLabel("Mode")
        model_form.addRow(self.mode_label, self.mode_combo)
        self.step_picker = ModelPicker("optical_cloud_removal", step=True)
        self.step_label = QLabel("Diffusion step model")
        model_form.addRow(self.step_label, self.step_picker)
        self.model_picker.card_view.setMaximumHeight(120)
        self.step_picker.card_view.setMaximumHeight(80)
        right.addWidget(self.model_group)

        # options
        options = QGroupBox("Options")
        opt_outer = QVBoxLayout(options)

        def section():
            widget = QWidget()
            form_ = QFormLayout(widget)
            form_.setContentsMargins(0, 0, 0, 0)
            opt_outer.addWidget(widget)
            return widget, form_

        self.fusion_options, fusion_form = section()
        self.diffusion_options, diffusion_form = section()
        self.sarcr_options, sarcr_form = section()
        opt = QFormLayout()
        opt_outer.addLayout(opt)
        self.method_combo = QComboBox()
        self.method_combo.setObjectName("methodCombo")
        for key, label in logic.FUSION_METHODS:
            self.method_combo.addItem(label, key)
        self.method_label = QLabel("Fusion method")
        fusion_form.addRow(self.method_label, self.method_combo)
        self.despeckle_check = QCheckBox("Despeckle the SAR first (Lee filter)")
        self.despeckle_check.setObjectName("despeckle")
        fusion_form.addRow(self.despeckle_check)
        self.steps_spin = QSpinBox()
        self.steps_spin.setObjectName("steps")
        self.steps_spin.setRange(1, 1000)
        self.steps_spin.setValue(10)
        self.steps_spin.setToolTip("Number of DDIM sampling steps: more is slower, slightly sharper")
        self.steps_label = QLabel("Diffusion steps")
        diffusion_form.addRow(self.steps_label, self.steps_spin)
        self.eta_spin = QDoubleSpinBox()
        self.eta_spin.setObjectName("eta")
        self.eta_spin.setRange(0.0, 1.0)
        self.eta_spin.setSingleStep(0.05)
        self.eta_spin.setDecimals(2)
        self.eta_spin.setValue(0.3)
        self.eta_spin.setToolTip("η: lower clamp of the weight given to the reference network (paper: 0.3)")
        self.eta_label = QLabel("η (reference weight floor)")
        diffusion_form.addRow(self.eta_label, self.eta_spin)
        self.seed_spin = QSpinBox()
        self.seed_spin.setObjectName("seed")
        self.seed_spin.setRange(0, 2 ** 31 - 1)
        self.seed_label = QLabel("Seed")
        diffusion_form.addRow(self.seed_label, self.seed_spin)
        self.cloudprob_note = QLabel()
        self.cloudprob_note.setTextFormat(Qt.PlainText)
        self.cloudprob_note.setObjectName("cloudProbability")
        self.cloudprob_note.setWordWrap(True)
        self.cloudprob_note.setStyleSheet("color: #444;")
        sarcr_form.addRow(self.cloudprob_note)
        self.keep_clear_check = QCheckBox("Keep clear input pixels unchanged")
        self.keep_clear_check.setObjectName("keepClear")
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setObjectName("clearThreshold")
        self.threshold_spin.setRange(0.0, 1.0)
        self.threshold_spin.setSingleStep(0.05)
        self.threshold_spin.setValue(0.5)
        self.threshold_label = QLabel("Clear-sky threshold")
        sarcr_form.addRow(self.keep_clear_check)
        sarcr_form.addRow(self.threshold_label, self.threshold_spin)
        self.tile_spin = QSpinBox()
        self.tile_spin.setObjectName("tileSize")
        self.tile_spin.setRange(0, 8192)
        self.tile_spin.setSingleStep(64)
        self.tile_spin.setSpecialValueText("model default")
        self.tile_spin.setSuffix(" px")
        opt.addRow("Tile size", self.tile_spin)
        self.overlap_spin = QSpinBox()
        self.overlap_spin.setObjectName("overlap")
        self.overlap_spin.setRange(-1, 4096)
        self.overlap_spin.setSingleStep(8)
        self.overlap_spin.setValue(-1)
        self.overlap_spin.setSpecialValueText("model default")
        self.overlap_spin.setSuffix(" px")
        opt.addRow("Overlap", self.overlap_spin)
        self.device_combo = QComboBox()
        self.device_combo.setObjectName("deviceCombo")
        for key, label in logic.DEVICES:
            self.device_combo.addItem(label, key)
        opt.addRow("Device", self.device_combo)
        left.addWidget(options)

        # extent and output
        self.extent_box = ExtentBox()
        self.extent_box.setObjectName("extentBox")
        # "Draw on canvas" hides the dialog while the user drags a rectangle on the map
        self.extent_box.toggleDialogVisibility.connect(self.setVisible)
        if self.iface is not None:
            try:
                self.extent_box.setMapCanvas(self.iface.mapCanvas())
            except Exception:
                pass
        grid.addWidget(self.extent_box, 1, 0, 1, 2)
        grid.setRowStretch(2, 1)
        out = QGroupBox("Output")
        out_form = QFormLayout(out)
        self.output_widget = QgsFileWidget()
        self.output_widget.setObjectName("outputFile")
        self.output_widget.setStorageMode(QgsFileWidget.SaveFile)
        self.output_widget.setFilter("GeoTIFF (*.tif *.tiff)")
        self.output_widget.setDialogTitle("Output GeoTIFF")
        out_form.addRow("GeoTIFF", self.output_widget)
        self.add_to_map = QCheckBox("Add the results to the map")
        self.add_to_map.setObjectName("addToMap")
        self.add_to_map.setChecked(True)
        out_form.addRow(self.add_to_map)
        right.addWidget(out)
        left.addStretch(1)
        right.addStretch(1)

        # status area: messages scroll inside a bounded box so that the buttons stay on screen
        self.message_label = QLabel()
        self.message_label.setObjectName("validation")
        self.message_label.setWordWrap(True)
        self.message_label.setTextFormat(Qt.RichText)
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
        est = QHBoxLayout()
        self.estimate_label = QLabel()
        self.estimate_label.setObjectName("estimate")
        self.estimate_label.setWordWrap(True)
        self.estimate_label.setTextFormat(Qt.PlainText)
        self.estimate_button = QPushButton("Estimate now")
        self.estimate_button.setToolTip("Time one real tile now (the estimate also updates by itself when the "
                                        "inputs change)")
        est.addWidget(self.estimate_label, 1)
        est.addWidget(self.estimate_button)
        outer.addLayout(est)
        self.device_label = QLabel()
        self.device_label.setObjectName("deviceIndicator")
        self.device_label.setWordWrap(True)
        self.device_label.setTextFormat(Qt.RichText)
        outer.addWidget(self.device_label)
        buttons = QHBoxLayout()
        self.status_label = QLabel()
        self.status_label.setObjectName("runStatus")
        self.status_label.setTextFormat(Qt.PlainText)
        self.status_label.setWordWrap(True)
        buttons.addWidget(self.status_label, 1)
        self.run_button = QPushButton("Run")
        self.run_button.setObjectName("runButton")
        self.run_button.setDefault(True)
        self.close_button = QPushButton("Close")
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.close_button)
        outer.addLayout(buttons)

        # signals
        self.task_combo.currentIndexChanged.connect(self._on_task_changed)
        self.optical_combo.layerChanged.connect(lambda *_: self._on_layer_changed("optical"))
        self.sar_combo.layerChanged.connect(lambda *_: self._on_layer_changed("sar"))
        # only a choice made by the user (not the combo's own pick of a new layer) is kept, per task
        self.optical_combo.activated.connect(lambda *_: self._user_chose("optical"))
        self.sar_combo.activated.connect(lambda *_: self._user_chose("sar"))
        self.rescale_check.toggled.connect(self.schedule_validate)
        self.model_picker.changed.connect(self._on_model_changed)
        self.step_picker.changed.connect(self.schedule_validate)
        self.mode_combo.currentIndexChanged.connect(self._update_visibility)
        self.method_combo.currentIndexChanged.connect(self._update_visibility)
        self.keep_clear_check.toggled.connect(self._update_visibility)
        self.device_combo.currentIndexChanged.connect(self.schedule_validate)
        for spin in (self.tile_spin, self.overlap_spin, self.steps_spin, self.eta_spin):
            spin.valueChanged.connect(self.schedule_validate)
        self.despeckle_check.toggled.connect(self.schedule_validate)
        self.extent_box.extentChanged.connect(self.schedule_validate)
        self.extent_box.toggled.connect(self.schedule_validate)
        self.output_widget.fileChanged.connect(self.schedule_validate)
        self.estimate_button.clicked.connect(self.measure)
        self.run_button.clicked.connect(self.run)
        self.close_button.clicked.connect(self.close)
        QgsProject.instance().layersAdded.connect(self._on_project_layers)

    # ------------------------------------------------------------------------------------
    # state
    @property
    def task(self) -> logic.TaskSpec:
        return logic.TASKS_BY_KEY[self.task_combo.currentData() or "custom"]

    def set_task(self, key: str) -> None:
        index = self.task_combo.findData(key)
        if index >= 0:
            self.task_combo.setCurrentIndex(index)

    def device(self) -> str:
        return self.device_combo.currentData() or "auto"

    def optical_layer(self):
        return self.optical_combo.currentLayer()

    def sar_layer(self):
        return self.sar_combo.currentLayer() if self._sar_used() else None

    def _sar_used(self) -> bool:
        return self.task.needs_sar or self.task.sar_optional

    def _needs_model(self) -> bool:
        return not (self.task.key == "fusion" and self.method_combo.currentData() != "network")

    def _uses_step_model(self) -> bool:
        return self.task.key == "optical_cloud_removal" and self.mode_combo.currentData() == "diffusion"

    def schedule_validate(self, *_args) -> None:
        if not self._loading and hasattr(self, "_revalidate"):
            self._revalidate.start()

    # ------------------------------------------------------------------------------------
    # reactions
    def _on_task_changed(self, *_args) -> None:
        if self._loading:
            return
        spec = self.task
        self.task_description.setText(spec.description)
        from ..plugin.tasks import job_available

        ok, reason = job_available(spec.function)
        self.availability.setText("" if ok else f"<span style='color:#b36b00'>ℹ {_esc(reason or 'pipeline missing')}</span>")
        self.model_picker.set_task(spec.key)
        saved = QgsSettings().value(S + f"model/{spec.key}", "")
        if saved:
            self.model_picker.refresh(select=saved)
        self.step_picker.set_task(spec.key if spec.key == "optical_cloud_removal" else "optical_cloud_removal")
        if spec.key == "optical_cloud_removal" and self.step_picker.current_path() is None \
                and self.model_picker.current_path() is not None:
            # no diffusion-step model anywhere yet: the reference network alone still runs
            self.mode_combo.setCurrentIndex(self.mode_combo.findData("reference"))
        self.optical_hint.setText(f"expects: {spec.optical_hint}" if spec.optical_hint else "")
        self.sar_hint.setText(f"expects: {spec.sar_hint}" if spec.sar_hint
                              else "optional: only for models with a SAR input" if spec.sar_optional else "")
        self._restore_choices()
        self._update_visibility()
        self._suggest_output()
        self._fill_band_table()
        self.validate()

    def _update_visibility(self, *_args) -> None:
        key = self.task.key
        show = {
            "sar": self._sar_used(),
            "mode": key == "optical_cloud_removal",
            "step": self._uses_step_model(),
            "diffusion": self._uses_step_model(),
            "fusion": key == "fusion",
            "sarcr": key == "sar_cloud_removal",
            "model": self._needs_model(),
        }
        for widget in (self.sar_label, self.sar_combo, self.sar_hint):
            widget.setVisible(show["sar"])
        for widget in (self.mode_label, self.mode_combo):
            widget.setVisible(show["mode"])
        for widget in (self.step_label, self.step_picker):
            widget.setVisible(show["step"])
        self.diffusion_options.setVisible(show["diffusion"])
        self.fusion_options.setVisible(show["fusion"])
        self.sarcr_options.setVisible(show["sarcr"])
        for widget in (self.threshold_label, self.threshold_spin):
            widget.setEnabled(self.keep_clear_check.isChecked())
        for widget in (self.model_label, self.model_picker):
            widget.setVisible(show["model"])
        self.model_group.setVisible(show["model"] or show["mode"])
        self.sar_combo.setAllowEmptyLayer(True)
        self._fill_band_table()
        self.schedule_validate()

    def _user_chose(self, role: str) -> None:
        """The user picked a layer for ``role``: keep it for this task, even across task switches."""
        combo = self.optical_combo if role == "optical" else self.sar_combo
        self._auto_layer[role] = False
        layer = combo.currentLayer()
        choices = self._chosen.setdefault(self.task.key, {})
        if layer is None:
            choices.pop(role, None)
        else:
            choices[role] = layer.id()

    def _restore_choices(self) -> None:
        """On a task switch: the layers the user chose for this task before, else the best fits."""
        choices = self._chosen.get(self.task.key, {})
        layers = QgsProject.instance().mapLayers()
        self._preselecting = True
        try:
            for role, combo in (("optical", self.optical_combo), ("sar", self.sar_combo)):
                layer = layers.get(choices.get(role, ""))
                self._auto_layer[role] = layer is None
                if layer is not None:
                    combo.setLayer(layer)
        finally:
            self._preselecting = False
        self._preselect_layers()

    def _on_layer_changed(self, role: str) -> None:
        combo = self.optical_combo if role == "optical" else self.sar_combo
        previous = self._previous_layer.get(role)
        self._previous_layer[role] = combo.currentLayer()
        if self._loading or getattr(self, "_preselecting", False):
            return
        if previous is not None:   # not the combo's own pick of a first layer: the user chose
            self._user_chose(role)
        self._update_extent_source()
        self._suggest_output()
        self._fill_band_table()
        self.schedule_validate()

    def _on_model_changed(self) -> None:
        if self._loading:
            return
        self._fill_band_table()
        self.schedule_validate()

    def _on_project_layers(self, *_args) -> None:
        try:
            self._preselect_layers(only_if_better=True)
            self._fill_band_table()
            self.schedule_validate()
        except RuntimeError:  # dialog already deleted
            pass

    # ------------------------------------------------------------------------------------
    # layers and bands
    def _expectation(self, role: str) -> Optional[layer_choice.Expectation]:
        """What the selected model (or, without one, the task) expects for ``role``."""
        card = self.model_picker.card() if self._needs_model() else None
        if card is not None:
            return layer_choice.expectation_from_card(card, role)
        names = tuple(n for n, _ in self._wanted_bands(role))
        return layer_choice.Expectation(role, names) if names else None

    def _range_check(self, layer, role: str, bands: Optional[List[int]] = None):
        """The core value-range check of ``layer`` against the model input for ``role``
        (sampled, cached by file, mtime and bands); None when it does not apply."""
        card = self.model_picker.card() if self._needs_model() else None
        specs = card.inputs_with_role(role) if card is not None else []
        if layer is None or not specs or not any(b.clip for b in specs[0].bands):
            return None
        spec = specs[0]
        info = layer_info(layer)
        if not bands or not all(bands):
            mapping = core_bands.map_bands(spec.band_names, info.descriptions, info.band_count)
            if not mapping.complete:
                return None
            bands = mapping.bands
        if len(bands) != len(spec.bands) or max(bands) > info.band_count:
            return None
        try:
            key = (info.path, os.path.getmtime(info.path), tuple(bands), json_key(spec))
        except OSError:
            return None
        if key not in self._range_cache:
            try:
                self._range_cache[key] = core_bands.check_value_range(info.path, list(bands), spec, role.upper())
            except Exception:
                self._range_cache[key] = None
        return self._range_cache[key]

    def _wanted_bands(self, role: str) -> List[Tuple[str, str]]:
        """[(name, meaning)] the model expects for ``role``; from the card, else the task."""
        card = self.model_picker.card() if self._needs_model() else None
        if card is not None:
            specs = card.inputs_with_role(role)
            return [(b.name, b.meaning) for spec in specs for b in spec.bands]
        names = self.task.default_optical if role == "optical" else self.task.default_sar
        return [(n, "") for n in names]

    def _band_params(self) -> Tuple[str, ...]:
        return {"sar_cloud_removal": ("optical", "sar"), "optical_cloud_removal": ("optical",),
                "fusion": ("optical", "sar"), "custom": ("optical", "sar")}[self.task.key]

    def _preselect_layers(self, only_if_better: bool = False) -> None:
        """Pick the most plausible layer for each role the user has not chosen himself.
        ``only_if_better`` (layers were added): change a choice only for a strictly more
        plausible layer, and never pick a SkyClear result as an input."""
        outputs = {os.path.abspath(p) for p in self._output_paths}
        layers = [l for l in QgsProject.instance().mapLayers().values()
                  if isinstance(l, QgsRasterLayer) and os.path.abspath(layer_path(l) or "/-") not in outputs]
        if not layers:
            return
        infos = {l.id(): layer_info(l) for l in layers}
        by_id = {l.id(): l for l in layers}
        self._preselecting = True
        try:
            for role, combo in (("optical", self.optical_combo), ("sar", self.sar_combo)):
                if role == "sar" and not self._sar_used():
                    continue
                current = combo.currentLayer()
                if not self._auto_layer.get(role, True) and current is not None:
                    continue
                if role == "sar" and self.task.sar_optional:
                    continue
                expectation = self._expectation(role)
                if expectation is None:
                    continue
                other = self.optical_combo.currentLayer() if role == "sar" else None
                first = layer_choice.rank(infos, expectation, exclude=[other.id()] if other else [],
                                          last_path=QgsSettings().value(S + f"last_{role}", ""))
                # the sampled value range decides between layers that fit equally well otherwise
                top = [layer_id for value, layer_id in first if value >= first[0][0] - 2][:4]
                checks = {layer_id: self._range_check(by_id[layer_id], role) for layer_id in top}
                ranked = layer_choice.rank({k: infos[k] for k in top}, expectation,
                                           exclude=[other.id()] if other else [],
                                           last_path=QgsSettings().value(S + f"last_{role}", ""),
                                           range_checks=checks)
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
        self._update_extent_source()

    def _fill_band_table(self) -> None:
        table = self.band_table
        table.setRowCount(0)
        self._band_rows: List[Tuple[str, str, QComboBox]] = []
        roles = [r for r in self._band_params() if r == "optical" or self._sar_used()]
        if not roles:
            table.hide()
            self.band_toggle.hide()
            self.band_note.setText("Bands: the fusion uses the optical RGB bands (1, 2, 3) and SAR band 1.")
            return
        self.band_toggle.show()
        summary, complete = [], True
        for role in roles:
            layer = self.optical_layer() if role == "optical" else self.sar_layer()
            wanted = self._wanted_bands(role)
            if layer is None or not wanted:
                continue
            info = layer_info(layer)
            found = core_bands.map_bands([n for n, _ in wanted], info.descriptions, info.band_count)
            complete = complete and found.complete
            summary.append(f"{role.upper()} " + (found.text() if len(wanted) <= 4 else
                           f"{sum(1 for b in found.bands if b)} of {len(wanted)} bands "
                           + found.text().rsplit(" (", 1)[-1].rstrip(")")))
            mapping = found.bands
            for (name, meaning), chosen in zip(wanted, mapping):
                row = table.rowCount()
                table.insertRow(row)
                item = QTableWidgetItem(role.upper())
                item.setFlags(Qt.ItemIsEnabled)
                table.setItem(row, 0, item)
                item = QTableWidgetItem(name + (f" — {meaning}" if meaning else ""))
                item.setFlags(Qt.ItemIsEnabled)
                table.setItem(row, 1, item)
                combo = QComboBox()
                combo.addItem("— choose —", 0)
                for i in range(1, info.band_count + 1):
                    desc = info.descriptions[i - 1] if i - 1 < len(info.descriptions) else ""
                    combo.addItem(f"{i}" + (f": {desc}" if desc else ""), i)
                combo.setCurrentIndex(chosen or 0)
                combo.currentIndexChanged.connect(self.schedule_validate)
                table.setCellWidget(row, 2, combo)
                self._band_rows.append((role, name, combo))
        table.setFixedHeight(min(250, 34 + 31 * max(1, table.rowCount())))
        self.band_note.setText("Bands: " + "; ".join(summary) if summary else "Bands: choose the layers first.")
        if not complete and not self.band_toggle.isChecked():
            self.band_toggle.setChecked(True)        # something to choose: show the table
            self._band_auto_open = True
        elif complete and getattr(self, "_band_auto_open", False):
            self._band_auto_open = False              # opened only because a band was missing
            self.band_toggle.setChecked(False)
        self._show_band_table(self.band_toggle.isChecked())

    def _show_band_table(self, show: bool) -> None:
        """The band table only when asked for, or when a band is left to choose."""
        self.band_table.setVisible(bool(show) and bool(getattr(self, "_band_rows", [])))
        self.band_toggle.setText("Hide" if show else "Edit…")

    def band_mapping(self, role: str) -> List[Optional[int]]:
        return [combo.currentData() or None for r, _, combo in getattr(self, "_band_rows", []) if r == role]

    def set_band(self, role: str, model_band: str, raster_band: int) -> None:
        for r, name, combo in self._band_rows:
            if r == role and name == model_band:
                combo.setCurrentIndex(combo.findData(raster_band))

    # ------------------------------------------------------------------------------------
    # extent, output
    def _update_extent_source(self) -> None:
        layer = self.optical_layer()
        if layer is None:
            return
        georeferenced = layer.crs().isValid()
        if not georeferenced and self.extent_box.isChecked():
            self.extent_box.setChecked(False)
        self.extent_box.setEnabled(georeferenced)
        self.extent_box.setToolTip("" if georeferenced else
                                   "The optical raster has no CRS: SkyClear processes all of it")
        self.extent_box.setOriginalExtent(layer.extent(), layer.crs())
        self.extent_box.setOutputCrs(layer.crs())
        if not self.extent_box.isChecked():
            self.extent_box.blockSignals(True)
            self.extent_box.setOutputExtentFromOriginal()
            self.extent_box.setChecked(False)
            self.extent_box.blockSignals(False)
        if self.iface is not None:
            try:
                canvas = self.iface.mapCanvas()
                self.extent_box.setCurrentExtent(canvas.extent(), canvas.mapSettings().destinationCrs())
            except Exception:
                pass

    def extent(self) -> Optional[Tuple[float, float, float, float]]:
        if not self.extent_box.isChecked():
            return None
        r = self.extent_box.outputExtent()
        if r.isNull() or r.isEmpty():
            return None
        return (r.xMinimum(), r.yMinimum(), r.xMaximum(), r.yMaximum())

    def _suggest_output(self) -> None:
        current = self.output_widget.filePath()
        if current and current != getattr(self, "_suggested_output", None):
            return               # the user typed or browsed a path: keep it
        layer = self.optical_layer()
        folder = self.default_output_folder()
        stem = os.path.splitext(os.path.basename(layer_path(layer)))[0] if layer else "skyclear"
        suffix = {"sar_cloud_removal": "cloudfree_sar", "optical_cloud_removal": "cloudfree",
                  "fusion": "fused", "custom": "model"}[self.task.key]
        self._suggested_output = os.path.join(folder, f"{stem}_{suffix}.tif")
        self.output_widget.setFilePath(self._suggested_output)

    def default_output_folder(self) -> str:
        """Where a new output goes: the folder last used in this project, else the project's
        folder, else the folder last used, else the optical input's folder, else home."""
        settings = QgsSettings()
        last = settings.value(S + "output_dir", "") or ""
        project = QgsProject.instance()
        project_file = project.fileName() or ""
        home = project.homePath() if project_file or project.presetHomePath() else ""
        candidates = []
        if last and project_file and settings.value(S + "output_dir_project", "") == project_file:
            candidates.append(last)
        candidates += [home, last]
        layer = self.optical_layer()
        if layer is not None and layer_path(layer):
            candidates.append(os.path.dirname(os.path.abspath(layer_path(layer))))
        for folder in candidates:
            if folder and os.path.isdir(folder) and os.access(folder, os.W_OK):
                return folder
        return os.path.expanduser("~")

    def cloud_probability_path(self) -> str:
        stem, _ = os.path.splitext(self.output_path() or "skyclear.tif")
        return f"{stem}_cloud_probability.tif"

    def output_path(self) -> str:
        path = (self.output_widget.filePath() or "").strip()
        if path and not path.lower().endswith((".tif", ".tiff")):
            path += ".tif"
        return path

    # ------------------------------------------------------------------------------------
    # validation
    def validate(self) -> bool:
        msgs: List[Tuple[str, str]] = []
        spec = self.task
        optical = self.optical_layer()
        if optical is None:
            msgs.append((ERROR, "Choose an optical raster layer (add one to the project first)."))
        sar = self.sar_layer()
        if spec.needs_sar and sar is None:
            msgs.append((ERROR, "Choose a SAR raster layer."))
        card = None
        if self._needs_model():
            problem = self.model_picker.problem()
            if problem:
                msgs.append((ERROR, problem))
            card = self.model_picker.card()
            if spec.sar_optional and card is not None:
                if card.inputs_with_role("sar") and sar is None:
                    msgs.append((ERROR, f"Model '{card.name}' needs a SAR raster."))
                if sar is not None and not card.inputs_with_role("sar"):
                    msgs.append((WARNING, f"Model '{card.name}' takes no SAR input; the SAR layer is ignored."))
        if self.model_picker.refusal and self._needs_model():
            msgs.append((ERROR, self.model_picker.refusal))
        if self._uses_step_model():
            problem = self.step_picker.problem()
            if problem:
                if self.step_picker.current_path() is None:
                    problem += " Or set Mode to “Reference network only”."
                msgs.append((ERROR, problem))
            if self.step_picker.refusal:
                msgs.append((ERROR, self.step_picker.refusal))
        for role, layer in (("optical", optical), ("sar", sar)):
            if layer is None:
                continue
            if layer.providerType() != "gdal" or not os.path.isfile(layer_path(layer)):
                msgs.append((ERROR, f"{role.capitalize()} layer '{layer.name()}' is not a raster file; SkyClear "
                                    "reads rasters from files: export it as GeoTIFF first (right-click › Export)."))
                continue
            info = layer_info(layer)
            mapping_ok = True
            if role in self._band_params():
                wanted = [n for n, _ in self._wanted_bands(role)]
                if wanted:
                    problem = self._band_problem(role, layer, info, wanted, card)
                    if problem:
                        mapping_ok = False
                        msgs.append((ERROR, problem))
            if card is not None and mapping_ok:
                msgs.extend(self._value_range_messages(role, layer, info, card))
            elif spec.key == "fusion":
                if role == "optical" and info.band_count < 3:
                    msgs.append((ERROR, f"Optical raster has {info.band_count} band(s); fusion needs an RGB raster (3 bands)."))
                elif role == "optical" and info.band_count > 3:
                    msgs.append((WARNING, f"Optical raster has {info.band_count} bands; fusion uses bands 1, 2, 3 as RGB."))
                if role == "sar" and info.band_count != 1:
                    msgs.append((WARNING, f"SAR raster has {info.band_count} bands; fusion uses band 1."))
        if optical is not None and sar is not None:
            msgs.extend(self._check_alignment(optical, sar))
        if optical is not None and self.extent() is not None:
            e = self.extent()
            o = optical.extent()
            if not boxes_overlap(e, (o.xMinimum(), o.yMinimum(), o.xMaximum(), o.yMaximum())):
                msgs.append((ERROR, "The chosen extent does not overlap the optical raster."))
        tile = self.tile_spin.value()
        overlap = self.overlap_spin.value()
        if tile and overlap >= tile:
            msgs.append((ERROR, f"Overlap ({overlap} px) must be smaller than the tile size ({tile} px)."))
        if card is not None and tile and tile % card.size_multiple:
            msgs.append((ERROR, f"Tile size must be a multiple of {card.size_multiple} for model '{card.name}'."))
        text, device_ok = device_text(self.device())
        self.device_label.setText(("<b>Device:</b> " if device_ok else "✖ <b>Device:</b> ") + _esc(text))
        self.device_label.setStyleSheet("" if device_ok else f"color: {_COLOURS[ERROR]};")
        if not device_ok:
            msgs.append((ERROR, text))
        out = self.output_path()
        if not out:
            msgs.append((ERROR, "Choose an output GeoTIFF file."))
        else:
            folder = os.path.dirname(os.path.abspath(out))
            if not os.path.isdir(folder):
                msgs.append((ERROR, f"Output folder does not exist: {folder}"))
            elif not os.access(folder, os.W_OK):
                msgs.append((ERROR, f"Output folder is not writable: {folder}"))
            elif os.path.exists(out):
                msgs.append((WARNING, f"{os.path.basename(out)} exists and will be overwritten."))
            if optical is not None and os.path.abspath(out) == os.path.abspath(layer_path(optical)):
                msgs.append((ERROR, "The output would overwrite the optical input."))
            open_layers = [l.name() for l in QgsProject.instance().mapLayers().values()
                           if os.path.abspath(layer_path(l) or "/-") == os.path.abspath(out)]
            if open_layers:
                if os.name == "nt":
                    msgs.append((ERROR, f"Layer '{open_layers[0]}' has {os.path.basename(out)} open: remove it "
                                        "from the project or choose another output."))
                else:
                    msgs.append((WARNING, f"Layer '{open_layers[0]}' shows {os.path.basename(out)}; it will be "
                                          "replaced by the new result."))
            busy = [t for t in self.tasks
                    if os.path.abspath(t.kwargs.get("output", "")) == os.path.abspath(out)]
            if busy:
                msgs.append((ERROR, f"A running task is writing {os.path.basename(out)}: choose another output."))
        if spec.key == "sar_cloud_removal":
            self.cloudprob_note.setText(f"Also writes the cloud-probability map (0 = clear, 1 = cloud): "
                                        f"{os.path.basename(self.cloud_probability_path())}")
        if not self._value_range_flagged:
            self.rescale_check.hide()
        self._value_range_flagged = False
        self.messages = msgs
        self._show_messages()
        errors = [m for m in msgs if m[0] == ERROR]
        self.run_button.setEnabled(not errors)
        self._update_estimate(card)
        if not errors and self.auto_estimate and self._measure_key() not in self._measured:
            self._auto_estimate.start()
        return not errors

    _value_range_flagged = False
    auto_estimate = True

    def _band_problem(self, role: str, layer, info, wanted: List[str], card) -> Optional[str]:
        """The core mapper's verdict on the band table, or "wrong product" when the raster
        has fewer bands than the model needs and none of them are named like the model's."""
        model = card.name if card is not None else ""
        by_description = core_bands.map_bands(wanted, info.descriptions, info.band_count)
        if info.band_count < len(wanted) and not by_description.complete and by_description.rule != "grey":
            product = _product_name(wanted)
            return (f"{role.capitalize()} layer '{layer.name()}' has {logic.plural(info.band_count, 'band')} "
                    f"({info.dtype or 'unknown type'}): it is not the product "
                    + (f"model '{model}'" if model else "this task") + f" works on ({product}). "
                    f"Choose {product} as the {role} layer" + (", or a model made for this product." if model else "."))
        chosen = self.band_mapping(role)
        mapping = core_bands.map_bands(wanted, info.descriptions, info.band_count,
                                       explicit=chosen if chosen and any(chosen) else None)
        problem = core_bands.mapping_problem(role.capitalize(), mapping, model)
        return problem.replace("a band list like", "in the band table, e.g.") if problem else None

    def _value_range_messages(self, role: str, layer, info, card) -> List[Tuple[str, str]]:
        """A value range the model was not made for is an error (the result would be noise or
        flat), unless the user opts in to scaling the values to the model's range."""
        specs = card.inputs_with_role(role)
        highs = [b.clip[1] for spec in specs for b in spec.bands if b.clip]
        if not highs:
            return []
        check = self._range_check(layer, role, self.band_mapping(role))
        if check is not None:
            if not check.mismatch:
                return []
            problem = (f"{role.capitalize()} values of '{layer.name()}' run {check.sample_low:g}–{check.sample_high:g} "
                       f"({info.dtype}), but model '{card.name}' was made for {check.clip[0]:g}–{check.clip[1]:g}: "
                       f"{100 * check.fraction_outside:.0f} % of them would be clipped and the result would be "
                       + ("flat" if check.flat else "meaningless") + ". Choose the product the model was made for"
                       " or another model.")
        else:
            problem = core_bands.dtype_range_problem(role, card.name, max(highs), info.dtype)
            if not problem:
                return []
        self._value_range_flagged = True
        self.rescale_check.show()
        if role == "optical" and self.rescale_check.isChecked():
            scale = check.suggested.text() if check is not None and check.suggested is not None else "automatic"
            return [(INFO, f"Optical values are scaled to the range of model '{card.name}' ({scale}).")]
        if role == "sar":
            return [(ERROR, problem)]
        return [(ERROR, problem + " Or tick “Scale the input values to the model's range” to run anyway.")]

    def _safe_validate(self) -> None:
        """Timer slot: an unexpected error is logged, never raised into Qt's event loop."""
        try:
            self.validate()
        except RuntimeError:       # dialog deleted meanwhile
            pass
        except Exception as exc:
            import traceback

            from qgis.core import QgsMessageLog

            QgsMessageLog.logMessage(f"validation failed: {exc}\n{traceback.format_exc()}", "SkyClear", Qgis.Warning)
            self.message_label.setText(f"<span style='color:{_COLOURS[ERROR]}'>✖ {_esc(exc)}</span>")

    def _check_alignment(self, optical, sar) -> List[Tuple[str, str]]:
        msgs = []
        o_crs, s_crs = optical.crs(), sar.crs()
        if not o_crs.isValid() or not s_crs.isValid():
            if (optical.width(), optical.height()) != (sar.width(), sar.height()):
                msgs.append((ERROR, "A raster has no CRS and the two rasters differ in size "
                                    f"({optical.width()}×{optical.height()} vs {sar.width()}×{sar.height()}): "
                                    "without a CRS they must share the same pixel grid."))
            else:
                msgs.append((INFO, "No CRS on the rasters: they are assumed to share the same pixel grid."))
            return msgs
        s_extent = sar.extent()
        if o_crs != s_crs:
            try:
                transform = QgsCoordinateTransform(s_crs, o_crs, QgsProject.instance())
                s_extent = transform.transformBoundingBox(sar.extent())
            except Exception:
                msgs.append((ERROR, f"Cannot transform {s_crs.authid()} to {o_crs.authid()}."))
                return msgs
            msgs.append((INFO, f"SAR is in {s_crs.authid()}; it will be reprojected to the optical grid "
                               f"({o_crs.authid()})."))
        o_extent = optical.extent()
        if not o_extent.intersects(s_extent):
            msgs.append((ERROR, "The SAR and optical rasters do not overlap."))
        else:
            inter = QgsRectangle(o_extent)
            inter = inter.intersect(s_extent)
            frac = inter.area() / o_extent.area() if o_extent.area() > 0 else 1.0
            if frac < 0.99:
                msgs.append((WARNING, f"The SAR covers only {100 * frac:.0f}% of the optical raster; "
                                      "the rest of the output will be nodata."))
            if abs(sar.rasterUnitsPerPixelX() - optical.rasterUnitsPerPixelX()) > 1e-9 * max(1.0, abs(optical.rasterUnitsPerPixelX())) \
                    and o_crs == s_crs:
                msgs.append((INFO, "SAR and optical pixel sizes differ; the SAR will be resampled to the optical grid."))
        return msgs

    def value_scale(self):
        """``"auto"`` when the user opted in to scaling the optical values, else None."""
        return "auto" if not self.rescale_check.isHidden() and self.rescale_check.isChecked() else None

    def _show_messages(self) -> None:
        if not self.messages:
            self.message_label.setText("<span style='color:#1b7e2b'>✔ Ready to run.</span>")
        else:
            self.message_label.setText("<br>".join(
                f"<span style='color:{_COLOURS[level]}'>{_MARKS[level]} {_esc(text)}</span>"
                for level, text in self.messages))
        # as tall as the messages, at most ~4 lines (then it scrolls): the buttons stay on screen
        width = max(200, self.message_scroll.viewport().width() or self.width() - 30)
        needed = self.message_label.heightForWidth(width)
        self.message_scroll.setFixedHeight(max(20, min(84, needed if needed > 0 else 20) + 2))

    def errors(self) -> List[str]:
        return [text for level, text in self.messages if level == ERROR]

    # ------------------------------------------------------------------------------------
    # estimate
    def _pixels(self) -> Tuple[int, int]:
        layer = self.optical_layer()
        if layer is None:
            return 0, 0
        extent = self.extent()
        if extent is None:
            return layer.width(), layer.height()
        o = layer.extent()
        xres, yres = layer.rasterUnitsPerPixelX() or 1, layer.rasterUnitsPerPixelY() or 1
        w = (min(extent[2], o.xMaximum()) - max(extent[0], o.xMinimum())) / xres
        h = (min(extent[3], o.yMaximum()) - max(extent[1], o.yMinimum())) / yres
        return max(0, int(round(w))), max(0, int(round(h)))

    def _classical_card(self):
        """The card jobs.fuse_sar_optical builds for a classical method (None otherwise)."""
        if self.task.key != "fusion" or self._needs_model():
            return None
        optical, sar = self.optical_layer(), self.sar_layer()
        if optical is None or sar is None:
            return None
        try:
            from ..plugin.core.pipelines.fusion_classical import classical_fusion_card

            dtype = lambda layer: "float32" if layer_info(layer).is_float else (  # noqa: E731
                "uint8" if layer.dataProvider().dataType(1) == Qgis.Byte else "uint16")
            return classical_fusion_card(self.method_combo.currentData(), sar_dtype=dtype(sar),
                                         optical_dtype=dtype(optical),
                                         despeckle="lee" if self.despeckle_check.isChecked() else None)
        except Exception:
            return None

    def _tiling(self, card) -> Tuple[int, int]:
        tile = self.tile_spin.value() or (card.tile_size if card else 512)
        overlap = self.overlap_spin.value()
        if overlap < 0:
            overlap = card.default_overlap if card else tile // 8
        return tile, overlap

    def _update_estimate(self, card=None) -> logic.Estimate:
        """Tile count and memory now; time from the last tile measured through the engine."""
        if card is None and self._needs_model():
            card = self.model_picker.card()
        if card is None and self._classical_card() is not None:
            from ..plugin.core.model_card import parse_card

            card = parse_card(self._classical_card())
        width, height = self._pixels()
        tile, overlap = self._tiling(card)
        per_tile = self._measured.get(self._measure_key())
        cin = sum(len(s.bands) for s in card.inputs) if card else 4
        cout = sum(len(s.bands) for s in card.outputs) if card else 3
        model_mb = os.path.getsize(self.model_picker.current_path()) / 2 ** 20 \
            if card is not None and self._needs_model() and self.model_picker.current_path() else 0.0
        est = logic.estimate(width, height, tile, overlap, cin, cout, per_tile, model_mb, repeats=1)
        text = f"Estimate for {width}×{height} px at tile {tile}, overlap {overlap}: {est.text()}"
        if per_tile is None and self.estimate_error:
            text += f" — could not time a tile: {self.estimate_error}"
        elif per_tile is None and not self.run_button.isEnabled():
            text = text.replace("time: measuring one tile…", "time: once the inputs are valid")
        self.estimate_label.setText(text)
        self.last_estimate = est
        return est

    def _measure_key(self):
        """What the time per tile depends on: the job and its settings, not the area."""
        try:
            kwargs = self.job_kwargs()
        except Exception:
            return None
        skip = ("output", "cloud_probability", "extent", "optical", "sar")
        return (self.task.function,) + tuple(sorted((k, repr(v)) for k, v in kwargs.items() if k not in skip))

    def _estimate_kwargs(self) -> Optional[Dict]:
        """The run's own job arguments, cut down to one tile at the centre of the area to
        process, writing into a scratch folder: the estimate goes through the engine's own
        code path (same processors, band mapping, reprojection, value range, diffusion steps)."""
        layer = self.optical_layer()
        if layer is None:
            return None
        kwargs = self.job_kwargs()
        card = self.model_picker.card() if self._needs_model() else None
        if card is None and self._classical_card() is not None:
            from ..plugin.core.model_card import parse_card

            card = parse_card(self._classical_card())
        tile, _ = self._tiling(card)
        area = self.extent()
        o = layer.extent()
        box = area or (o.xMinimum(), o.yMinimum(), o.xMaximum(), o.yMaximum())
        xres, yres = layer.rasterUnitsPerPixelX() or 1.0, layer.rasterUnitsPerPixelY() or 1.0
        width, height = self._pixels()
        half_w = (min(tile, width) - 2) / 2.0 * xres      # a little less than a tile: exactly one tile
        half_h = (min(tile, height) - 2) / 2.0 * yres
        cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
        folder = tempfile.mkdtemp(prefix="skyclear-estimate-")
        if layer.crs().isValid():
            if half_w > 0 and half_h > 0:
                kwargs["extent"] = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
        else:   # no CRS, so no extent to crop to: run on a one-tile copy of the inputs' centre
            for role in ("optical", "sar"):
                if kwargs.get(role):
                    kwargs[role] = _centre_crop(kwargs[role], min(tile, width) - 2, min(tile, height) - 2,
                                                os.path.join(folder, f"{role}.tif"))
        kwargs["output"] = os.path.join(folder, "tile.tif")
        if "cloud_probability" in kwargs:
            kwargs["cloud_probability"] = os.path.join(folder, "tile_cloud_probability.tif")
        return kwargs

    def _start_estimate(self) -> bool:
        """Time one tile in a background thread; an older estimate still running is cancelled."""
        if not self.run_button.isEnabled() or self.optical_layer() is None:
            return False
        key = self._measure_key()
        if key is None:
            return False
        from ..plugin import tasks

        try:
            kwargs = self._estimate_kwargs()
            job = tasks.resolve_job(self.task.function)
        except Exception as exc:
            self.estimate_error = str(exc)
            return False
        if kwargs is None:
            return False
        self._estimate_generation += 1
        generation = self._estimate_generation
        state = {"generation": generation, "key": key, "done": False, "seconds": None, "error": None}

        def cancelled() -> bool:
            return generation != self._estimate_generation

        def work():
            from ..plugin.core.errors import Cancelled

            try:
                report = job(**kwargs, is_cancelled=cancelled)
                seconds = report.processor_seconds / max(1, report.tiles)
                if report.seconds < 3.0 and not cancelled():
                    # the first run pays for the runtime's warm-up: time a second one when cheap
                    report = job(**kwargs, is_cancelled=cancelled)
                    seconds = report.processor_seconds / max(1, report.tiles)
                state["seconds"] = seconds
            except Cancelled:
                pass
            except Exception as exc:  # shown in the estimate line, never raised into Qt
                state["error"] = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
            finally:
                import shutil

                shutil.rmtree(os.path.dirname(kwargs["output"]), ignore_errors=True)
                state["done"] = True

        self._estimate_job = state
        self.estimate_error = None
        self.estimate_label.setText(self.estimate_label.text().split(" — ")[0])
        self._estimate_thread = threading.Thread(target=work, name="skyclear-estimate", daemon=True)
        self._estimate_thread.start()
        self._estimate_poll.start()
        return True

    def _poll_estimate(self) -> None:
        state = self._estimate_job
        if state is None or not state["done"]:
            return
        self._estimate_poll.stop()
        self._estimate_job = None
        if state["generation"] != self._estimate_generation:
            return
        if state["seconds"] is not None:
            self._measured[state["key"]] = state["seconds"]
            self.estimate_error = None
        elif state["error"]:
            self.estimate_error = state["error"]
        try:
            self._update_estimate()
        except RuntimeError:     # dialog deleted meanwhile
            pass

    def measure(self, timeout: float = 600.0) -> Optional[float]:
        """Time one tile now (the Estimate button; also used by scripts and tests) and wait for it."""
        self._auto_estimate.stop()
        if not self.validate() and not self.run_button.isEnabled():
            self.estimate_label.setText(self.estimate_label.text() + " — fix the ✖ messages first")
            return None
        key = self._measure_key()
        if not self._start_estimate():
            return None
        QApplication.setOverrideCursor(Qt.WaitCursor)
        try:
            deadline = time.monotonic() + timeout
            while self._estimate_job is not None and time.monotonic() < deadline:
                QApplication.processEvents()
                time.sleep(0.02)
        finally:
            QApplication.restoreOverrideCursor()
        return self._measured.get(key)

    # ------------------------------------------------------------------------------------
    # running
    def job_kwargs(self) -> Dict:
        spec = self.task
        kw: Dict = {"optical": layer_path(self.optical_layer()), "output": self.output_path(),
                    "tile_size": self.tile_spin.value() or None,
                    "overlap": None if self.overlap_spin.value() < 0 else self.overlap_spin.value(),
                    "device": self.device(), "extent": self.extent()}
        sar = self.sar_layer()
        if spec.sar_optional and sar is not None:
            card = self.model_picker.card()
            if card is not None and not card.inputs_with_role("sar"):
                sar = None              # validation says it is ignored: do not hand it to the job
        if spec.needs_sar or (spec.sar_optional and sar is not None):
            kw["sar"] = layer_path(sar) if sar is not None else None
        if "optical" in self._band_params():
            kw["optical_bands"] = self.band_mapping("optical") or None
        if "sar" in self._band_params() and sar is not None:
            kw["sar_bands"] = self.band_mapping("sar") or None
        if self.value_scale():
            kw["value_scale"] = self.value_scale()
        if self._needs_model():
            kw["model"] = self.model_picker.current_path()
        if spec.key == "sar_cloud_removal":
            kw["cloud_probability"] = self.cloud_probability_path()
            kw["keep_clear"] = self.keep_clear_check.isChecked()
            kw["clear_threshold"] = self.threshold_spin.value()
        elif spec.key == "optical_cloud_removal":
            kw["mode"] = self.mode_combo.currentData()
            if self._uses_step_model():
                kw["step_model"] = self.step_picker.current_path()
                kw["steps"] = self.steps_spin.value()
                kw["eta"] = self.eta_spin.value()
                kw["seed"] = self.seed_spin.value()
        elif spec.key == "fusion":
            kw["method"] = self.method_combo.currentData()
            kw["despeckle"] = self.despeckle_check.isChecked()
        return kw

    def run(self):
        """Validate, then start a background task. Returns the task (None when invalid)."""
        if not self.validate():
            return None
        from ..plugin import tasks

        spec = self.task
        kwargs = self.job_kwargs()
        job = tasks.resolve_job(spec.function)
        self._save_settings()
        expected = self.last_estimate.total_seconds if self.last_estimate is not None else None
        task = tasks.SkyClearTask(spec.title, spec.function, kwargs, iface=self.iface,
                                  add_to_map=self.add_to_map.isChecked(), job=job, expected_seconds=expected)
        self._output_paths.update(v for k, v in kwargs.items() if k in ("output", "cloud_probability") and v)
        task.done.connect(self._task_done)
        self.tasks.append(task)
        tasks.start(task)
        self._update_status()
        return task

    def _task_done(self, task) -> None:
        try:
            if task in self.tasks:
                self.tasks.remove(task)
            self._update_status(last=task)
        except RuntimeError:
            pass

    def _update_status(self, last=None) -> None:
        running = len(self.tasks)
        text = f"{running} task(s) running — progress in the QGIS task bar." if running else ""
        if last is not None and not running:
            text = ("Last run: " + ("finished" if last.report is not None else
                                     "cancelled" if last.was_cancelled else f"failed — {last.error}"))
        self.status_label.setText(text)

    def shutdown(self) -> None:
        """Plugin unload / QGIS closing: cancel our tasks and keep the choices."""
        from ..plugin import tasks

        try:
            QgsProject.instance().layersAdded.disconnect(self._on_project_layers)
        except Exception:
            pass
        self._estimate_generation += 1          # a running estimate stops at its next check
        self._auto_estimate.stop()
        thread = getattr(self, "_estimate_thread", None)
        if thread is not None and thread.is_alive():
            thread.join(15.0)                   # never leave a model running behind an unloaded plugin
        self._save_settings()
        tasks.cancel_all()

    # ------------------------------------------------------------------------------------
    # settings
    def _save_settings(self) -> None:
        s = QgsSettings()
        s.setValue(S + "task", self.task.key)
        s.setValue(S + "device", self.device())
        s.setValue(S + "tile_size", self.tile_spin.value())
        s.setValue(S + "overlap", self.overlap_spin.value())
        s.setValue(S + "diffusion/mode", self.mode_combo.currentData())
        s.setValue(S + "diffusion/steps", self.steps_spin.value())
        s.setValue(S + "diffusion/eta", self.eta_spin.value())
        s.setValue(S + "diffusion/seed", self.seed_spin.value())
        s.setValue(S + "fusion/method", self.method_combo.currentData())
        s.setValue(S + "fusion/despeckle", self.despeckle_check.isChecked())
        s.setValue(S + "sar/keep_clear", self.keep_clear_check.isChecked())
        s.setValue(S + "sar/clear_threshold", self.threshold_spin.value())
        s.setValue(S + "add_to_map", self.add_to_map.isChecked())
        if self.optical_layer() is not None:
            s.setValue(S + "last_optical", layer_path(self.optical_layer()))
        if self.sar_layer() is not None:
            s.setValue(S + "last_sar", layer_path(self.sar_layer()))
        if self.model_picker.current_path():
            s.setValue(S + f"model/{self.task.key}", self.model_picker.current_path())
        if self.step_picker.current_path():
            s.setValue(S + "model/optical_cloud_removal_step", self.step_picker.current_path())
        out = self.output_path()
        if out:
            s.setValue(S + "output_dir", os.path.dirname(os.path.abspath(out)))
            s.setValue(S + "output_dir_project", QgsProject.instance().fileName() or "")

    def _restore_settings(self) -> None:
        s = QgsSettings()

        def value(key, default, kind):
            try:
                return kind(s.value(S + key, default))
            except (TypeError, ValueError):
                return default

        def flag(key, default):
            v = s.value(S + key, default)
            return v in (True, "true", "1", 1) if not isinstance(v, bool) else v

        self.set_task(s.value(S + "task", "sar_cloud_removal"))
        index = self.device_combo.findData(s.value(S + "device", "auto"))
        self.device_combo.setCurrentIndex(max(0, index))
        self.tile_spin.setValue(value("tile_size", 0, int))
        self.overlap_spin.setValue(value("overlap", -1, int))
        self.mode_combo.setCurrentIndex(max(0, self.mode_combo.findData(s.value(S + "diffusion/mode", "diffusion"))))
        self.steps_spin.setValue(value("diffusion/steps", 10, int))
        self.eta_spin.setValue(value("diffusion/eta", 0.3, float))
        self.seed_spin.setValue(value("diffusion/seed", 0, int))
        self.method_combo.setCurrentIndex(max(0, self.method_combo.findData(s.value(S + "fusion/method", "laplacian"))))
        self.despeckle_check.setChecked(flag("fusion/despeckle", False))
        self.keep_clear_check.setChecked(flag("sar/keep_clear", False))
        self.threshold_spin.setValue(value("sar/clear_threshold", 0.5, float))
        self.add_to_map.setChecked(flag("add_to_map", True))
        step = s.value(S + "model/optical_cloud_removal_step", "")
        if step:
            self.step_picker.refresh(select=step)

    def fit_to_screen(self, available: Optional[QRect] = None) -> None:
        """Open at a size that fits the screen (buttons always on it): the preferred size where
        there is room, else the available area less a margin, never below the minimum."""
        if available is None:
            screen = None
            try:
                parent = self.parentWidget()
                screen = parent.screen() if parent is not None else None
            except Exception:
                screen = None
            screen = screen or QApplication.primaryScreen()
            available = screen.availableGeometry() if screen is not None else QRect(0, 0, *PREFERRED_SIZE)
        width = min(PREFERRED_SIZE[0], available.width() - 40)
        height = min(PREFERRED_SIZE[1], available.height() - 50)
        width = max(width, min(MINIMUM_SIZE[0], available.width()))
        height = max(height, min(MINIMUM_SIZE[1], available.height()))
        self.resize(width, height)
        self.move(available.x() + (available.width() - width) // 2,
                  available.y() + max(0, (available.height() - height) // 2))

    def showEvent(self, event):  # noqa: N802
        super().showEvent(event)
        self.extent_box.setCollapsed(not self.extent_box.isChecked())

    def closeEvent(self, event):  # noqa: N802
        self._save_settings()
        super().closeEvent(event)


def _esc(text: str) -> str:
    return html.escape(str(text), quote=False)


def _centre_crop(path: str, width: int, height: int, target: str) -> str:
    """A GeoTIFF copy of the centre ``width`` × ``height`` pixels of ``path`` (bands, band
    descriptions and nodata kept), for timing a tile of a raster without a CRS."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        w, h = max(1, min(width, src.width)), max(1, min(height, src.height))
        window = Window((src.width - w) // 2, (src.height - h) // 2, w, h)
        profile = src.profile.copy()
        profile.update(driver="GTiff", width=w, height=h, transform=src.window_transform(window))
        for key in ("blockxsize", "blockysize", "tiled", "compress"):
            profile.pop(key, None)
        with rasterio.open(target, "w", **profile) as dst:
            dst.write(src.read(window=window))
            dst.descriptions = src.descriptions
    return target


def _product_name(wanted: List[str]) -> str:
    """What a model's band list means in words, for "wrong product" messages."""
    upper = [w.upper() for w in wanted]
    if len(upper) >= 12 and {"B2", "B3", "B4", "B8"} <= set(upper):
        return (f"a {len(upper)}-band Sentinel-2 " + ("L1C" if "B10" in upper else "L2A") + " scene "
                f"({upper[0]}…{upper[-1]})")
    if set(upper) <= {"VV", "VH", "HH", "HV"}:
        return "a Sentinel-1 scene (" + ", ".join(wanted) + " in dB)"
    if core_bands.is_rgb(wanted):
        return "an RGB image"
    return f"a {len(wanted)}-band raster ({', '.join(wanted)})"


def json_key(spec) -> str:
    import json

    return json.dumps([[b.name, b.clip, b.scale, b.offset] for b in spec.bands])
