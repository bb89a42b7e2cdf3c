"""The QGIS-free SAR cloud-removal tile processor and keep_clear_pixels."""
from pathlib import Path

import numpy as np
import pytest

from skyclear.plugin.core.pipelines.sar_cloud_removal import (SarCloudRemovalProcessor, cloud_probability,
                                                              keep_clear_pixels)

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
