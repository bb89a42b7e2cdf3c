"""The dialog's Qt-free controller: validation with the core's checks, the job call built from
the registry, and the estimate through the engine. No Qt, no QGIS, no display: synthetic
GeoTIFFs and tiny ONNX models made here."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

from skyclear.plugin.core import tools
from skyclear.plugin.core.engine import resolve_tiling
from skyclear.plugin.core.model_card import parse_card
from skyclear.plugin.core.runtime import gpu_status
from skyclear.plugin.core.tiling import TileGrid
from skyclear.ui import checks, controller, logic
from skyclear.ui.controller import Form

from factories import base_card, conv_model, identity_model, random_image, write_raster

UTM = "EPSG:32633"


@pytest.fixture()
def scene(tmp_path):
    """An RGB uint8 optical raster and a 1-band SAR on the same grid; a SAR far away."""
    from rasterio.transform import from_origin

    optical = write_raster(str(tmp_path / "optical.tif"), random_image((3, 150, 200), "uint8", seed=1),
                           descriptions=["R", "G", "B"])
    sar = write_raster(str(tmp_path / "sar.tif"), random_image((1, 150, 200), "uint8", seed=2))
    far = write_raster(str(tmp_path / "far.tif"), random_image((1, 50, 50), "uint8", seed=3),
                       transform=from_origin(900000, 100000, 10, 10))
    half = write_raster(str(tmp_path / "half.tif"), random_image((1, 150, 100), "uint8", seed=4))
    return {name: logic.layer_info_from_file(path) for name, path in
            (("optical", optical), ("sar", sar), ("far", far), ("half", half))}


def form(tool_key, tmp_path, optical=None, sar=None, **kw):
    spec = tools.tool(tool_key)
    values = {o.keyword: o.first_choice for o in spec.all_options() if o.in_dialog}
    values.update(kw.pop("values", {}))
    return Form(spec, {"optical": optical, "sar": sar}, kw.pop("bands", {}), kw.pop("models", {}), {},
                values, kw.pop("extent", None), kw.pop("output", str(tmp_path / "out.tif")), kw.pop("rescale", False))


def errors(verdict):
    return " | ".join(verdict.errors)


def test_controller_and_checks_run_without_qt(tmp_path):
    code = ("import sys\n"
            "from skyclear.plugin.core import tools\n"
            "from skyclear.ui import checks, controller\n"
            "f = controller.Form(tools.tool('fusion'), values={'method': 'laplacian'}, output='/nonexistent/x.tif')\n"
            "v = checks.Checker().validate(f)\n"
            "assert any('Choose an optical raster layer' in e for e in v.errors), v.errors\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('qgis', 'PyQt5', 'PyQt6', 'sip')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, QT_QPA_PLATFORM="", DISPLAY=""))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


def test_classical_fusion_is_ready_and_its_call_comes_from_the_registry(scene, tmp_path):
    f = form("fusion", tmp_path, scene["optical"], scene["sar"], values={"method": "laplacian"},
             bands={"optical": [1, 2, 3], "sar": [1]})
    verdict = checks.Checker().validate(f)
    assert verdict.errors == [], verdict.messages
    assert verdict.device_ok and "CPUExecutionProvider" in verdict.device_text or "GPU" in verdict.device_text
    kwargs = controller.job_kwargs(f)
    assert "model" not in kwargs                      # the classical method uses no model slot
    assert kwargs["method"] == "laplacian" and kwargs["despeckle"] is False
    assert kwargs["optical"] == scene["optical"].path and kwargs["sar"] == scene["sar"].path
    assert kwargs["sar_bands"] == [1] and kwargs["optical_bands"] == [1, 2, 3]
    # every keyword is one the job takes
    accepted = set(inspect.signature(tools.tool("fusion").job()).parameters)
    assert set(kwargs) <= accepted, set(kwargs) - accepted


def test_options_in_use_only_and_further_outputs(scene, tmp_path):
    reference = controller.job_kwargs(form("optical_cloud_removal", tmp_path, scene["optical"],
                                           values={"mode": "reference"}, models={"model": "/m.onnx"}))
    assert reference["mode"] == "reference"
    assert not {"steps", "eta", "seed", "step_model"} & set(reference)
    diffusion = controller.job_kwargs(form("optical_cloud_removal", tmp_path, scene["optical"],
                                           values={"mode": "diffusion", "steps": 3}, models={"model": "/m.onnx"}))
    assert diffusion["steps"] == 3 and diffusion["eta"] is None and "step_model" in diffusion  # None = the card's value
    sar = controller.job_kwargs(form("sar_cloud_removal", tmp_path, scene["optical"], scene["sar"],
                                     values={"keep_clear": True}, output=str(tmp_path / "clear.tif")))
    assert sar["cloud_probability"] == str(tmp_path / "clear_cloud_probability.tif")
    assert sar["keep_clear"] is True and sar["clear_threshold"] == 0.5
    for key, kwargs in (("optical_cloud_removal", diffusion), ("sar_cloud_removal", sar)):
        assert set(kwargs) <= set(inspect.signature(tools.tool(key).job()).parameters)


def test_grid_alignment_and_extent_are_the_engines_checks(scene, tmp_path):
    checker = checks.Checker()
    far = checker.validate(form("fusion", tmp_path, scene["optical"], scene["far"], values={"method": "average"}))
    assert "does not overlap the optical raster" in errors(far)
    half = checker.validate(form("fusion", tmp_path, scene["optical"], scene["half"], values={"method": "average"}))
    assert half.errors == [], half.messages
    assert any("covers only 50%" in text for level, text in half.messages if level == checks.WARNING)
    e = scene["optical"].extent
    outside = (e[2] + 100, e[1], e[2] + 500, e[3])
    missed = checker.validate(form("fusion", tmp_path, scene["optical"], scene["sar"], extent=outside,
                                   values={"method": "average"}))
    assert "the chosen extent" in errors(missed).lower() and "does not overlap" in errors(missed)
    # a SAR the model does not take is ignored, so its grid cannot block the run
    plain = identity_model(str(tmp_path / "plain.onnx"), 3, tile=64, overlap=8)
    ignored = checker.validate(form("custom", tmp_path, scene["optical"], scene["far"], models={"model": plain}))
    assert "does not overlap" not in errors(ignored) and ignored.errors == [], ignored.messages


def test_output_over_an_input_is_refused_without_a_replace_warning(scene, tmp_path):
    f = form("fusion", tmp_path, scene["optical"], scene["sar"], values={"method": "average"},
             output=scene["optical"].path)
    verdict = checks.Checker().validate(f, checks.Context(open_layers={os.path.abspath(scene["optical"].path): "opt"}))
    assert "would destroy the input" in errors(verdict)
    assert not any("will be replaced" in text for _, text in verdict.messages), verdict.messages


def test_a_small_image_gets_one_tile_of_its_own_size(scene, tmp_path):
    model = identity_model(str(tmp_path / "m.onnx"), 3, tile=64, overlap=8)
    f = form("custom", tmp_path, scene["optical"], models={"model": model}, values={"tile_size": 1024})
    assert controller.tiling(f, controller.model_card(f)) == (200, 8)   # 150 x 200 px: one 200 px tile


def test_models_tiling_device_and_output(scene, tmp_path):
    generic = identity_model(str(tmp_path / "generic.onnx"), 3, tile=64, overlap=8)
    checker = checks.Checker()
    # a generic model in the SAR tool: refused, naming where it fits
    wrong = checker.validate(form("sar_cloud_removal", tmp_path, scene["optical"], scene["sar"],
                                  models={"model": generic}))
    assert "card task 'generic'" in errors(wrong) and "Run custom model" in errors(wrong)
    no_model = checker.validate(form("custom", tmp_path, scene["optical"]))
    assert "No model is available for this task yet" in errors(no_model)
    # overlap >= tile: the engine's own tiling check
    f = form("custom", tmp_path, scene["optical"], models={"model": generic},
             values={"tile_size": 64, "overlap": 64})
    assert "must be smaller than the tile size" in errors(checker.validate(f))
    # output folder missing, and an output that is an input
    f = form("custom", tmp_path, scene["optical"], models={"model": generic},
             output=str(tmp_path / "missing" / "out.tif"))
    assert "Output folder does not exist" in errors(checker.validate(f))
    f = form("custom", tmp_path, scene["optical"], models={"model": generic}, output=scene["optical"].path)
    assert "is the optical input" in errors(checker.validate(f))
    ok = checker.validate(form("custom", tmp_path, scene["optical"], models={"model": generic}))
    assert ok.errors == [], ok.messages
    if not gpu_status()[0]:
        gpu = checker.validate(form("custom", tmp_path, scene["optical"], models={"model": generic},
                                    values={"device": "gpu"}))
        assert "GPU requested but not available" in errors(gpu) and not gpu.device_ok


def test_sar_model_needs_sar_and_ignores_it_otherwise(scene, tmp_path):
    checker = checks.Checker()
    with_sar = conv_model(str(tmp_path / "sar.onnx"), 3, 3, sar_channels=1, tile=64, overlap=8)
    without = identity_model(str(tmp_path / "plain.onnx"), 3, tile=64, overlap=8)
    needs = checker.validate(form("custom", tmp_path, scene["optical"], models={"model": with_sar}))
    assert "needs a SAR raster" in errors(needs)
    ignored = form("custom", tmp_path, scene["optical"], scene["sar"], models={"model": without})
    verdict = checker.validate(ignored)
    assert any("the SAR layer is ignored" in t for level, t in verdict.messages if level == checks.WARNING)
    assert "sar" not in controller.job_kwargs(ignored)


def test_wrong_product_and_value_range(tmp_path):
    s2 = [f"B{i}" for i in (1, 2, 3, 4, 5, 6, 7, 8)] + ["B8A", "B9", "B10", "B11", "B12"]
    model = conv_model(str(tmp_path / "s2.onnx"), 13, 13, card=base_card(s2, s2, clip=(0, 10000), scale=10000.0,
                                                                             out_dtype="uint16"))
    rgb = logic.layer_info_from_file(write_raster(str(tmp_path / "rgb.tif"), random_image((3, 80, 80), "uint8")))
    verdict = checks.Checker().validate(form("custom", tmp_path, rgb, models={"model": model}))
    assert "it is not the product model 'test-model' works on (a 13-band Sentinel-2 L1C scene" in errors(verdict)
    # 16-bit reflectance into an 8-bit model: an error unless the user opts in to scaling
    eight = identity_model(str(tmp_path / "rgb8.onnx"), 3, tile=64, overlap=8)
    dn = logic.layer_info_from_file(write_raster(str(tmp_path / "dn.tif"),
                                                 random_image((3, 80, 80), "uint16", low=500, high=9000)))
    refused = checks.Checker().validate(form("custom", tmp_path, dn, models={"model": eight}))
    assert "was made for 0–255" in errors(refused) and refused.range_flagged
    scaled_form = form("custom", tmp_path, dn, models={"model": eight}, rescale=True)
    scaled = checks.Checker().validate(scaled_form)
    assert scaled.errors == [] and scaled.range_flagged, scaled.messages
    assert controller.job_kwargs(scaled_form)["value_scale"] == "auto"


def test_values_in_another_unit_are_named_in_the_dialog(tmp_path):
    eight = identity_model(str(tmp_path / "rgb8.onnx"), 3, tile=64, overlap=8)
    unit = logic.layer_info_from_file(write_raster(
        str(tmp_path / "unit.tif"), (random_image((3, 80, 80), "uint8") / 255.0).astype("float32")))
    refused = checks.Checker().validate(form("custom", tmp_path, unit, models={"model": eight}))
    assert "look scaled to 0–1" in errors(refused) and "flat" not in errors(refused) and refused.range_flagged
    scaled = checks.Checker().validate(form("custom", tmp_path, unit, models={"model": eight}, rescale=True))
    assert scaled.errors == [] and any("×255" in t for _, t in scaled.messages), scaled.messages


def test_dialog_refuses_more_steps_than_the_step_model_takes(scene, tmp_path):
    zoo = os.path.join(os.path.dirname(__file__), "..", "models", "zoo")
    models = {"model": os.path.join(zoo, "de_reference_rice.onnx"), "step_model": os.path.join(zoo, "de_step_rice.onnx")}
    too_many = checks.Checker().validate(form("optical_cloud_removal", tmp_path, scene["optical"], models=models,
                                              values={"mode": "diffusion", "steps": 302}))
    assert "Diffusion steps must be between 1 and 301 for this step model" in errors(too_many)
    fine = checks.Checker().validate(form("optical_cloud_removal", tmp_path, scene["optical"], models=models,
                                          values={"mode": "diffusion", "steps": 301}))
    assert "Diffusion steps" not in errors(fine)


def test_tiles_that_need_more_than_half_the_memory_are_warned_about(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    path = str(tmp_path / "large.tif")   # 20 000² px, header and empty tiles only
    with rasterio.open(path, "w", driver="GTiff", width=20000, height=20000, count=3, dtype="uint8", tiled=True,
                       crs="EPSG:32633", transform=from_origin(500000, 5000000, 10, 10), SPARSE_OK=True):
        pass
    large = logic.layer_info_from_file(path)
    model = identity_model(str(tmp_path / "m.onnx"), 3, tile=64, overlap=8)
    if checks.physical_memory_mb() is None or checks.physical_memory_mb() > 256 * 1024:
        pytest.skip("needs a POSIX machine with less than 256 GB of memory")
    # a batch of 4 tiles of 16384² × 6 channels in float32 with activations: ~150 GB
    warned = checks.Checker().validate(form("custom", tmp_path, large, models={"model": model},
                                            values={"tile_size": 16384}))
    assert any("choose a smaller tile size" in t for level, t in warned.messages if level == checks.WARNING), \
        warned.messages
    fine = checks.Checker().validate(form("custom", tmp_path, large, models={"model": model}, values={"tile_size": 512}))
    assert not any("choose a smaller tile size" in t for _, t in fine.messages)


def test_estimate_counts_the_engines_tiles_and_times_a_real_tile(scene, tmp_path):
    model = conv_model(str(tmp_path / "m.onnx"), 3, 3, tile=64, overlap=8)
    f = form("custom", tmp_path, scene["optical"], models={"model": model}, values={"tile_size": 64})
    estimator = controller.Estimator()
    est, text = estimator.estimate(f)
    card = parse_card(controller.model_card(f).to_dict())
    tile, overlap = resolve_tiling(card, 64, None)
    assert est.tiles == len(TileGrid(150, 200, tile, overlap)) and est.seconds_per_tile is None
    assert f"at tile {tile}, overlap {overlap}" in text and "measuring one tile" in text
    # a tile through the job itself, in a thread; nothing of the user's is written
    assert estimator.start(f)
    estimator.thread.join(120)
    assert estimator.poll() and estimator.error is None
    est, text = estimator.estimate(f)
    assert est.seconds_per_tile > 0 and "per tile" in text
    assert est.total_seconds == pytest.approx(est.tiles * est.seconds_per_tile)
    assert not os.path.exists(f.output) and sorted(os.listdir(tmp_path)) == sorted(
        os.path.basename(p) for p in ["m.onnx"] + [i.path for i in scene.values()])
    # an area of a quarter: fewer tiles, same time per tile
    e = scene["optical"].extent
    quarter = form("custom", tmp_path, scene["optical"], models={"model": model}, values={"tile_size": 64},
                   extent=(e[0], e[1], (e[0] + e[2]) / 2, (e[1] + e[3]) / 2))
    assert controller.pixels(quarter) == (100, 75)
    smaller, _ = estimator.estimate(quarter)
    assert smaller.tiles < est.tiles and smaller.seconds_per_tile == est.seconds_per_tile


def test_classical_card_estimate_uses_the_rasters_dtypes(scene, tmp_path):
    f = form("fusion", tmp_path, scene["optical"], scene["sar"], values={"method": "guided"})
    card = controller.run_card(f)
    assert card is not None and [s.role for s in card.inputs] and card.outputs
    tile, overlap = resolve_tiling(card, None, None)
    assert tile > 200 and controller.tiling(f, card) == (200, min(overlap, 100))   # one tile for the 150 x 200 scene
    assert np.isfinite(controller.Estimator().estimate(f)[0].memory_mb)
