"""Issue 9, items 6, 7, 10, 11 and the small ones: one band mapper, the value-range check,
EXTENT on every Processing tool, grey optical images, lazy DE noise, seam-free classical
fusion. Each test fails on the code before the fix."""
import json
import logging
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds

from factories import base_card, identity_model, random_image, write_raster
from skyclear.plugin.core import bands, jobs
from skyclear.plugin.core.errors import InputError
from skyclear.plugin.core.evaluation import evaluate_fusion
from skyclear.ui import logic

REPO = Path(__file__).resolve().parents[1]
S2 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
RGB = ["R", "G", "B"]


def s2_scene(data_dir) -> Path:
    """A real georeferenced cloudy Sentinel-2 L1C patch: 13 described bands, uint16 DN."""
    return data_dir / "sen12mscr_s1_cloudy" / "ROIs1868_summer_19_p30" / "s2_cloudy.tif"


def rgb_model(path, clip=(0, 255), **kw) -> str:
    """Identity model on R, G, B with the given value range (8-bit by default)."""
    card = base_card(RGB, RGB, clip=clip, scale=float(clip[1]), **kw)
    return identity_model(str(path), 3, card=card)


def skyclear_process(*args, check=True):
    wrapper = Path(sys.prefix) / "bin" / "skyclear-process"
    if not wrapper.exists():
        pytest.skip("skyclear-process is not installed (run `make setup`)")
    proc = subprocess.run([str(wrapper), "--json", "run", *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return json.loads(proc.stdout[proc.stdout.index("{"):])["results"]
    return proc


# ---------------------------------------------------------------------------------------
# item 10: one band mapper


def test_band_mapper_precedence():
    assert bands.map_bands(["B1", "B2", "B3"], ["B3", "B2", "B1"], 3).bands == [3, 2, 1]
    assert bands.map_bands(RGB, S2, 13).bands == [4, 3, 2]                          # aliases
    assert bands.map_bands(["blue", "nir"], S2, 13).bands == [2, 8]
    assert bands.map_bands(["VV", "VH"], ["VH", "VV"], 2).bands == [2, 1]
    assert bands.map_bands(["SAR"], ["VV", "VH"], 2).bands == [1]
    gdal_s2 = ["B4, central wavelength 665 nm", "B3, central wavelength 560 nm", "B2, central wavelength 490 nm"]
    assert bands.map_bands(RGB, gdal_s2, 3).rule == "descriptions"
    assert bands.map_bands(RGB, ["", "", ""], 3).bands == [1, 2, 3]               # position
    assert bands.map_bands(RGB, ["", "", ""], 3, explicit=[3, 3, 1]).bands == [3, 3, 1]
    assert bands.map_bands(RGB, ["", "", ""], 3, explicit=[2]).bands == [2, 2, 2]  # one band: grey
    assert "do not exist" in bands.mapping_problem("OPTICAL", bands.map_bands(RGB, [""], 1, explicit=[4]))
    # a description that contradicts file order stops the positional guess
    partial = bands.map_bands(RGB, ["x", "B4", "y"], 3)
    assert partial.rule == "unresolved" and partial.missing == ["G", "B"]
    false_colour = bands.map_bands(RGB, ["B8", "B4", "B3"], 3)  # NIR, red, green: not R, G, B
    assert false_colour.rule == "unresolved" and false_colour.bands == [2, 3, None]
    # bare names like B1 may just mean "band 1": aliases do not veto file order for them
    assert bands.map_bands(["B1", "B2", "B3"], ["R", "G", "B"], 3).bands == [1, 2, 3]
    problem = bands.mapping_problem("OPTICAL", bands.map_bands(RGB, [""] * 13, 13), "m", "s2.tif")
    assert "s2.tif" in problem and "4,3,2" in problem
    # too few bands: no impossible band list, and a 12-band file into an L1C model is named as L2A
    s2 = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
    problem = bands.mapping_problem("OPTICAL", bands.map_bands(s2, [""] * 12, 12), "m", "l2a.tif")
    assert "l2a.tif" in problem and "B10" in problem and "Level-1C" in problem and "1,2,3" not in problem


def test_dialog_uses_the_core_mapper():
    assert logic.default_band_mapping(RGB, [""], 1) == [1, 1, 1]                    # grey
    assert logic.default_band_mapping(["B1", "B2", "B3"], ["B3", "B2", "B1"], 3) == [3, 2, 1]
    assert logic.default_band_mapping(RGB, ["x", "B4", "y"], 3) == [2, None, None]
    assert logic.BAND_ALIASES is bands.BAND_ALIASES


def test_engine_feeds_bands_by_description_not_file_order(tmp_path):
    data = np.stack([np.full((40, 30), v, np.uint8) for v in (30, 20, 10)])      # described B3, B2, B1
    src = write_raster(str(tmp_path / "in.tif"), data, descriptions=["B3", "B2", "B1"])
    model = identity_model(str(tmp_path / "id.onnx"), 3)                           # wants B1, B2, B3
    jobs.run_model(model=model, optical=src, output=str(tmp_path / "out.tif"), device="cpu")
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert [int(ds.read(i).mean()) for i in (1, 2, 3)] == [10, 20, 30]
        assert json.loads(ds.tags()["SKYCLEAR_INPUTS"])["optical"]["bands"] == [3, 2, 1]


@pytest.mark.slow
def test_qgis_process_maps_sentinel2_to_rgb_by_descriptions(tmp_path, data_dir):
    scene = s2_scene(data_dir)
    model = rgb_model(tmp_path / "rgb.onnx", clip=(0, 10000))
    out = tmp_path / "rgb.tif"
    skyclear_process("skyclear:run_model", "--", f"MODEL={model}", f"OPTICAL={scene}", f"OUTPUT={out}")
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert dst.count == 3 and dst.dtypes[0] == "uint16"
        np.testing.assert_array_equal(dst.read(), src.read([4, 3, 2]))


# ---------------------------------------------------------------------------------------
# item 11: grey optical images


@pytest.fixture()
def grey_pair(tmp_path, data_dir):
    """The real CFOG SAR/optical pair with the optical image turned into one grey band."""
    pair = data_dir / "sar_optical"
    with rasterio.open(pair / "cfog_stest3_optical.tif") as ds:
        rgb = ds.read().astype(np.float64)
        profile = ds.profile
    grey = np.rint(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]).astype(np.uint8)[None]
    profile.update(count=1)
    path = tmp_path / "grey.tif"
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(grey)
    return pair / "cfog_stest3_sar.tif", path, grey


@pytest.mark.parametrize("method", ["network", "laplacian"])
def test_grey_optical_fuses_as_r_equals_g_equals_b(tmp_path, grey_pair, method):
    sar, grey_path, grey = grey_pair
    out = tmp_path / f"fused_{method}.tif"
    jobs.fuse_sar_optical(sar=str(sar), optical=str(grey_path), output=str(out), method=method, device="cpu")
    with rasterio.open(out) as ds:
        fused = ds.read()
        assert ds.count == 3 and ds.dtypes[0] == "uint8"
        assert json.loads(ds.tags()["SKYCLEAR_INPUTS"])["optical"]["bands"] == [1, 1, 1]
    if method == "laplacian":  # colour is recomposed from Cb = Cr = 0: the result stays grey
        assert np.abs(fused.astype(int) - fused[:1].astype(int)).max() <= 1
    # evaluate_fusion compares the RGB result with the grey optical image by luminance
    metrics = evaluate_fusion(str(out), str(sar), str(grey_path))
    grey3 = tmp_path / "grey3.tif"
    with rasterio.open(grey_path) as ds:
        profile = dict(ds.profile, count=3)
    with rasterio.open(grey3, "w", **profile) as ds:
        ds.write(np.repeat(grey, 3, axis=0))
    same = evaluate_fusion(str(out), str(sar), str(grey3))
    assert set(metrics) == set(same)
    for key in metrics:
        assert np.isfinite(metrics[key]) and metrics[key] == pytest.approx(same[key], rel=1e-6, abs=1e-9), key


# ---------------------------------------------------------------------------------------
# item 6: value range


def test_16bit_into_an_8bit_model_is_refused_with_the_fix(tmp_path, data_dir):
    model = rgb_model(tmp_path / "rgb8.onnx")
    out = tmp_path / "flat.tif"
    with pytest.raises(InputError) as err:
        jobs.run_model(model=model, optical=str(s2_scene(data_dir)), output=str(out), device="cpu")
    message = str(err.value)
    assert "OPTICAL" in message and "0–255" in message and "SCALE=auto" in message
    assert not out.exists() and not list(tmp_path.glob("*.part*"))


def test_auto_scale_fits_the_model_and_returns_input_units(tmp_path, data_dir, caplog):
    scene = s2_scene(data_dir)
    model = rgb_model(tmp_path / "rgb8.onnx")
    out = tmp_path / "scaled.tif"
    with caplog.at_level(logging.WARNING, logger="skyclear"):
        jobs.run_model(model=model, optical=str(scene), output=str(out), device="cpu", value_scale="auto")
    assert "values scaled" in caplog.text
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        gain = float(json.loads(dst.tags()["SKYCLEAR_INPUT_SCALE"])["optical"])
        assert dst.dtypes[0] == "uint16" and 0.02 < gain < 0.2
        expected = np.clip(src.read([4, 3, 2]).astype(float), 0, 255 / gain)
        assert np.abs(dst.read().astype(float) - expected).max() <= 1.0
        assert dst.read().std() > 100  # not flat: the image is in its own units again


def test_partly_out_of_range_warns_and_runs(tmp_path, caplog):
    rng = np.random.default_rng(0)
    data = np.where(rng.random((3, 64, 64)) < 0.6, 400, 100).astype(np.uint16)  # 60 % above 255
    src = write_raster(str(tmp_path / "in.tif"), data, descriptions=RGB)
    model = rgb_model(tmp_path / "rgb8.onnx")
    with caplog.at_level(logging.WARNING, logger="skyclear"):
        jobs.run_model(model=model, optical=src, output=str(tmp_path / "out.tif"), device="cpu")
    assert "60 % of the sampled values lie outside" in caplog.text and "SCALE=auto" in caplog.text
    assert (tmp_path / "out.tif").exists()
    # an explicit scale of 1 runs as is without the refusal, a bad SCALE is an error
    assert bands.parse_scale("none") == bands.ValueScale(1.0)
    with pytest.raises(InputError, match="SCALE"):
        bands.parse_scale("bright")


def _float_copy(src: Path, dst: Path, convert) -> str:
    with rasterio.open(src) as ds:
        profile = dict(ds.profile, dtype="float32", nodata=None)
        data = convert(ds.read().astype(np.float32))
        descriptions = ds.descriptions
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data.astype(np.float32))
        out.descriptions = descriptions
    return str(dst)


def test_reflectance_in_0_to_1_is_refused_and_auto_scales_like_the_dn_run(tmp_path, data_dir):
    scene = s2_scene(data_dir)
    sar = str(scene.parent / "s1.tif")
    unit = _float_copy(scene, tmp_path / "unit.tif", lambda dn: dn / 10000.0)
    out = tmp_path / "clear.tif"
    with pytest.raises(InputError) as err:   # all inside 0–10000, so only the unit check can catch it
        jobs.remove_clouds_sar(optical=unit, sar=sar, output=str(out), device="cpu")
    message = str(err.value)
    assert "OPTICAL" in message and "0–1" in message and "SCALE=auto" in message and "×10000" in message
    assert not out.exists() and not list(tmp_path.glob("*.part*"))

    jobs.remove_clouds_sar(optical=unit, sar=sar, output=str(out), device="cpu", value_scale="auto")
    dn_out = tmp_path / "clear_dn.tif"
    jobs.remove_clouds_sar(optical=str(scene), sar=sar, output=str(dn_out), device="cpu")
    with rasterio.open(out) as got, rasterio.open(dn_out) as want:
        assert got.dtypes[0] == "float32"   # the input's units and type
        valid = want.read_masks(1) > 0
        diff = np.abs(got.read().astype(np.float64) - want.read().astype(np.float64) / 10000.0)[:, valid]
        assert diff.max() < 1e-4   # the DN run rounds to whole DN (0.5e-4)
    # SCALE=none runs the values as they are: a warning, not a refusal
    jobs.remove_clouds_sar(optical=unit, sar=sar, output=str(tmp_path / "as_is.tif"), device="cpu",
                           value_scale="none")


def test_linear_sar_is_refused_with_the_db_fix_even_with_auto(tmp_path, data_dir):
    scene = s2_scene(data_dir)
    linear = _float_copy(scene.parent / "s1.tif", tmp_path / "linear.tif", lambda db: 10.0 ** (db / 10.0))
    for scale in (None, "auto"):
        with pytest.raises(InputError) as err:
            jobs.remove_clouds_sar(optical=str(scene), sar=linear, output=str(tmp_path / "o.tif"), device="cpu",
                                   value_scale=scale)
        assert "SAR" in str(err.value) and "10·log10" in str(err.value) and "SCALE=auto" not in str(err.value)
    assert not list(tmp_path.glob("o*"))


def test_headless_run_warns_when_the_sar_covers_part_of_the_optical(tmp_path, data_dir, caplog):
    from rasterio.windows import Window, transform as window_transform

    scene = s2_scene(data_dir)
    with rasterio.open(scene.parent / "s1.tif") as ds:
        window = Window(0, 0, ds.width, 100)
        profile = dict(ds.profile, height=100, transform=window_transform(window, ds.transform))
        top = tmp_path / "top.tif"
        with rasterio.open(top, "w", **profile) as out:
            out.write(ds.read(window=window))
    with caplog.at_level(logging.WARNING, logger="skyclear"):
        jobs.remove_clouds_sar(optical=str(scene), sar=str(top), output=str(tmp_path / "o.tif"), device="cpu")
    assert "SAR: top.tif covers only 39 % of the optical raster" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="skyclear"):
        jobs.remove_clouds_sar(optical=str(scene), sar=str(scene.parent / "s1.tif"), output=str(tmp_path / "f.tif"),
                               device="cpu")
    assert "covers only" not in caplog.text


def test_unit_checks_survive_fill_values_and_spare_integer_and_db_files():
    from dataclasses import replace

    from skyclear.plugin.core.model_card import parse_card

    rng = np.random.default_rng(0)
    s2 = parse_card(base_card(S2[:3], S2[:3], clip=(0, 10000), scale=10000.0)).inputs[0]
    sar = replace(parse_card(base_card(["VV"], ["VV"], clip=(-25, 0), scale=25.0)).inputs[0], role="sar")
    unit = rng.uniform(0.02, 0.6, (3, 4000))
    unit[:, :120] = -9999                                         # 3 % undeclared fill
    assert bands.range_check(unit, s2, "OPTICAL").kind == "unit"
    assert bands.range_check(unit, s2, "OPTICAL", units=False).kind == "range"   # the user scaled it
    assert bands.range_check(rng.uniform(-1, 1, (3, 4000)), s2, "OPTICAL").kind == "range"   # not reflectance
    assert bands.range_check(rng.integers(0, 2, (3, 4000)).astype(float), s2, "OPTICAL").kind == "range"  # a mask
    assert bands.range_check(rng.uniform(0.01, 0.9, (3, 4000)), s2, "OPTICAL").suggested.gain == 10000
    linear = rng.uniform(0.001, 0.5, (1, 4000))
    linear[:, :500] = 0                                           # 12.5 % zero border
    linear[:, 500:580] = -0.001                                   # noise removal leaves a few negatives
    check = bands.range_check(linear, sar, "SAR")
    assert check.kind == "linear_sar" and check.refused and check.suggested is None
    display = np.round(rng.uniform(0, 255, (1, 4000)))           # 8-bit display-scaled dB: a linear map fixes it
    check = bands.range_check(display, sar, "SAR")
    assert check.kind == "range" and check.suggested is not None and "linear backscatter" in check.message("m")
    db = rng.uniform(-22, -3, (1, 4000))
    assert not bands.range_check(db, sar, "SAR").mismatch


def test_band_lists_count_from_one():
    assert bands.parse_band_list("4,3,2") == [4, 3, 2] and bands.parse_band_list([4.0, 3]) == [4, 3]
    assert bands.parse_band_list("") is None and bands.parse_band_list(None) is None
    for bad, words in (("0,1,2", "start at 1"), (0, "start at 1"), ("2.5", "band list like"), ("red", "band list like"),
                       ("inf", "band list like"), ("nan", "band list like")):
        with pytest.raises(ValueError, match=words):
            bands.parse_band_list(bad)


def test_processing_feedback_gets_the_value_range_warning(provider, tmp_path, recording_feedback):
    import processing

    rng = np.random.default_rng(1)
    data = np.where(rng.random((3, 64, 64)) < 0.7, 400, 100).astype(np.uint16)  # 70 % above 255
    src = write_raster(str(tmp_path / "in.tif"), data, descriptions=RGB)
    model = rgb_model(tmp_path / "rgb8.onnx")
    feedback = recording_feedback
    processing.run("skyclear:run_model", {"MODEL": model, "OPTICAL": src, "OUTPUT": str(tmp_path / "o.tif")},
                   feedback=feedback)
    assert any("70 % of the sampled values lie outside" in w and "SCALE=auto" in w for w in feedback.warnings)


def test_range_check_for_the_dialog(tmp_path, data_dir):
    from skyclear.plugin.core.model_card import parse_card

    spec = parse_card(base_card(RGB, RGB, clip=(0, 255), scale=255.0)).inputs[0]
    check = bands.check_value_range(str(s2_scene(data_dir)), [4, 3, 2], spec, "OPTICAL")
    assert check.mismatch and check.flat and check.fraction_above > 0.95 and check.suggested.gain < 0.2
    assert bands.dtype_range_problem("optical", "de", 255, "uint16")


@pytest.mark.slow
def test_qgis_process_refuses_flat_output_and_scale_auto_runs(tmp_path, data_dir):
    scene = s2_scene(data_dir)
    out = tmp_path / "clear.tif"
    proc = skyclear_process("skyclear:remove_clouds_optical", "--", f"INPUT={scene}", "MODE=1", f"OUTPUT={out}",
                            check=False)
    assert proc.returncode != 0 and "SCALE=auto" in proc.stdout + proc.stderr and not out.exists()
    skyclear_process("skyclear:remove_clouds_optical", "--", f"INPUT={scene}", "MODE=1", "SCALE=auto",
                     f"OUTPUT={out}")
    with rasterio.open(out) as ds:
        assert ds.count == 3 and ds.dtypes[0] == "uint16" and ds.read().std() > 100
        assert "SKYCLEAR_INPUT_SCALE" in ds.tags()


# ---------------------------------------------------------------------------------------
# item 7: EXTENT on every Processing tool


def test_every_processing_tool_has_an_optional_extent(qgis_app):
    from qgis.core import QgsProcessingParameterDefinition

    from skyclear.plugin.processing.provider import ALGORITHMS

    for cls in ALGORITHMS:
        alg = cls()
        alg.initAlgorithm()
        extent = alg.parameterDefinition("EXTENT")
        assert extent is not None and extent.type() == "extent", alg.name()
        assert extent.flags() & QgsProcessingParameterDefinition.FlagOptional, alg.name()


@pytest.fixture()
def utm_raster(tmp_path):
    data = random_image((3, 120, 100), "uint8", seed=3, low=1)
    transform = from_origin(500000, 4600000, 10, 10)
    return write_raster(str(tmp_path / "utm.tif"), data, crs="EPSG:32633", transform=transform), data


@pytest.mark.slow
def test_qgis_process_extent_in_another_crs(tmp_path, utm_raster):
    src, data = utm_raster
    model = identity_model(str(tmp_path / "id.onnx"), 3)
    box = (500200.0, 4599000.0, 500600.0, 4599500.0)  # columns 20..60, rows 50..100 of the raster
    w, s, e, n = transform_bounds("EPSG:32633", "EPSG:4326", *box, densify_pts=21)
    out = tmp_path / "part.tif"
    skyclear_process("skyclear:run_model", "--", f"MODEL={model}", f"OPTICAL={src}", f"OUTPUT={out}",
                     f"EXTENT={w!r},{e!r},{s!r},{n!r} [EPSG:4326]")
    with rasterio.open(out) as ds:
        left, bottom, right, top = ds.bounds
        # the reprojected box covers the wanted one, plus at most a pixel or two of curvature
        assert left <= box[0] and bottom <= box[1] and right >= box[2] and top >= box[3]
        assert box[0] - left <= 20 and box[1] - bottom <= 20 and right - box[2] <= 20 and top - box[3] <= 20
        row, col = int(round((4600000 - top) / 10)), int(round((left - 500000) / 10))
        np.testing.assert_array_equal(ds.read(), data[:, row:row + ds.height, col:col + ds.width])


def test_processing_evaluate_restoration_with_extent(qgis_app, qgis_processing, tmp_path, utm_raster):
    import processing
    from qgis.core import QgsApplication

    from skyclear.plugin.processing.provider import SkyClearProvider

    src, data = utm_raster
    pred = data.copy()
    pred[:, :60] = 0  # wrong only in the top half
    bad = write_raster(str(tmp_path / "pred.tif"), pred, crs="EPSG:32633",
                       transform=from_origin(500000, 4600000, 10, 10))
    provider = SkyClearProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    try:
        whole = processing.run("skyclear:evaluate_restoration", {
            "PREDICTION": bad, "REFERENCE": src, "OUTPUT": str(tmp_path / "a.csv")})
        bottom = processing.run("skyclear:evaluate_restoration", {
            "PREDICTION": bad, "REFERENCE": src, "EXTENT": "500000,501000,4598800,4599300 [EPSG:32633]",
            "OUTPUT": str(tmp_path / "b.csv")})
    finally:
        QgsApplication.processingRegistry().removeProvider(provider)
    assert whole["MAE"] > 10 and bottom["MAE"] == 0


# ---------------------------------------------------------------------------------------
# smaller: lazy DE noise, seam-free classical fusion, declared dependencies


def test_diffusion_noise_is_drawn_lazily_with_the_same_result():
    from skyclear.plugin.core.pipelines import generic
    from skyclear.plugin.core.pipelines.optical_cloud_removal import (DiffusionProcessor, alphas_cumprod,
                                                                      sample, tile_noise)

    zoo = REPO / "models" / "zoo"
    ref, _, _ = generic.load_model(str(zoo / "de_reference_rice.onnx"), "cpu")
    step, _, _ = generic.load_model(str(zoo / "de_step_rice.onnx"), "cpu")
    y = np.random.default_rng(0).uniform(-1, 1, (2, 3, 96, 96)).astype(np.float32)
    origins = [(0, 0), (0, 80)]
    steps = 24
    for sampler in ("ddim", "ddpm"):
        proc = DiffusionProcessor(ref, step, steps=steps, seed=5, sampler=sampler)
        tracemalloc.start()
        out = proc({"cloudy": y}, origins)["restored"]
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        # the old eager way: every draw of every tile, stacked
        x0_ref = ref.run(None, {"cloudy": y})[0]
        per_tile = [tile_noise(5, o, y.shape[1:], steps + 1) for o in origins]
        noise = [np.stack([t[i] for t in per_tile]) for i in range(steps + 1)]
        expected = sample(proc._step_fn(y, x0_ref), x0_ref, noise, steps, proc.eta, sampler, 0.0,
                          int(proc.schedule["T"]), float(proc.schedule["beta_start"]),
                          float(proc.schedule["beta_end"]), t_start=proc.t_start)
        np.testing.assert_array_equal(out, expected)
        # the eager way holds 2 * (steps + 1) draws at once; lazily a handful of tile-sized arrays
        assert peak < 12 * y.nbytes, (sampler, peak / y.nbytes)
    assert alphas_cumprod().shape == (1000,)


@pytest.mark.parametrize("method,despeckle", [("laplacian", False), ("guided", False), ("laplacian", True)])
def test_tiled_classical_fusion_equals_whole_image_through_the_engine(tmp_path, data_dir, method, despeckle):
    pair = data_dir / "sar_optical_vsff"  # 1000 x 1000, farmland, villages, hills
    common = dict(sar=str(pair / "whuoptsar_sar.tif"), optical=str(pair / "whuoptsar_optical.tif"),
                  method=method, despeckle=despeckle, device="cpu")
    jobs.fuse_sar_optical(output=str(tmp_path / "whole.tif"), tile_size=1000, overlap=0, **common)
    report = jobs.fuse_sar_optical(output=str(tmp_path / "tiled.tif"), tile_size=512, **common)
    assert report.tiles >= 4
    with rasterio.open(tmp_path / "whole.tif") as a, rasterio.open(tmp_path / "tiled.tif") as b:
        diff = np.abs(a.read().astype(int) - b.read().astype(int))
    assert diff.max() <= 1, (method, int(diff.max()), int((diff > 1).sum()))


def test_pyproject_declares_the_core_imports():
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        pytest.skip("tomllib needs Python 3.11")
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split("<")[0].split(">")[0].split("=")[0].strip().lower() for d in deps}
    assert {"scipy", "scikit-image"} <= names
