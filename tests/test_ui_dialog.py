"""The SkyClear dialog and background tasks with real QGIS widgets (pytest-qgis, offscreen).

Real rasters come from ../shared/data (ssl4eo: cloudy Sentinel-2 L1C + Sentinel-1 on different
grids; sar_optical: a co-registered SAR/optical pair); models are tiny ONNX files built here.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from qgis.core import (QgsMultiBandColorRenderer, QgsProject, QgsRasterLayer, QgsSettings,
                       QgsSingleBandPseudoColorRenderer, QgsTask)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QImage

from skyclear.plugin import tasks as sc_tasks
from skyclear.plugin.core.model_card import band
from skyclear.ui import logic
from skyclear.ui.main_dialog import SkyClearDialog

from factories import base_card, conv_model, save_model, write_raster

DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
S2 = os.path.join(DATA, "ssl4eo", "0000200", "s2l1c_20200823.tif")       # 13 bands, uint16, EPSG:4326
S1 = os.path.join(DATA, "ssl4eo", "0000200", "s1_20200903.tif")          # VV, VH float32 dB, other grid
CFOG_SAR = os.path.join(DATA, "sar_optical", "cfog_stest3_sar.tif")       # 1 band uint8, EPSG:32633
CFOG_OPT = os.path.join(DATA, "sar_optical", "cfog_stest3_optical.tif")   # RGB uint8, EPSG:32633

pytestmark = pytest.mark.skipif(not os.path.exists(S2), reason="../shared/data not available")

TASK_KEYS = [t.key for t in logic.TASKS]


# ---------------------------------------------------------------------------------------
# helpers


def process_until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QCoreApplication.processEvents()
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def wait_task(task, timeout=60.0):
    assert process_until(lambda: task.is_done, timeout), "task did not finish"
    return task


def s2_card(task="generic", with_probability=False):
    card = base_card(list(logic.S2_BANDS), list(logic.S2_BANDS),
                     clip=(0, 10000), scale=10000.0, sar_bands=["VV", "VH"], out_dtype="uint16",
                     task=task, tile=64, multiple=1, overlap=8)
    card["inputs"][1]["bands"] = [band("VV", clip=(-25, 0), scale=25, offset=-25),
                                  band("VH", clip=(-32.5, 0), scale=32.5, offset=-32.5)]
    if with_probability:
        card["outputs"].append({"name": "cloud_probability", "dtype": "float32",
                                "bands": [band("cloud_probability", clip=(0, 1), scale=1.0)]})
    return card


def s2_model_with_probability(path, task="generic", second="cloud_probability"):
    """13-band optical + 2-band SAR in; restored S2 (optical passthrough) and a probability
    map (sigmoid of the blue-band brightness) out. With ``task="sar_cloud_removal"`` the second
    output is the clear-sky map the SAR pipeline expects."""
    t = lambda name, c: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", c, "h", "w"])  # noqa: E731
    w = numpy_helper.from_array(np.full((1, 1, 1, 1), 8.0, np.float32), "w")
    b = numpy_helper.from_array(np.full((1, 1, 1, 1), -2.0, np.float32), "b")
    nodes = [
        helper.make_node("Identity", ["optical"], ["restored"]),
        helper.make_node("Slice", ["optical", "s0", "s1", "ax"], ["blue"]),
        helper.make_node("Mul", ["blue", "w"], ["bw"]),
        helper.make_node("Add", ["bw", "b"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], [second]),
        helper.make_node("ReduceMean", ["sar"], ["sar_mean"], axes=[1], keepdims=1),
    ]
    consts = [numpy_helper.from_array(np.array([1], np.int64), "s0"),
              numpy_helper.from_array(np.array([2], np.int64), "s1"),
              numpy_helper.from_array(np.array([1], np.int64), "ax")]
    card = s2_card(task=task, with_probability=True)
    card["outputs"][1]["name"] = second
    return save_model(nodes, [t("optical", 13), t("sar", 2)], [t("restored", 13), t(second, 1)],
                      [w, b] + consts, path, card)


@pytest.fixture()
def project(qgis_iface):
    QgsProject.instance().removeAllMapLayers()
    root = QgsProject.instance().layerTreeRoot()
    group = root.findGroup("SkyClear")
    if group is not None:
        root.removeChildNode(group)
    yield QgsProject.instance()
    QgsProject.instance().removeAllMapLayers()


def add_layer(path, name=None):
    layer = QgsRasterLayer(path, name or os.path.basename(path), "gdal")
    assert layer.isValid(), path
    QgsProject.instance().addMapLayer(layer)
    return layer


@pytest.fixture()
def settings_clean():
    QgsSettings().remove("skyclear")
    yield
    QgsSettings().remove("skyclear")


@pytest.fixture()
def dialog(qgis_iface, project, settings_clean):
    dlg = SkyClearDialog(qgis_iface, parent=qgis_iface.mainWindow())
    yield dlg
    sc_tasks.cancel_all()
    dlg.shutdown()
    dlg.close()
    dlg.deleteLater()


def visible(dlg, widget):
    return widget.isVisibleTo(dlg)


# ---------------------------------------------------------------------------------------
# tests


def test_dialog_opens_from_toolbar_action(qgis_iface, project, settings_clean):
    import skyclear

    plugin = skyclear.classFactory(qgis_iface)
    plugin.initGui()
    try:
        actions = [a for a in plugin.toolbar.actions() if a.objectName() == "SkyClearOpenDialog"]
        assert len(actions) == 1
        actions[0].trigger()
        assert isinstance(plugin.dialog, SkyClearDialog)
        assert plugin.dialog.isVisible()
        assert plugin.dialog.task_combo.count() == 4
    finally:
        plugin.unload()
    assert plugin.dialog is None


def test_fields_show_and_hide_per_task(dialog):
    add_layer(S2)
    add_layer(S1)
    expected = {
        "sar_cloud_removal": dict(sar=True, steps=False, method=False, keep=True, step_model=False, model=True),
        "optical_cloud_removal": dict(sar=False, steps=True, method=False, keep=False, step_model=True, model=True),
        "fusion": dict(sar=True, steps=False, method=True, keep=False, step_model=False, model=False),
        "custom": dict(sar=True, steps=False, method=False, keep=False, step_model=False, model=True),
    }
    for key, want in expected.items():
        dialog.set_task(key)
        assert dialog.task.key == key
        if key == "optical_cloud_removal":   # the default depends on which bundled models exist
            dialog.mode_combo.setCurrentIndex(dialog.mode_combo.findData("diffusion"))
        assert visible(dialog, dialog.sar_combo) == want["sar"], key
        assert visible(dialog, dialog.steps_spin) == want["steps"], key
        assert visible(dialog, dialog.eta_spin) == want["steps"], key
        assert visible(dialog, dialog.seed_spin) == want["steps"], key
        assert visible(dialog, dialog.method_combo) == want["method"], key
        assert visible(dialog, dialog.despeckle_check) == want["method"], key
        assert visible(dialog, dialog.keep_clear_check) == want["keep"], key
        assert visible(dialog, dialog.step_picker) == want["step_model"], key
        assert visible(dialog, dialog.model_picker) == want["model"], key
    # fusion with the network method needs a model; the reference-only mode hides the diffusion fields
    dialog.set_task("fusion")
    dialog.method_combo.setCurrentIndex(dialog.method_combo.findData("network"))
    assert visible(dialog, dialog.model_picker)
    dialog.set_task("optical_cloud_removal")
    dialog.mode_combo.setCurrentIndex(dialog.mode_combo.findData("reference"))
    assert not visible(dialog, dialog.steps_spin) and not visible(dialog, dialog.step_picker)


def test_plausible_layers_and_band_table_prefilled(dialog):
    add_layer(CFOG_OPT)
    add_layer(S1)
    add_layer(S2)
    dialog.set_task("sar_cloud_removal")
    assert dialog.optical_layer().source() == S2          # the 13-band layer
    assert dialog.sar_layer().source() == S1              # the 2-band float layer
    assert dialog.band_mapping("optical") == list(range(1, 14))   # by band description B1..B12
    assert dialog.band_mapping("sar") == [1, 2]
    dialog.set_task("fusion")                             # R, G, B from a Sentinel-2: 4, 3, 2
    dialog.optical_combo.setLayer(QgsProject.instance().mapLayersByName(os.path.basename(S2))[0])
    assert dialog.band_mapping("optical") == [4, 3, 2]


def test_removing_the_chosen_layer_revalidates(dialog, tmp_path):
    s2 = add_layer(S2)
    add_layer(S1)
    add_layer(CFOG_OPT)
    dialog.set_task("sar_cloud_removal")
    dialog.output_widget.setFilePath(str(tmp_path / "clear.tif"))
    assert dialog.validate() and dialog.optical_layer().source() == S2
    QgsProject.instance().removeMapLayer(s2.id())
    # the combo falls back to another layer; the band table and the verdict follow it
    process_until(lambda: not dialog.run_button.isEnabled(), timeout=10)
    assert dialog.optical_layer() is None or dialog.optical_layer().source() != S2
    assert dialog.errors(), dialog.messages
    assert all(path != S2 for _, _, path, _ in dialog.inputs.bands.rows)


def test_scaling_opt_in_does_not_carry_over_and_band_choices_show(dialog, tmp_path):
    add_layer(S2)
    add_layer(S1)
    dialog.set_task("sar_cloud_removal")
    dialog.rescale_check.setChecked(True)
    dialog.set_task("fusion")
    dialog.set_task("sar_cloud_removal")
    assert not dialog.rescale_check.isChecked()
    assert "by band descriptions" in dialog.inputs.bands.note.text()
    dialog.set_band("optical", "B4", 0)
    assert "chosen in the table" in dialog.inputs.bands.note.text()
    dialog.validate()
    assert any("no raster band chosen for B4" in text for _, text in dialog.messages), dialog.messages
    # a .png name is refused as in headless runs, not silently written as name.png.tif
    dialog.output_widget.setFilePath(str(tmp_path / "clear.png"))
    dialog.validate()
    assert any("writes GeoTIFF, not PNG" in text for _, text in dialog.messages), dialog.messages


def test_validation_messages(dialog, tmp_path):
    import rasterio
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    model = conv_model(str(tmp_path / "m.onnx"), 13, 13, sar_channels=2, card=s2_card())
    rgb = add_layer(CFOG_OPT)
    s1 = add_layer(S1)
    far_sar = add_layer(CFOG_SAR, "far_sar")
    dialog.set_task("custom")
    assert dialog.model_picker.add_model(model)
    dialog.output_widget.setFilePath(str(tmp_path / "out.tif"))

    # wrong band count: a 3-band optical raster for a 13-band model
    dialog.optical_combo.setLayer(rgb)
    dialog.sar_combo.setLayer(s1)
    dialog.validate()
    # (the wrong product, said as such: not "choose 13 bands")
    assert any("has 3 bands (uint8): it is not the product model 'test-model' works on "
               "(a 13-band Sentinel-2 L1C scene (B1…B12))" in e for e in dialog.errors()), dialog.messages
    assert not dialog.run_button.isEnabled()
    assert "13-band Sentinel-2" in dialog.message_label.text()

    # no overlap (India vs central Europe) and a CRS difference announced
    s2 = add_layer(S2)
    dialog.optical_combo.setLayer(s2)
    dialog.sar_combo.setLayer(far_sar)
    dialog.validate()
    assert any("does not overlap the optical raster" in e for e in dialog.errors()), dialog.messages   # the engine's check
    assert any("reprojected to the optical grid" in text for _, text in dialog.messages)

    # SAR in UTM over the same place: overlap fine, reprojection announced, no error
    utm = str(tmp_path / "s1_utm.tif")
    with rasterio.open(S1) as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:32643", src.width, src.height,
                                                               *src.bounds)
        profile = src.profile.copy()
        profile.update(crs="EPSG:32643", transform=transform, width=width, height=height)
        with rasterio.open(utm, "w", **profile) as dst:
            for i in range(1, src.count + 1):
                reproject(rasterio.band(src, i), rasterio.band(dst, i), resampling=Resampling.bilinear)
            dst.descriptions = src.descriptions
    dialog.sar_combo.setLayer(add_layer(utm, "s1_utm"))
    dialog.validate()
    assert dialog.errors() == [], dialog.messages
    assert any("EPSG:32643; it will be reprojected to the optical grid (EPSG:4326)" in t for _, t in dialog.messages)
    assert dialog.run_button.isEnabled()

    # a model made for another task is refused with a clear message
    dialog.set_task("fusion")
    dialog.method_combo.setCurrentIndex(dialog.method_combo.findData("network"))
    assert not dialog.model_picker.add_model(model) is None
    assert dialog.model_picker.refusal and "generic" in dialog.model_picker.refusal
    assert "SAR–optical fusion" in dialog.model_picker.refusal
    dialog.validate()
    assert any("card task 'generic'" in e for e in dialog.errors())

    # overlap >= tile, GPU on a CPU-only machine, missing output folder
    dialog.set_task("custom")
    dialog.tile_spin.setValue(64)
    dialog.overlap_spin.setValue(64)
    dialog.output_widget.setFilePath(str(tmp_path / "missing" / "out.tif"))
    dialog.validate()
    errors = " ".join(dialog.errors())
    assert "must be smaller than the tile size" in errors
    assert "Output folder does not exist" in errors
    from skyclear.plugin.core.runtime import gpu_status

    if not gpu_status()[0]:
        dialog.device_combo.setCurrentIndex(dialog.device_combo.findData("gpu"))
        dialog.validate()
        assert any("GPU requested but not available" in e for e in dialog.errors())
        assert "not available" in dialog.device_label.text()


def _prepare_custom_run(dialog, tmp_path, model):
    s2 = add_layer(S2)
    s1 = add_layer(S1)
    dialog.set_task("custom")
    assert dialog.model_picker.add_model(model)
    dialog.optical_combo.setLayer(s2)
    dialog.sar_combo.setLayer(s1)
    out = str(tmp_path / "result.tif")
    dialog.output_widget.setFilePath(out)
    return out


def test_run_through_task_manager_adds_styled_layers(dialog, qgis_iface, tmp_path):
    model = s2_model_with_probability(str(tmp_path / "cr.onnx"))
    out = _prepare_custom_run(dialog, tmp_path, model)
    dialog.tile_spin.setValue(128)
    dialog.overlap_spin.setValue(16)
    assert dialog.validate(), dialog.messages
    est = dialog.measure()
    assert est is not None and est > 0
    assert "9 tiles" in dialog.estimate_label.text() and "s per tile" in dialog.estimate_label.text()
    qgis_iface.messageBar().clear_messages()
    task = dialog.run()
    assert task is not None
    wait_task(task)
    assert task.report is not None, task.error
    assert os.path.exists(out)
    prob = out.replace(".tif", "_cloud_probability.tif")
    assert os.path.exists(prob)
    group = QgsProject.instance().layerTreeRoot().findGroup("SkyClear")
    assert group is not None
    layers = [node.layer() for node in group.findLayers()]
    assert len(layers) == 2
    by_source = {layer.source(): layer for layer in layers}
    image, probability = by_source[out], by_source[prob]
    assert isinstance(image.renderer(), QgsMultiBandColorRenderer)
    assert (image.renderer().redBand(), image.renderer().greenBand(), image.renderer().blueBand()) == (4, 3, 2)
    ce = image.renderer().redContrastEnhancement()
    assert 0 <= ce.minimumValue() < ce.maximumValue() <= 10000
    assert isinstance(probability.renderer(), QgsSingleBandPseudoColorRenderer)
    assert probability.renderer().opacity() < 1
    items = probability.renderer().shader().rasterShaderFunction().colorRampItemList()
    assert items[0].color.alpha() == 0 and items[-1].color.alpha() > 200
    assert group.findLayers()[0].layer() is probability          # probability drawn above the image
    # this pair's SAR grid is offset by a few pixels: the run warns that 2 % of the output is nodata,
    # so it ends with a warning-level message instead of a success one
    assert [w for w in task.warnings if "covers only 98 % of the optical raster" in w], task.warnings
    messages = qgis_iface.messageBar().get_messages(1)         # Qgis.Warning
    assert messages and "finished" in messages[-1] and "CPUExecutionProvider" in messages[-1] \
        and "1 warning" in messages[-1] and "open output folder" in messages[-1]
    assert task.status_text.startswith("100%")
    # a second run over the same file replaces the layers instead of duplicating them
    dialog.validate()
    assert any("will be replaced" in text for _, text in dialog.messages), dialog.messages
    assert dialog.errors() == [], dialog.messages
    wait_task(dialog.run())
    assert len(group.findLayers()) == 2


def test_sar_cloud_removal_task_runs(dialog, tmp_path):
    """The SAR-assisted task (jobs.remove_clouds_sar) with a model carded for it."""
    model = s2_model_with_probability(str(tmp_path / "ibhfn.onnx"), task="sar_cloud_removal", second="clear")
    s2, s1 = add_layer(S2), add_layer(S1)
    dialog.set_task("sar_cloud_removal")
    assert dialog.model_picker.add_model(model)
    dialog.optical_combo.setLayer(s2)
    dialog.sar_combo.setLayer(s1)
    out = str(tmp_path / "cloudfree.tif")
    dialog.output_widget.setFilePath(out)
    dialog.keep_clear_check.setChecked(True)
    assert dialog.validate(), dialog.messages
    kwargs = dialog.job_kwargs()
    assert kwargs["keep_clear"] is True and kwargs["cloud_probability"].endswith("cloudfree_cloud_probability.tif")
    task = wait_task(dialog.run())
    assert task.report is not None, task.error
    kinds = {os.path.basename(l.source()): type(l.renderer()).__name__ for l in task.layers}
    assert kinds == {"cloudfree.tif": "QgsMultiBandColorRenderer",
                     "cloudfree_cloud_probability.tif": "QgsSingleBandPseudoColorRenderer"}


def test_run_on_an_extent(dialog, tmp_path):
    import rasterio
    from qgis.core import QgsRectangle

    model = conv_model(str(tmp_path / "m.onnx"), 13, 13, sar_channels=2, card=s2_card())
    out = _prepare_custom_run(dialog, tmp_path, model)
    e = dialog.optical_layer().extent()
    half = QgsRectangle(e.xMinimum(), e.yMinimum(), e.center().x(), e.yMaximum())   # western half
    dialog.extent_box.setChecked(True)
    dialog.extent_box.setOutputExtentFromUser(half, dialog.optical_layer().crs())
    assert dialog.extent() == pytest.approx((half.xMinimum(), half.yMinimum(), half.xMaximum(), half.yMaximum()))
    assert dialog.validate(), dialog.messages
    assert "132×264 px" in dialog.estimate_label.text()
    task = wait_task(dialog.run())
    assert task.report is not None, task.error
    with rasterio.open(out) as ds, rasterio.open(S2) as src:
        assert ds.width in (src.width // 2, src.width // 2 + 1) and ds.height == src.height   # whole pixels covering it
        assert ds.bounds.left == pytest.approx(src.bounds.left)


def test_two_tasks_at_once(dialog, tmp_path):
    model = conv_model(str(tmp_path / "m.onnx"), 13, 13, sar_channels=2, card=s2_card())

    def choose_fusion():
        dialog.set_task("fusion")
        dialog.method_combo.setCurrentIndex(dialog.method_combo.findData("laplacian"))
        dialog.optical_combo.setLayer(add_layer(CFOG_OPT))
        dialog.sar_combo.setLayer(add_layer(CFOG_SAR))
        dialog.output_widget.setFilePath(str(tmp_path / "fused.tif"))
        dialog.add_to_map.setChecked(True)

    choose_fusion()
    assert dialog.validate(), dialog.messages
    assert dialog.measure() > 0                        # the classical processor on one real-size tile
    assert "s per tile" in dialog.estimate_label.text()
    out = _prepare_custom_run(dialog, tmp_path, model)
    dialog.add_to_map.setChecked(False)
    first = dialog.run()
    dialog.validate()        # same output as a task not finished yet (finished() runs later, on this thread)
    assert any("A running task is writing result.tif" in e for e in dialog.errors()), dialog.messages
    # meanwhile, a classical SAR-optical fusion of the CFOG pair, added to the map
    choose_fusion()
    assert dialog.validate(), dialog.messages
    second = dialog.run()
    assert first is not None and second is not None
    assert len(dialog.tasks) == 2
    wait_task(first)
    wait_task(second)
    assert first.report is not None and second.report is not None, (first.error, second.error)
    assert os.path.exists(out) and os.path.exists(str(tmp_path / "fused.tif"))
    assert first.layers == []                          # "add to map" was off for the first run
    group = QgsProject.instance().layerTreeRoot().findGroup("SkyClear")
    layers = [node.layer() for node in group.findLayers()]
    assert [os.path.basename(l.source()) for l in layers] == ["fused.tif"]
    renderer = layers[0].renderer()
    assert isinstance(renderer, QgsMultiBandColorRenderer)
    assert (renderer.redBand(), renderer.greenBand(), renderer.blueBand()) == (1, 2, 3)


def test_cancel_leaves_no_output_and_no_layer(dialog, qgis_iface, tmp_path):
    model = conv_model(str(tmp_path / "m.onnx"), 13, 13, sar_channels=2, card=s2_card())
    out = _prepare_custom_run(dialog, tmp_path, model)
    dialog.tile_spin.setValue(16)      # hundreds of small tile batches
    dialog.overlap_spin.setValue(4)
    layers_before = set(QgsProject.instance().mapLayers())
    task = dialog.run()
    assert process_until(lambda: task.progress() > 0, 30), "task never started"
    task.cancel()
    wait_task(task)
    assert task.was_cancelled and task.report is None
    assert not os.path.exists(out)
    assert not [f for f in os.listdir(tmp_path) if f.startswith("result")], os.listdir(tmp_path)
    assert set(QgsProject.instance().mapLayers()) == layers_before
    assert any("cancelled" in m for m in qgis_iface.messageBar().get_messages(0))


def test_cancel_all_on_unload(dialog, tmp_path):
    model = conv_model(str(tmp_path / "m.onnx"), 13, 13, sar_channels=2, card=s2_card())
    out = _prepare_custom_run(dialog, tmp_path, model)
    dialog.tile_spin.setValue(16)
    dialog.overlap_spin.setValue(4)
    task = dialog.run()
    assert process_until(lambda: task.progress() > 0, 30)
    dialog.shutdown()                      # what the plugin's unload() calls
    assert task.status() in (QgsTask.Terminated, QgsTask.Complete)
    process_until(lambda: not sc_tasks.running(), 10)
    assert not os.path.exists(out)


def test_plugin_unload_cancels_running_task(qgis_iface, project, settings_clean, tmp_path):
    import skyclear

    model = conv_model(str(tmp_path / "m.onnx"), 13, 13, sar_channels=2, card=s2_card())
    plugin = skyclear.classFactory(qgis_iface)
    plugin.initGui()
    try:
        plugin.open_dialog()
        out = _prepare_custom_run(plugin.dialog, tmp_path, model)
        plugin.dialog.tile_spin.setValue(16)
        plugin.dialog.overlap_spin.setValue(4)
        task = plugin.dialog.run()
        assert process_until(lambda: task.progress() > 0, 30)
        assert "left" in task.status_text or "%" in task.status_text      # progress text with ETA
    finally:
        plugin.unload()
    assert process_until(lambda: task.is_done, 30)
    assert task.was_cancelled and not os.path.exists(out)
    assert not sc_tasks.running()


def test_errors_go_to_message_bar_and_log(dialog, qgis_iface, tmp_path):
    from qgis.core import QgsApplication

    logged = []
    QgsApplication.messageLog().messageReceived.connect(
        lambda msg, tag, level: logged.append((tag, msg)) if tag == "SkyClear" else None)
    qgis_iface.messageBar().clear_messages()
    task = sc_tasks.SkyClearTask("Broken run", "run_model",
                                 dict(model=str(tmp_path / "nothing.onnx"), optical=S2,
                                      output=str(tmp_path / "x.tif")), iface=qgis_iface)
    sc_tasks.start(task)
    wait_task(task)
    assert task.error and "not found" in task.error
    critical = qgis_iface.messageBar().get_messages(2)
    assert critical and "Broken run failed" in critical[-1]
    process_until(lambda: logged, 5)
    assert any("Traceback" in msg for _, msg in logged)


def test_run_warnings_reach_the_log_and_the_message_bar(qgis_iface, tmp_path):
    """The core warns on its I/O thread (here: an undeclared all-zero Sentinel-2 border); the
    dialog's task shows it in the SkyClear log and turns the success message into a warning."""
    import rasterio
    from qgis.core import Qgis, QgsApplication

    scene = os.path.join(DATA, "sen12mscr_s1_cloudy", "ROIs1868_summer_19_p30")
    if not os.path.exists(os.path.join(scene, "s2_cloudy.tif")):
        pytest.skip("../shared/data is not present")
    with rasterio.open(os.path.join(scene, "s2_cloudy.tif")) as ds:
        profile, data = ds.profile, ds.read()
    data[:, :, :16] = 0                                          # a swath border, no nodata declared
    optical = str(tmp_path / "s2_border.tif")
    with rasterio.open(optical, "w", **profile) as out:
        out.write(data)
    logged = []
    QgsApplication.messageLog().messageReceived.connect(
        lambda msg, tag, level: logged.append((level, msg)) if tag == "SkyClear" else None)
    qgis_iface.messageBar().clear_messages()
    task = sc_tasks.SkyClearTask("Border run", "remove_clouds_sar",
                                 dict(optical=optical, sar=os.path.join(scene, "s1.tif"),
                                      output=str(tmp_path / "clear.tif"), device="cpu", tile_size=128),
                                 iface=qgis_iface, add_to_map=False)
    sc_tasks.start(task)
    wait_task(task, 120)
    assert task.report is not None, task.error
    assert len(task.warnings) == 1 and "declares no nodata" in task.warnings[0]
    assert process_until(lambda: any("declares no nodata" in m for lvl, m in logged if lvl == Qgis.Warning), 5)
    shown = qgis_iface.messageBar().get_messages(Qgis.Warning)
    assert shown and "1 warning" in shown[-1]


def test_settings_persist(qgis_iface, project, settings_clean, tmp_path):
    dlg = SkyClearDialog(qgis_iface)
    dlg.set_task("optical_cloud_removal")
    dlg.steps_spin.setValue(25)
    dlg.eta_spin.setValue(0.45)
    dlg.seed_spin.setValue(7)
    dlg.device_combo.setCurrentIndex(dlg.device_combo.findData("cpu"))
    dlg.tile_spin.setValue(256)
    dlg.add_to_map.setChecked(False)
    dlg.method_combo.setCurrentIndex(dlg.method_combo.findData("guided"))
    dlg.output_widget.setFilePath(str(tmp_path / "x.tif"))
    dlg.close()
    again = SkyClearDialog(qgis_iface)
    try:
        assert again.task.key == "optical_cloud_removal"
        assert again.steps_spin.value() == 25
        assert abs(again.eta_spin.value() - 0.45) < 1e-9
        assert again.seed_spin.value() == 7
        assert again.device() == "cpu"
        assert again.tile_spin.value() == 256
        assert not again.add_to_map.isChecked()
        assert again.method_combo.currentData() == "guided"
        assert QgsSettings().value("skyclear/output_dir") == str(tmp_path)
    finally:
        again.close()
        dlg.deleteLater()
        again.deleteLater()


def test_dependencies_panel(dialog):
    html = dialog.dependencies.browser.toHtml()
    for name in ("numpy", "rasterio", "onnxruntime", "pip install", "OSGeo4W", "QGIS.app"):
        assert name in html, name


def _not_blank(path):
    image = QImage(path)
    assert not image.isNull()
    assert image.width() > 400 and image.height() > 300
    ptr = image.convertToFormat(QImage.Format_RGB32).constBits()
    ptr.setsize(image.width() * image.height() * 4)
    pixels = np.frombuffer(bytes(ptr), np.uint8).reshape(image.height(), image.width(), 4)[..., :3]
    assert pixels.std() > 10, "image looks blank"
    colours = np.unique(pixels.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 20, "image looks blank"


def test_screenshots_of_each_task(dialog, tmp_path):
    add_layer(S2)
    add_layer(S1)
    add_layer(CFOG_OPT)
    add_layer(CFOG_SAR)
    dialog.show()
    folder = tmp_path / "screenshots"
    folder.mkdir()
    for key in TASK_KEYS:
        dialog.set_task(key)
        dialog.validate()
        QCoreApplication.processEvents()
        path = str(folder / f"dialog_{key}.png")
        assert dialog.grab().save(path)
        _not_blank(path)
    assert len(os.listdir(folder)) == len(TASK_KEYS)


def test_probability_layer_top_is_not_fooled_by_a_sample(qgis_app, tmp_path):
    """A 0-100 % map whose only cloud is too small for the styling's sample: the top of the colour
    ramp comes from the range the engine declares, else from the whole band."""
    import rasterio

    from skyclear.plugin.layers import probability_renderer

    data = np.ones((1, 2000, 2000), np.float32)   # 1 % almost everywhere
    data[0, 100:140, 100:140] = 95
    tagged = write_raster(str(tmp_path / "a_cloud_probability.tif"), data)
    with rasterio.open(tagged, "r+") as ds:
        ds.update_tags(SKYCLEAR_VALUE_RANGE="0,255")  # declared (a 0-255 model whose clouds were at most 95)
    untagged = write_raster(str(tmp_path / "b_cloud_probability.tif"), data)
    for path, top in ((tagged, 255), (untagged, 100)):
        assert probability_renderer(QgsRasterLayer(path, "p")).classificationMax() == top, path
