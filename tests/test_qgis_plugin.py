"""The plugin inside a real QGIS: loading, Processing, and headless qgis_process."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from factories import conv_model, identity_model, random_image, write_raster


def _skyclear_modules_are_packaged():
    return [m for m in sys.modules if m in ("plugin", "models", "ui")] == []


def test_plugin_loads_registers_and_unloads(qgis_iface, qgis_app):
    from qgis.core import QgsApplication

    import skyclear

    plugin = skyclear.classFactory(qgis_iface)
    plugin.initGui()
    registry = QgsApplication.processingRegistry()
    try:
        provider = registry.providerById("skyclear")
        assert provider is not None
        ids = {alg.id() for alg in provider.algorithms()}
        assert {"skyclear:run_model", "skyclear:remove_clouds_sar", "skyclear:remove_clouds_optical",
                "skyclear:fuse_sar_optical", "skyclear:evaluate_fusion",
                "skyclear:evaluate_restoration"} <= ids
        assert [a.objectName() for a in plugin.actions] == ["SkyClearOpenDialog"]
        assert plugin.toolbar is not None and plugin.actions[0] in plugin.toolbar.actions()
    finally:
        plugin.unload()
    assert registry.providerById("skyclear") is None
    assert plugin.actions == [] and plugin.toolbar is None
    assert _skyclear_modules_are_packaged()


def test_plugin_without_iface_registers_processing_only(qgis_app):
    from qgis.core import QgsApplication

    import skyclear

    plugin = skyclear.classFactory(None)
    plugin.initGui()
    try:
        assert QgsApplication.processingRegistry().providerById("skyclear") is not None
        assert plugin.actions == []
    finally:
        plugin.unload()


def test_processing_run_model_in_process(provider, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    img = random_image((3, 90, 70), "uint8")
    src = write_raster(str(tmp_path / "in.tif"), img)
    model = identity_model(str(tmp_path / "id.onnx"), 3)
    result = processing.run("skyclear:run_model", {
        "MODEL": model, "OPTICAL": src, "TILE_SIZE": 32, "OVERLAP": 8, "DEVICE": 1,
        "OUTPUT": str(tmp_path / "out.tif")})
    assert result["PROVIDER"] == "CPUExecutionProvider"
    with rasterio.open(result["OUTPUT"]) as ds:
        np.testing.assert_array_equal(ds.read(), img)
    # a wrong band count is a Processing error with the engine's message, and no file
    four = write_raster(str(tmp_path / "four.tif"), random_image((4, 20, 20), "uint8"))
    with pytest.raises(QgsProcessingException, match="expects 3"):
        processing.run("skyclear:run_model", {"MODEL": model, "OPTICAL": four, "OUTPUT": str(tmp_path / "bad.tif")})
    assert not (tmp_path / "bad.tif").exists()


def test_processing_log_says_which_tiles_skipped_the_model(provider, tmp_path, recording_feedback):
    import processing

    img = random_image((3, 90, 70), "uint8", low=1)
    img[:, :50] = 0  # a nodata band across the top: the first tile row holds no data
    src = write_raster(str(tmp_path / "in.tif"), img, nodata=0)
    feedback = recording_feedback
    result = processing.run("skyclear:run_model", {
        "MODEL": identity_model(str(tmp_path / "id.onnx"), 3), "OPTICAL": src, "TILE_SIZE": 32, "OVERLAP": 8,
        "OUTPUT": str(tmp_path / "out.tif")}, feedback=feedback)
    assert any("3 tiles hold only nodata" in line for line in feedback.infos), feedback.infos
    with rasterio.open(result["OUTPUT"]) as ds:
        np.testing.assert_array_equal(ds.read()[:, 50:], img[:, 50:])


def test_processing_algorithms_are_the_registry_tools(provider):
    """Each tool's algorithm offers its registry parameters, with the registry's defaults."""
    from skyclear.plugin.core import tools

    for spec in tools.TOOLS:
        algorithm = provider.algorithm(spec.name)
        assert algorithm is not None and algorithm.displayName() == spec.title
        definitions = {d.name(): d for d in algorithm.parameterDefinitions()}
        wanted = ([i.param for i in spec.inputs] + [i.bands_param for i in spec.inputs if i.bands_param]
                  + [m.param for m in spec.models] + [o.param for o in spec.all_options()]
                  + [o.param for o in spec.outputs])
        assert set(definitions) == set(wanted), spec.name
        for option in spec.options:
            default = definitions[option.param].defaultValue()
            if option.kind == tools.CHOICE:
                assert list(option.choices)[default] == option.default, (spec.name, option.keyword)
            elif option.from_model and option.default is None:   # -1 = the model card's value
                assert default == -1 and definitions[option.param].minimum() == -1, (spec.name, option.keyword)
            else:
                assert default == option.default, (spec.name, option.keyword)
        for item in spec.inputs:
            optional = bool(definitions[item.param].flags() & definitions[item.param].FlagOptional)
            assert optional == (not item.required), (spec.name, item.param)
        assert all(f"{p}:" in algorithm.shortHelpString() or f"{p} /" in algorithm.shortHelpString()
                   for p in wanted), spec.name


def test_processing_evaluate_restoration(provider, tmp_path):
    import processing

    ref = random_image((3, 40, 40), "uint8", seed=1)
    pred = ref.copy()
    pred[0] = np.clip(pred[0].astype(int) + 5, 0, 255)
    a = write_raster(str(tmp_path / "pred.tif"), pred)
    b = write_raster(str(tmp_path / "ref.tif"), ref)
    result = processing.run("skyclear:evaluate_restoration", {
        "PREDICTION": a, "REFERENCE": b, "OUTPUT": str(tmp_path / "m.csv")})
    assert result["MAE"] > 0 and result["SSIM"] < 1
    rows = (tmp_path / "m.csv").read_text().splitlines()
    assert rows[0].startswith("band,psnr,ssim,mae") and len(rows) == 5  # header + 3 bands + all


def _skyclear_process() -> Path:
    wrapper = Path(sys.prefix) / "bin" / "skyclear-process"
    if not wrapper.exists():
        pytest.skip("skyclear-process is not installed (run `make setup`)")
    return wrapper


@pytest.mark.slow
def test_qgis_process_runs_model_on_a_real_scene(tmp_path, data_dir):
    scene = data_dir / "scenes" / "rasterio_RGB.byte.tif"
    model = conv_model(str(tmp_path / "conv.onnx"), 3, 3, tile=128, overlap=16)
    out = tmp_path / "out.tif"
    proc = subprocess.run(
        [str(_skyclear_process()), "--json", "run", "skyclear:run_model", "--",
         f"MODEL={model}", f"OPTICAL={scene}", "TILE_SIZE=128", "OVERLAP=16", f"OUTPUT={out}"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert result["results"]["PROVIDER"] == "CPUExecutionProvider"
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform and dst.shape == src.shape
        # every uint8 value is a possible result, so the collar is a mask band, not nodata 0
        assert dst.count == 3 and dst.nodata is None
        assert ((dst.dataset_mask() == 0) == (src.dataset_mask() == 0)).all()
        assert dst.tags()["SKYCLEAR_MODEL"] == "test-model"


@pytest.mark.slow
def test_qgis_process_reports_bad_input(tmp_path, data_dir):
    model = identity_model(str(tmp_path / "id.onnx"), 4)
    scene = data_dir / "scenes" / "rasterio_RGB.byte.tif"
    proc = subprocess.run(
        [str(_skyclear_process()), "run", "skyclear:run_model", "--", f"MODEL={model}", f"OPTICAL={scene}",
         f"OUTPUT={tmp_path / 'o.tif'}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "has 3 band(s) but model 'test-model' expects 4" in proc.stdout + proc.stderr
    assert not (tmp_path / "o.tif").exists()


@pytest.mark.slow
def test_processing_compression_option(tmp_path):
    src = write_raster(str(tmp_path / "in.tif"), random_image((3, 30, 30), "uint8"))
    model = identity_model(str(tmp_path / "id.onnx"), 3)
    proc = subprocess.run([str(_skyclear_process()), "run", "skyclear:run_model", "--", f"MODEL={model}",
                           f"OPTICAL={src}", f"OUTPUT={tmp_path / 'o.tif'}", "COMPRESSION=1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    with rasterio.open(tmp_path / "o.tif") as ds:
        assert ds.compression.value.lower() == "zstd"
