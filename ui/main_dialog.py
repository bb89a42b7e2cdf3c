"""The SkyClear dialog, a view: pick a tool, its inputs, model and options, then run it in
the background. The boxes are widgets of their own (``inputs_panel``, ``model_panel``,
``options_panel``, ``output_panel``), built from the tool registry; what the choices mean —
validation, estimate, the job call — is decided by the Qt-free ``checks`` and ``controller``."""
from __future__ import annotations

from typing import List, Optional, Tuple

from qgis.core import Qgis, QgsProject
from qgis.PyQt.QtCore import QRect, Qt, QTimer
from qgis.PyQt.QtWidgets import (QApplication, QComboBox, QDialog, QGridLayout, QHBoxLayout, QLabel, QScrollArea,
                                 QTabWidget, QVBoxLayout, QWidget)

from ..plugin.core import tools
from . import checks, controller, option_widgets, settings
from .dependencies_panel import DependenciesPanel
from .estimate_line import EstimateLine
from .extent_box import ExtentBox
from .inputs_panel import InputsPanel
from .layer_info import layer_path, project_context
from .model_panel import ModelPanel
from .options_panel import OptionsPanel
from .output_panel import OutputPanel
from .status_panel import StatusPanel, esc, label

PREFERRED_SIZE = (1180, 900)
MINIMUM_SIZE = (760, 520)
# options other rows or model slots depend on: a change re-lays out the dialog
_DECIDING = {k for spec in tools.TOOLS for item in spec.options + spec.models
             for k, _ in getattr(item, "when", ()) + getattr(item, "enabled_when", ())}


class SkyClearDialog(QDialog):
    auto_estimate = True          # time one tile by itself once the inputs settle

    def __init__(self, iface=None, parent=None):
        super().__init__(parent)
        self.iface = iface
        self.setObjectName("SkyClearDialog")
        self.setWindowTitle("SkyClear — cloud removal and SAR–optical fusion")
        self.tasks: List = []
        self.messages: List[Tuple[str, str]] = []
        self.checker = checks.Checker()
        self._loading, self._validating = True, False
        self._revalidate = QTimer(self)
        self._revalidate.setSingleShot(True)
        self._revalidate.setInterval(150)
        self._revalidate.timeout.connect(self._safe_validate)
        self._build()
        self.estimates = EstimateLine(self.estimate_label, self.form, self.run_button.isEnabled, self)
        settings.restore(self)
        self._loading = self.inputs.loading = False
        self._on_task_changed()
        self.setMinimumSize(*MINIMUM_SIZE)
        self.fit_to_screen()

    # ------------------------------------------------------------------------------------
    # construction
    def _build(self) -> None:
        outer = QVBoxLayout(self)
        head = QHBoxLayout()
        head.addWidget(QLabel("<b>Task</b>"))
        self.task_combo = QComboBox()
        self.task_combo.setObjectName("taskCombo")
        for spec in tools.TOOLS:
            self.task_combo.addItem(spec.title, spec.key)
        head.addWidget(self.task_combo, 1)
        self.availability = label("availability", Qt.RichText)
        head.addWidget(self.availability, 2)
        outer.addLayout(head)
        self.task_description = label("", Qt.PlainText, "color: #444;")
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
        self.inputs = InputsPanel(self._expectation, self._range_check)
        self.options = OptionsPanel()
        self.models = ModelPanel()
        self.outputs = OutputPanel()
        left.addWidget(self.inputs)
        left.addWidget(self.options)
        right.addWidget(self.models)
        right.addWidget(self.outputs)
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
        left.addStretch(1)
        right.addStretch(1)
        self.status = StatusPanel(self)     # in the dialog from the start: Run is its default button
        outer.addWidget(self.status)
        self._expose()
        self._connect()

    def _expose(self) -> None:
        """The widgets by their names (scripts and tests use them): optical_combo, steps_spin, …"""
        self.optical_combo, self.sar_combo = self.inputs.combos["optical"], self.inputs.combos["sar"]
        self.band_table, self.rescale_check = self.inputs.bands.table, self.inputs.rescale_check
        self.model_picker, self.step_picker = self.models.pickers["model"], self.models.pickers.get("step_model")
        self.output_widget, self.add_to_map = self.outputs.output_widget, self.outputs.add_to_map
        for name in ("message_label", "message_scroll", "estimate_label", "estimate_button", "device_label",
                     "status_label", "run_button", "close_button"):
            setattr(self, name, getattr(self.status, name))
        for _, _, widget, option in self.option_widgets():
            if not hasattr(self, option_widgets.attribute(option)):
                setattr(self, option_widgets.attribute(option), widget)
        self.tile_spin = self.tile_size_spin

    def option_widgets(self):
        """(tool key or "" for the shared ones, keyword, widget, option) of every option widget."""
        return self.options.widgets() + self.models.rows.items()

    def _connect(self) -> None:
        self.task_combo.currentIndexChanged.connect(self._on_task_changed)
        self.inputs.layer_changed.connect(self._on_layer_changed)
        self.inputs.bands.changed.connect(self.schedule_validate)
        self.rescale_check.toggled.connect(self.schedule_validate)
        self.models.changed.connect(self._on_model_changed)
        for _, keyword, widget, _ in self.option_widgets():
            option_widgets.changed(widget).connect(
                self._update_visibility if keyword in _DECIDING else self.schedule_validate)
        self.extent_box.extentChanged.connect(self.schedule_validate)
        self.extent_box.toggled.connect(self.schedule_validate)
        self.output_widget.fileChanged.connect(self.schedule_validate)
        self.estimate_button.clicked.connect(lambda *_: self.measure())
        self.run_button.clicked.connect(self.run)
        self.close_button.clicked.connect(self.close)
        QgsProject.instance().layersAdded.connect(self._on_project_layers)
        QgsProject.instance().layersRemoved.connect(self._on_project_layers_removed)

    # ------------------------------------------------------------------------------------
    # state
    @property
    def task(self) -> tools.ToolSpec:
        return tools.TOOLS_BY_KEY[self.task_combo.currentData() or tools.TOOLS[-1].key]

    def set_task(self, key: str) -> None:
        index = self.task_combo.findData(key)
        if index >= 0:
            self.task_combo.setCurrentIndex(index)

    def device(self) -> str:
        return self.device_combo.currentData() or "auto"

    def optical_layer(self):
        return self.inputs.layer("optical")

    def sar_layer(self):
        return self.inputs.layer("sar")

    def band_mapping(self, role: str) -> List[Optional[int]]:
        return self.inputs.bands.mapping(role)

    def set_band(self, role: str, model_band: str, raster_band: int) -> None:
        self.inputs.bands.set_band(role, model_band, raster_band)

    def values(self) -> dict:
        return {**self.options.values(self.task.key), **self.models.values(self.task.key)}

    def form(self) -> controller.Form:
        """What the widgets say, for the controller."""
        spec = self.task
        rescale = self.rescale_check.isChecked() and (self._validating or not self.rescale_check.isHidden())
        return controller.Form(spec, {role: self.inputs.info(role) for role in ("optical", "sar")},
                               {role: self.band_mapping(role) for role in ("optical", "sar")},
                               self.models.paths(), self.models.refusals(), self.values(), self.extent(),
                               self.output_path(), rescale)

    def job_kwargs(self) -> dict:
        return controller.job_kwargs(self.form())

    def value_scale(self):
        """``"auto"`` when the user opted in to scaling the optical values, else None."""
        return "auto" if not self.rescale_check.isHidden() and self.rescale_check.isChecked() else None

    def output_path(self) -> str:
        return self.outputs.output_path()

    def schedule_validate(self, *_args) -> None:
        if not self._loading:
            self.estimates.auto.stop()     # a timing due for the old settings would run on a form not yet checked
            self._revalidate.start()

    # ------------------------------------------------------------------------------------
    # reactions
    def _on_task_changed(self, *_args) -> None:
        if self._loading:
            return
        spec = self.task
        self.rescale_check.setChecked(False)   # the opt-in was for another task's model and layers
        self.task_description.setText(spec.description)
        ok, reason = tools.available(spec)
        self.availability.setText("" if ok else f"<span style='color:#b36b00'>ℹ {esc(reason)}</span>")
        self.models.set_tool(spec)
        for keyword, picker in self.models.pickers.items():
            saved = settings.saved_model(spec.key, keyword) if spec.slot(keyword) else ""
            if saved:
                picker.refresh(select=saved)
        self.models.without_missing_models(spec)
        self.inputs.set_tool(spec)
        self.inputs.restore_choices()
        self._update_extent_source()
        self._update_visibility()
        self._suggest_output()
        self.validate()

    def _update_visibility(self, *_args) -> None:
        spec, values = self.task, {**self.task.defaults(), **self.values()}
        self.inputs.set_tool(spec)
        self.models.show_for(spec, values)
        self.options.show_for(spec.key, values)
        self._fill_band_table()
        self.schedule_validate()

    def _on_layer_changed(self, role: str) -> None:
        if role == "optical":
            self.rescale_check.setChecked(False)   # scaling was accepted for another layer's values
        self._update_extent_source()
        self._suggest_output()
        self._fill_band_table()
        self.schedule_validate()

    def _on_model_changed(self, *_args) -> None:
        if not self._loading:
            self.rescale_check.setChecked(False)   # another model, another value range
            self._fill_band_table()
            self.schedule_validate()

    def _on_project_layers(self, *_args) -> None:
        try:
            self.inputs.preselect(only_if_better=True)
            self._update_extent_source()
            self._fill_band_table()
            self.schedule_validate()
        except RuntimeError:  # dialog already deleted
            pass

    def _on_project_layers_removed(self, *_args) -> None:
        # the layer combos drop a removed layer without a change signal: look again once they have
        QTimer.singleShot(0, self._after_layers_removed)

    def _after_layers_removed(self) -> None:
        try:
            self.inputs.preselect(only_if_better=True)
            self._on_layer_changed("optical")
        except RuntimeError:  # dialog already deleted
            pass

    def _expectation(self, role: str):
        return controller.expectation(self.form(), role)

    def _range_check(self, info, role: str):
        return self.checker.range_check(info, role, controller.model_card(self.form()))

    def _fill_band_table(self) -> None:
        form = self.form()
        entries = [(role, wanted, form.layer(role)) for role in controller.band_roles(form)
                   for wanted in [controller.wanted_bands(form, role)] if form.layer(role) is not None and wanted]
        self.inputs.bands.fill(entries)

    # ------------------------------------------------------------------------------------
    # extent, output
    def _update_extent_source(self) -> None:
        if self.optical_layer() is not None:
            self.extent_box.follow(self.optical_layer(), self.iface.mapCanvas() if self.iface is not None else None)

    def extent(self) -> Optional[Tuple[float, float, float, float]]:
        return self.extent_box.box()

    def _suggest_output(self) -> None:
        self.outputs.suggest(self.form(), layer_path(self.optical_layer()))

    # ------------------------------------------------------------------------------------
    # validation and estimate
    def validate(self) -> bool:
        self._validating = True
        try:
            form = self.form()
        finally:
            self._validating = False
        verdict = self.checker.validate(form, project_context(self.tasks))
        self.status.show_device(verdict.device_text, verdict.device_ok)
        self.options.set_notes(form.tool.key, verdict.notes)
        self.rescale_check.setVisible(verdict.range_flagged)
        self.messages = verdict.messages
        self.status.show_messages(self.messages, self.width())
        self.run_button.setEnabled(not verdict.errors)
        self.estimates.update()
        if not verdict.errors and self.auto_estimate:
            self.estimates.schedule(form)
        return not verdict.errors

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
            self.status.show_failure(exc)

    def errors(self) -> List[str]:
        return [text for level, text in self.messages if level == checks.ERROR]

    def measure(self, timeout: float = 600.0) -> Optional[float]:
        """Time one tile now (the Estimate button; also used by scripts and tests) and wait for it."""
        self.estimates.auto.stop()
        if not self.validate() and not self.run_button.isEnabled():
            self.estimate_label.setText(self.estimate_label.text() + " — fix the ✖ messages first")
            return None
        return self.estimates.measure(timeout)

    @property
    def last_estimate(self):
        return self.estimates.last

    @property
    def estimate_error(self) -> Optional[str]:
        return self.estimates.estimator.error

    # ------------------------------------------------------------------------------------
    # running
    def run(self):
        """Validate, then start a background task. Returns the task (None when invalid)."""
        if not self.validate():
            return None
        from ..plugin import tasks

        spec, kwargs = self.task, self.job_kwargs()
        settings.save(self)
        expected = self.last_estimate.total_seconds if self.last_estimate is not None else None
        task = tasks.SkyClearTask(spec.title, spec.name, kwargs, iface=self.iface,
                                  add_to_map=self.add_to_map.isChecked(), job=spec.job(), expected_seconds=expected)
        self.inputs.excluded.update(kwargs[o.keyword] for o in spec.outputs if kwargs.get(o.keyword))
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
        self.status.show_tasks(len(self.tasks), last)

    def shutdown(self) -> None:
        """Plugin unload / QGIS closing: cancel our tasks and keep the choices."""
        from ..plugin import tasks

        for signal, slot in ((QgsProject.instance().layersAdded, self._on_project_layers),
                             (QgsProject.instance().layersRemoved, self._on_project_layers_removed)):
            try:
                signal.disconnect(slot)
            except Exception:
                pass
        self.estimates.stop()
        settings.save(self)
        tasks.cancel_all()

    # ------------------------------------------------------------------------------------
    # size, events
    def fit_to_screen(self, available: Optional[QRect] = None) -> None:
        """Open at a size that fits the screen (buttons always on it): the preferred size where
        there is room, else the available area less a margin, never below the minimum."""
        if available is None:
            try:
                parent = self.parentWidget()
                screen = parent.screen() if parent is not None else None
            except Exception:
                screen = None
            screen = screen or QApplication.primaryScreen()
            available = screen.availableGeometry() if screen is not None else QRect(0, 0, *PREFERRED_SIZE)
        width = max(min(PREFERRED_SIZE[0], available.width() - 40), min(MINIMUM_SIZE[0], available.width()))
        height = max(min(PREFERRED_SIZE[1], available.height() - 50), min(MINIMUM_SIZE[1], available.height()))
        self.resize(width, height)
        self.move(available.x() + (available.width() - width) // 2,
                  available.y() + max(0, (available.height() - height) // 2))

    def showEvent(self, event):  # noqa: N802
        super().showEvent(event)
        self.extent_box.setCollapsed(not self.extent_box.isChecked())

    def closeEvent(self, event):  # noqa: N802
        settings.save(self)
        super().closeEvent(event)
