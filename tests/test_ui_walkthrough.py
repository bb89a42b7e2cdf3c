"""Issue 13: an analyst's first hour in QGIS, one test per problem found, with real widgets
(pytest-qgis), real rasters from ../shared/data and the bundled models of models/zoo."""
from __future__ import annotations

import os

import pytest

from qgis.core import (QgsApplication, QgsMultiBandColorRenderer, QgsProject, QgsRasterLayer, QgsSettings,
                       QgsTask)
from qgis.PyQt.QtCore import QCoreApplication, QPoint, QRect
from qgis.PyQt.QtGui import QTextDocument

from skyclear.plugin import tasks as sc_tasks
from skyclear.ui import logic
from skyclear.ui.main_dialog import SkyClearDialog

from factories import base_card, conv_model, random_image, write_raster
from test_ui_dialog import (CFOG_OPT, CFOG_SAR, DATA, S1, S2, add_layer, process_until, s2_card,  # noqa: F401
                            wait_task)

THIN = os.path.join(DATA, "thin_cloud", "pna_1_cloudy.tif")     # RGB uint8, no CRS, 384×384
ZOO = os.path.join(os.path.dirname(__file__), "..", "models", "zoo")

pytestmark = pytest.mark.skipif(not os.path.exists(S2) or not os.path.exists(THIN),
                                reason="../shared/data not available")


def rendered(markup: str) -> str:
    """What a user sees of a message bar / log text: QGIS renders it as HTML."""
    doc = QTextDocument()
    doc.setHtml(markup)
    return doc.toPlainText()


@pytest.fixture()
def clean(qgis_iface):
    QSettings = QgsSettings
    QSettings().remove("skyclear")
    project = QgsProject.instance()
    project.removeAllMapLayers()
    project.setFileName("")
    root = project.layerTreeRoot()
    if root.findGroup("SkyClear") is not None:
        root.removeChildNode(root.findGroup("SkyClear"))
    yield project
    project.removeAllMapLayers()
    project.setFileName("")
    QSettings().remove("skyclear")


@pytest.fixture()
def dialog(qgis_iface, clean):
    dlg = SkyClearDialog(qgis_iface, parent=qgis_iface.mainWindow())
    yield dlg
    sc_tasks.cancel_all()
    dlg.shutdown()
    dlg.close()
    dlg.deleteLater()
    QCoreApplication.processEvents()


def pick(combo, layer):
    """Choose ``layer`` the way a user does: select it in the combo (emits ``activated``)."""
    index = combo.model().indexFromLayer(layer) if hasattr(combo.model(), "indexFromLayer") else None
    row = combo.findText(layer.name()) if index is None else index.row()
    combo.setCurrentIndex(row)
    combo.activated.emit(row)
    assert combo.currentLayer() is layer


def all_layers():
    return {name: add_layer(path, name) for name, path in
            (("S2 L1C", S2), ("S1 VV VH", S1), ("CFOG optical", CFOG_OPT), ("CFOG SAR", CFOG_SAR),
             ("thin cloud RGB", THIN))}


# ---------------------------------------------------------------------------------------
# 1 is in test_ui_install.py


# 2. messages are HTML: text after a "<" disappeared
def test_messages_show_text_after_a_less_than_sign(dialog, qgis_iface, tmp_path):
    from qgis.core import QgsMessageLog  # noqa: F401

    logged = []
    QgsApplication.messageLog().messageReceived.connect(
        lambda msg, tag, level: logged.append(msg) if tag == "SkyClear" else None)
    image = write_raster(str(tmp_path / "small.tif"), random_image((3, 40, 40), "uint8"))
    model = conv_model(str(tmp_path / "m.onnx"), 3, 3, tile=64, overlap=8)
    layer = add_layer(image, "small")
    dialog.set_task("custom")
    assert dialog.model_picker.add_model(model)
    dialog.optical_combo.setLayer(layer)
    dialog.output_widget.setFilePath(str(tmp_path / "out.tif"))
    qgis_iface.messageBar().clear_messages()
    task = wait_task(dialog.run())
    assert task.report is not None, task.error
    assert task.report.seconds < 1.0, "the run must be sub-second for this check"
    shown = rendered(qgis_iface.messageBar().get_messages(3)[-1])
    assert "finished in < 1 s on CPUExecutionProvider (1 tile)" in shown, shown   # not "(1 tiles)"
    assert "open output folder" in shown
    process_until(lambda: any("< 1 s" in rendered(m) for m in logged), 5)
    assert any("< 1 s, provider CPUExecutionProvider" in rendered(m) for m in logged), logged


def test_missing_package_message_shows_the_whole_command(qgis_iface, clean, monkeypatch):
    import sys

    import skyclear
    from skyclear.plugin import dependencies

    plugin = skyclear.classFactory(qgis_iface)
    plugin.initGui()
    try:
        monkeypatch.setitem(sys.modules, "onnxruntime", None)      # `import onnxruntime` fails
        qgis_iface.messageBar().clear_messages()
        plugin.open_dialog()
        shown = rendered(qgis_iface.messageBar().get_messages(2)[-1])
        assert dependencies.pip_command() in shown, shown
        assert '"scikit-image==0.26.0"' in shown and "restart QGIS" in shown
        assert plugin.dialog is None
    finally:
        monkeypatch.undo()
        plugin.unload()


# 3. preselection by the card's expectations, choices kept per task, value range an error
def test_layers_fit_the_task_and_the_users_choice_is_kept(dialog):
    layers = all_layers()
    dialog.set_task("optical_cloud_removal")             # bundled DE models: 8-bit R, G, B
    assert dialog.optical_layer().dataProvider().dataType(1) != layers["S2 L1C"].dataProvider().dataType(1)
    assert dialog.optical_layer().bandCount() == 3
    dialog.set_task("fusion")                             # optical RGB + 1-band SAR: the CFOG pair
    assert dialog.optical_layer() is layers["CFOG optical"]
    assert dialog.sar_layer() is layers["CFOG SAR"]
    dialog.set_task("sar_cloud_removal")                  # 13-band S2 + VV/VH S1
    assert dialog.optical_layer() is layers["S2 L1C"] and dialog.sar_layer() is layers["S1 VV VH"]
    # the user's pick survives switching tasks back and forth
    dialog.set_task("fusion")
    pick(dialog.optical_combo, layers["thin cloud RGB"])
    dialog.set_task("sar_cloud_removal")
    assert dialog.optical_layer() is layers["S2 L1C"]
    dialog.set_task("fusion")
    assert dialog.optical_layer() is layers["thin cloud RGB"]
    assert dialog.sar_layer() is layers["CFOG SAR"]


def test_value_range_mismatch_is_an_error_unless_scaling_is_chosen(dialog, tmp_path):
    layers = all_layers()
    dialog.set_task("optical_cloud_removal")
    dialog.mode_combo.setCurrentIndex(dialog.mode_combo.findData("reference"))
    dialog.output_widget.setFilePath(str(tmp_path / "out.tif"))
    pick(dialog.optical_combo, layers["S2 L1C"])          # uint16 reflectance into an 8-bit model
    assert dialog.band_mapping("optical") == [4, 3, 2]    # the core mapper: R, G, B = B4, B3, B2
    assert not dialog.validate()
    errors = " ".join(dialog.errors())
    assert "was made for 0–255" in errors and "uint16" in errors, dialog.messages
    assert not dialog.run_button.isEnabled()
    assert dialog.rescale_check.isVisibleTo(dialog)
    dialog.rescale_check.setChecked(True)                 # the explicit opt-in
    assert dialog.validate(), dialog.messages
    assert dialog.job_kwargs()["value_scale"] == "auto"
    pick(dialog.optical_combo, layers["thin cloud RGB"])  # a fitting image: no error, no opt-in
    assert dialog.validate(), dialog.messages
    assert "value_scale" not in dialog.job_kwargs()
    assert not dialog.rescale_check.isVisibleTo(dialog)


# 4. estimate through the engine, automatically, for every task and mode
@pytest.mark.parametrize("task,mode", [("optical_cloud_removal", "diffusion"), ("optical_cloud_removal", "reference"),
                                       ("sar_cloud_removal", None), ("fusion", "laplacian"), ("fusion", "network")])
def test_estimate_appears_by_itself_for_every_task_and_mode(dialog, tmp_path, task, mode):
    all_layers()
    dialog.set_task(task)
    if task == "optical_cloud_removal":
        dialog.mode_combo.setCurrentIndex(dialog.mode_combo.findData(mode))
        dialog.steps_spin.setValue(2)
    elif task == "fusion":
        dialog.method_combo.setCurrentIndex(dialog.method_combo.findData(mode))
    dialog.output_widget.setFilePath(str(tmp_path / "out.tif"))
    assert dialog.validate(), dialog.messages
    # no click: the estimate runs one real tile in the background once the inputs settle
    assert process_until(lambda: "per tile" in dialog.estimate_label.text() or dialog.estimate_error, 180)
    assert dialog.estimate_error is None, dialog.estimate_error
    assert dialog.last_estimate.seconds_per_tile > 0
    assert not os.listdir(tmp_path)                        # the timing run wrote nothing of the user's


# 5. resizable, a sensible minimum, buttons always on screen
def test_dialog_fits_a_laptop_screen_with_buttons_visible(dialog):
    all_layers()
    dialog.set_task("optical_cloud_removal")
    dialog.mode_combo.setCurrentIndex(dialog.mode_combo.findData("diffusion"))
    assert dialog.minimumSize().width() < dialog.maximumSize().width()      # resizable
    screen = QRect(0, 0, 1280, 800)
    dialog.fit_to_screen(screen)
    dialog.show()
    QCoreApplication.processEvents()
    assert screen.contains(dialog.frameGeometry().adjusted(0, 0, 0, 0)), dialog.frameGeometry()
    for button in (dialog.run_button, dialog.close_button, dialog.estimate_button):
        corner = button.mapTo(dialog, QPoint(button.width(), button.height()))
        assert button.isVisible() and dialog.rect().contains(corner), (button.text(), corner, dialog.size())
    # the smallest size still shows the buttons
    dialog.resize(dialog.minimumSize())
    QCoreApplication.processEvents()
    corner = dialog.close_button.mapTo(dialog, QPoint(dialog.close_button.width(), dialog.close_button.height()))
    assert dialog.rect().contains(corner)
    # a 1600×1000 screen shows every diffusion option without scrolling
    dialog.fit_to_screen(QRect(0, 0, 1600, 1000))
    QCoreApplication.processEvents()
    scroll = dialog.tabs.widget(0)
    assert scroll.verticalScrollBar().maximum() == 0, (dialog.size(), scroll.widget().sizeHint())


# 6. Processing outputs styled like the dialog's
def test_processing_outputs_are_styled_and_named_like_the_dialogs(qgis_iface, qgis_processing, clean, tmp_path):
    import processing

    from skyclear.plugin.processing.provider import SkyClearProvider

    registry = QgsApplication.processingRegistry()
    provider = SkyClearProvider()
    registry.addProvider(provider)
    try:
        card = base_card(list(logic.S2_BANDS), list(logic.S2_BANDS), clip=(0, 10000), scale=10000.0,
                         out_dtype="uint16", tile=64, multiple=1, overlap=8)
        model = conv_model(str(tmp_path / "s2.onnx"), 13, 13, card=card)
        out = str(tmp_path / "s2l1c_20200823.tif")
        processing.runAndLoadResults("skyclear:run_model", {"MODEL": model, "OPTICAL": S2, "OUTPUT": out})
        loaded = [l for l in QgsProject.instance().mapLayers().values()
                  if os.path.abspath(l.source()) == os.path.abspath(out)]
        assert len(loaded) == 1
        renderer = loaded[0].renderer()
        assert isinstance(renderer, QgsMultiBandColorRenderer)
        assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (4, 3, 2)   # true colour
        assert renderer.redContrastEnhancement().maximumValue() <= 10000
        assert loaded[0].name() == "s2l1c_20200823 — result"           # as the dialog names it
        # the SAR tool's two outputs: named by what they are, the probability as an overlay
        fused = str(tmp_path / "cfog_fused.tif")
        processing.runAndLoadResults("skyclear:fuse_sar_optical", {"SAR": CFOG_SAR, "OPTICAL": CFOG_OPT,
                                                                   "METHOD": 1, "OUTPUT": fused})
        names = {l.name() for l in QgsProject.instance().mapLayers().values()}
        assert "cfog — fused" in names, names
        # the toolbox shows SkyClear › <algorithm>, named like the dialog's tasks
        algorithms = provider.algorithms()
        assert all(a.group() == "" for a in algorithms), {a.id(): a.group() for a in algorithms}
        names = {a.displayName() for a in algorithms}
        assert {t.title for t in logic.TASKS} <= names, names
    finally:
        registry.removeProvider(provider)


# 7. progress within a tile, and a cancel shown as cancelled
def test_single_tile_run_shows_progress_and_time_left(dialog, tmp_path):
    layers = all_layers()
    dialog.set_task("optical_cloud_removal")
    dialog.mode_combo.setCurrentIndex(dialog.mode_combo.findData("diffusion"))
    pick(dialog.optical_combo, layers["thin cloud RGB"])
    dialog.tile_spin.setValue(384)                          # the whole 384×384 image is one tile
    dialog.steps_spin.setValue(12)
    dialog.add_to_map.setChecked(False)
    dialog.output_widget.setFilePath(str(tmp_path / "out.tif"))
    assert dialog.measure() > 0
    assert dialog.last_estimate.tiles == 1
    task = dialog.run()
    seen = []

    def inside_tile():
        seen.append((task.progress(), task.status_text))
        return 0 < task.progress() < 100 and "left" in task.status_text

    assert process_until(inside_tile, 120), seen[-5:]
    wait_task(task, 300)
    assert task.report is not None, task.error


def test_cancel_is_reported_as_cancelled_not_failed(dialog, qgis_iface, tmp_path):
    layers = all_layers()
    model = conv_model(str(tmp_path / "m.onnx"), 13, 13, sar_channels=2, card=s2_card())
    dialog.set_task("custom")
    assert dialog.model_picker.add_model(model)
    pick(dialog.optical_combo, layers["S2 L1C"])
    pick(dialog.sar_combo, layers["S1 VV VH"])
    dialog.output_widget.setFilePath(str(tmp_path / "out.tif"))
    dialog.tile_spin.setValue(16)
    dialog.overlap_spin.setValue(4)
    terminated = []
    QgsApplication.taskManager().statusChanged.connect(
        lambda task_id, status: terminated.append(task_id) if status == QgsTask.Terminated else None)
    task = dialog.run()
    assert process_until(lambda: task.progress() > 0, 30)
    task.cancel()
    wait_task(task)
    process_until(lambda: False, 0.3)
    assert task.was_cancelled and task.report is None
    assert terminated == []                                 # QGIS shows no "Task failed"
    assert task.status_text == "cancelled"                 # the task bar line, not "Task failed"
    assert any("cancelled" in m for m in qgis_iface.messageBar().get_messages(0))
    assert dialog.status_label.text() == "Last run: cancelled"
    assert not os.path.exists(str(tmp_path / "out.tif"))


# 8. the smaller things
def test_names_cards_extent_and_output_folder(dialog, clean, tmp_path):
    layers = all_layers()
    # outputs default to the project's folder, not the home folder
    project_dir = tmp_path / "project"
    project_dir.mkdir()
    clean.setFileName(str(project_dir / "analysis.qgz"))
    dialog.set_task("fusion")
    dialog.output_widget.setFilePath("")
    dialog._suggest_output()
    assert os.path.dirname(dialog.output_path()) == str(project_dir)
    # model cards name data sets, not development paths; articles right
    dialog.set_task("optical_cloud_removal")
    card_text = dialog.model_picker.card_view.toPlainText()
    assert "Training data: RICE1, RICE2" in card_text and "shared/data" not in card_text, card_text
    reference = logic.load_card(os.path.join(ZOO, "de_reference_rice.onnx"))[0]
    refusal = logic.check_card_for_task(reference, "fusion")
    assert "is an optical cloud removal (reference network) model" in refusal
    assert "needs a SAR–optical fusion model" in refusal
    # a 3-band image for a Sentinel-2 model: the wrong product, said so
    dialog.set_task("sar_cloud_removal")
    pick(dialog.optical_combo, layers["CFOG optical"])
    dialog.validate()
    assert any("it is not the product" in e and "13-band Sentinel-2 L1C scene" in e for e in dialog.errors()), \
        dialog.messages
    assert not any("choose a raster band" in e.lower() for e in dialog.errors())
    # the extent box title says what will be processed, once
    title = dialog.extent_box.title()
    assert "whole optical layer" in title and "current:" not in title and "unchecked" not in title
    dialog.extent_box.setChecked(True)
    assert "part" in dialog.extent_box.title() and "current:" not in dialog.extent_box.title()
    dialog.extent_box.setChecked(False)
    # layer names of the results: "<input> — <what>", short enough for the Layers panel
    pick(dialog.optical_combo, layers["S2 L1C"])
    dialog.output_widget.setFilePath("")
    dialog.output_widget.setFilePath(str(tmp_path / "s2l1c_20200823_cloudfree_sar.tif"))
    assert dialog.validate(), dialog.messages
    task = wait_task(dialog.run(), 300)
    assert task.report is not None, task.error
    names = sorted(layer.name() for layer in task.layers)
    assert names == ["s2l1c_20200823 — cloud probability", "s2l1c_20200823 — cloud-free"], names
    assert all(len(n) <= 40 for n in names)
