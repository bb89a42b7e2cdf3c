"""The QGIS-free SAR cloud-removal tile processor, keep_clear_pixels and the snow test."""
from pathlib import Path

import numpy as np
import pytest

from skyclear.plugin.core.pipelines.sar_cloud_removal import (SarCloudRemovalProcessor, cloud_probability,
                                                              keep_clear_pixels, keep_snow, snow_weight)

REPO = Path(__file__).resolve().parents[1]


def test_keep_clear_pixels_raw_units():
    restored = np.full((13, 4, 5), 1000, np.uint16)
    optical = np.full((13, 4, 5), 7000, np.uint16)
    p_cloud = np.full((4, 5), 0.9, np.float32)
    p_cloud[0, 0] = 0.1
    p_cloud[1, 2] = 0.49
    p_cloud[2, 2] = 0.5  # not below the threshold
    out = keep_clear_pixels(restored, optical, p_cloud, 0.5)
    assert out.dtype == np.uint16 and out.shape == restored.shape
    assert (out[:, 0, 0] == 7000).all() and (out[:, 1, 2] == 7000).all()
    assert (out[:, 2, 2] == 1000).all() and int((out == 7000).sum()) == 2 * 13
    assert (restored == 1000).all()  # input untouched
    # (1, H, W) probability, batched input, valid mask, thresholds 0 and 1
    out_b = keep_clear_pixels(restored[None], optical[None], p_cloud[None, None], 0.5)
    assert np.array_equal(out_b[0], out)
    valid = np.ones((4, 5), bool)
    valid[0, 0] = False
    assert (keep_clear_pixels(restored, optical, p_cloud[None], 0.5, valid)[:, 0, 0] == 1000).all()
    assert np.array_equal(keep_clear_pixels(restored, optical, p_cloud, 0.0), restored)
    assert np.array_equal(keep_clear_pixels(restored, optical, p_cloud, 1.0), optical)
    with pytest.raises(ValueError):
        keep_clear_pixels(restored, optical[:3], p_cloud, 0.5)
    with pytest.raises(ValueError):
        keep_clear_pixels(restored, optical, p_cloud[:2], 0.5)


def test_cloud_probability_is_complement():
    assert np.allclose(cloud_probability(np.array([0.0, 0.25, 1.0, 1.5])), [1.0, 0.75, 0.0, 0.0])


def _tiny_onnx(tmp_path, gating=True, **options):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from skyclear.models.common.onnx_export import export_with_card
    from skyclear.models.ibhfn.network import IBHFN
    from skyclear.models.ibhfn.trainer import build_card
    torch.manual_seed(0)
    model = IBHFN(width=4, depth=2, gating=gating, **options)
    if options.get("clear_path") in ("affine", "residual"):  # a non-trivial (non-zero) correction head
        torch.nn.init.normal_(model.clear_head.weight, std=0.05)
    config = {"kind": "ibhfn", "name": "t", "model": dict({"width": 4, "depth": 2, "gating": gating}, **options)}
    path = str(tmp_path / "t.onnx")
    diff = export_with_card(model, {"optical": torch.rand(1, 13, 16, 16), "sar": torch.rand(1, 2, 16, 16)},
                            ["restored", "clear_probability"], build_card(config, {"step": 0}, {}), path)
    assert diff < 1e-4
    return model.eval(), path


def test_processor_runs_onnx_and_pads(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch = pytest.importorskip("torch")
    from skyclear.plugin.core.model_card import read_card
    model, path = _tiny_onnx(tmp_path)
    card = read_card(path)
    assert card.size_multiple == 4
    proc = SarCloudRemovalProcessor(ort.InferenceSession(path, providers=["CPUExecutionProvider"]), card,
                                    batch_limit=1)
    rng = np.random.default_rng(0)
    inputs = {"optical": rng.random((3, 13, 32, 32), dtype=np.float32),
              "sar": rng.random((3, 2, 32, 32), dtype=np.float32)}
    out = proc(inputs, [(0, 0), (0, 32), (32, 0)])
    assert out["restored"].shape == (3, 13, 32, 32) and out["clear_probability"].shape == (3, 1, 32, 32)
    assert out["restored"].dtype == np.float32
    with torch.no_grad():
        want = model(torch.from_numpy(inputs["optical"]), torch.from_numpy(inputs["sar"]))
    assert np.abs(out["restored"] - want[0].numpy()).max() < 1e-4
    odd = proc({k: v[:1, :, :30, :29] for k, v in inputs.items()}, [(0, 0)])  # not a multiple of 4
    assert odd["restored"].shape == (1, 13, 30, 29) and odd["clear_probability"].shape == (1, 1, 30, 29)


@pytest.mark.parametrize("options", [{"bottleneck": "all", "clear_path": "affine"},
                                     {"bottleneck": "deep", "sar_skips": False, "clear_path": "residual",
                                      "upsample": "bilinear"}], ids=["all-affine", "noskips-residual-bilinear"])
def test_processor_runs_2x_architectures(tmp_path, options):
    """The 2.x network options export to ONNX with a valid card and run in the plugin's processor,
    including tiles that are not a multiple of the size multiple (padded and cropped back)."""
    ort = pytest.importorskip("onnxruntime")
    torch = pytest.importorskip("torch")
    from skyclear.plugin.core.model_card import read_card
    model, path = _tiny_onnx(tmp_path, **options)
    card = read_card(path)
    assert card.size_multiple == 4 and [o.name for o in card.outputs] == ["restored", "clear_probability"]
    assert ("every SAR path" in card.description) == (options["bottleneck"] == "all")
    proc = SarCloudRemovalProcessor(ort.InferenceSession(path, providers=["CPUExecutionProvider"]), card)
    rng = np.random.default_rng(1)
    inputs = {"optical": rng.random((2, 13, 40, 40), dtype=np.float32),
              "sar": rng.random((2, 2, 40, 40), dtype=np.float32)}
    out = proc(inputs, [(0, 0), (0, 40)])
    with torch.no_grad():
        want = model(torch.from_numpy(inputs["optical"]), torch.from_numpy(inputs["sar"]))
    assert np.abs(out["restored"] - want[0].numpy()).max() < 1e-4
    odd = proc({k: v[:1, :, :37, :30] for k, v in inputs.items()}, [(0, 0)])
    assert odd["restored"].shape == (1, 13, 37, 30) and np.isfinite(odd["restored"]).all()


def test_processor_rejects_wrong_task(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from skyclear.plugin.core.errors import ModelCardError
    from skyclear.plugin.core.model_card import parse_card
    _, path = _tiny_onnx(tmp_path)
    from skyclear.plugin.core.model_card import read_card
    raw = read_card(path).to_dict()
    raw["task"] = "generic"
    with pytest.raises(ModelCardError):
        SarCloudRemovalProcessor(ort.InferenceSession(path, providers=["CPUExecutionProvider"]), parse_card(raw))


@pytest.mark.parametrize("name", ["ibhfn_small.onnx", "dsen2cr_small.onnx"])
def test_bundled_models_load(name):
    ort = pytest.importorskip("onnxruntime")
    from skyclear.plugin.core.model_card import read_card
    path = REPO / "models" / "zoo" / name
    if not path.exists():
        pytest.skip(f"{name} not bundled yet")
    card = read_card(str(path))
    assert card.task == "sar_cloud_removal" and path.stat().st_size < 25 * 2 ** 20
    assert card.training["onnx_vs_torch_max_abs_diff"] < 1e-4 and card.training["metrics"]
    proc = SarCloudRemovalProcessor(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), card)
    out = proc({"optical": np.full((1, 13, 64, 64), 0.2, np.float32), "sar": np.full((1, 2, 64, 64), 0.5, np.float32)},
               [(0, 0)])
    assert np.isfinite(out["restored"]).all()


S2_NAMES = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]


def _spectra(**pixels):
    """(13, 1, N) reflectance: one pixel per keyword, given as (B3, B8, B10, B11); other bands 0.1."""
    out = np.full((13, 1, len(pixels)), 0.1, np.float32)
    for j, (b3, b8, b10, b11) in enumerate(pixels.values()):
        out[[2, 7, 10, 11], 0, j] = b3, b8, b10, b11
    return out


def test_snow_weight_keeps_snow_and_nothing_that_only_looks_like_it():
    refl = _spectra(snow=(0.60, 0.55, 0.006, 0.05), dim_snow=(0.20, 0.18, 0.004, 0.03),
                    water_cloud=(0.60, 0.60, 0.010, 0.45), water=(0.05, 0.02, 0.001, 0.01),
                    cirrus_over_snow=(0.60, 0.55, 0.040, 0.08), vegetation=(0.08, 0.35, 0.002, 0.20))
    w = dict(zip(["snow", "dim_snow", "water_cloud", "water", "cirrus_over_snow", "vegetation"],
                 snow_weight(refl, S2_NAMES)[0]))
    assert w["snow"] == 1 and w["dim_snow"] == 1
    assert w["water_cloud"] == w["water"] == w["cirrus_over_snow"] == w["vegetation"] == 0
    # L2A has no B10: no cirrus veto, the rest of the test holds; no B11: no test at all
    no_b10 = [n for n in S2_NAMES if n != "B10"]
    assert snow_weight(np.delete(refl, 10, 0), no_b10)[0].tolist() == [1, 1, 0, 0, 1, 0]
    assert snow_weight(refl[:3], ["B2", "B3", "B4"]) is None


def test_keep_snow_blends_the_input_back_and_clears_the_probability():
    restored = np.full((2, 1, 3), 100.0, np.float32)
    optical = np.full((2, 1, 3), 900.0, np.float32)
    out, prob = keep_snow(restored, optical, np.array([[0.0, 0.5, 1.0]]), np.full((1, 1, 3), 0.8, np.float32))
    assert out[:, 0].tolist() == [[100, 500, 900]] * 2 and out.dtype == restored.dtype
    np.testing.assert_allclose(prob[0, 0], [0.8, 0.4, 0.0])
    assert restored[0, 0, 0] == 100  # inputs untouched


def test_snowy_winter_scene_comes_out_unchanged(data_dir, tmp_path):
    """BigEarthNet 57_38 (snow, kept out of every training run) through the job with the bundled
    model: with the snow test the scene stays as it was; without it the network paints land over it."""
    import rasterio
    from skyclear.models.ibhfn.sources import l2a_to_l1c
    from skyclear.plugin.core import jobs
    from skyclear.plugin.core.metrics.restoration import restoration_metrics

    patch = data_dir / "bigearthnet_s1s2" / "57_38"
    with rasterio.open(patch / "s2.tif") as src:
        profile = dict(src.profile, count=13)
        l1c = np.clip(np.rint(l2a_to_l1c(src.read())), 0, 10000).astype("uint16")
    optical = tmp_path / "s2_l1c.tif"
    with rasterio.open(optical, "w", **profile) as dst:
        dst.write(l1c)
    results = {}
    for keep in (True, False):
        out = tmp_path / f"keep_{keep}.tif"
        jobs.remove_clouds_sar(optical=str(optical), sar=str(patch / "s1.tif"), output=str(out), device="cpu",
                               keep_snow=keep)
        with rasterio.open(out) as dst, rasterio.open(str(out).replace(".tif", "_cloud_probability.tif")) as p:
            results[keep] = (restoration_metrics(dst.read() / 1e4, l1c / 1e4, 1.0)["psnr"], p.read(1),
                             dst.tags().get("SKYCLEAR_KEEP_SNOW"))
    assert results[True][2] == "on" and results[False][2] == "off"
    assert results[True][0] > 40, results[True][0]          # unchanged up to the snow test's ramps
    assert results[False][0] < 25, results[False][0]        # the raw network's harm the test prevents
    assert np.median(results[True][1]) < 0.05 < np.median(results[False][1])


def test_snow_test_leaves_real_clouds_to_the_network(data_dir):
    """On the 15 cloudy SEN12MS-CR scenes (summer, cumulus to overcast) the snow test claims
    almost none of the cloud: what the network is there to remove stays the network's."""
    import rasterio
    from skyclear.plugin.core.tools import S2_BANDS

    scenes = sorted((data_dir / "sen12mscr").glob("*/s2_cloudy.tif"))
    assert len(scenes) == 15
    for path in scenes:
        with rasterio.open(path) as src, rasterio.open(path.with_name("cloud_mask.tif")) as mask:
            weight = snow_weight(src.read().astype(np.float32) / 1e4, S2_BANDS)
            cloud = mask.read(1) > 0
        if cloud.any():
            assert weight[cloud].mean() < 0.02, path.parent.name
