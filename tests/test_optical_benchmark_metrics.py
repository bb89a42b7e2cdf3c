"""The grain metric on synthetic flat + noise images, the benchmark's paired bootstrap, and one
small end-to-end run of benchmarks/quality_optical_cloud_removal.py on tiny exported DE models."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from skyclear.plugin.core.metrics.grain import flat_mask, grain

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import quality_optical_cloud_removal as bench  # noqa: E402


def _scene(seed=0, size=128, texture=2.0):
    """Left half: a smooth ramp with faint texture (flat); right half: strong structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = 100 + 0.05 * xx + texture * rng.standard_normal((size, size))
    right = xx >= size // 2
    img[right] += 40 * np.sin(xx[right] / 2.0) * np.cos(yy[right] / 3.0)
    return np.stack([img, img + 5, img - 5])


def test_flat_mask_picks_the_flat_half():
    scene = _scene()
    mask = flat_mask(scene, flat_fraction=0.3)
    assert mask.sum() == pytest.approx(0.3 * (128 - 4) ** 2, rel=0.02)   # 30 % of the pixels off the border
    assert not mask[:, 64 + 4:].any(), "flat pixels must come from the smooth half"
    with pytest.raises(ValueError):
        flat_mask(scene, flat_fraction=0.0)


def test_grain_ratio_on_synthetic_noise():
    clear = _scene(texture=2.0)
    assert grain(clear, clear)["ratio"] == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    noisy = clear + 4.0 * rng.standard_normal(clear[:1].shape)      # same noise in every band, like grey grain
    r = grain(noisy, clear)
    # high-pass of white noise scales with its std: sqrt(2^2 + 4^2) / 2 = 2.24
    assert r["ratio"] == pytest.approx(np.sqrt(2 ** 2 + 4 ** 2) / 2, rel=0.1)
    assert r["rms_output"] > r["rms_target"]
    blurred = ndimage.gaussian_filter(clear, sigma=(0, 1.5, 1.5))
    assert grain(blurred, clear)["ratio"] < 0.5
    # noise only on the textured half does not count as grain
    busy = clear.copy()
    busy[:, :, 80:] += 10 * rng.standard_normal(busy[:, :, 80:].shape)
    assert grain(busy, clear)["ratio"] == pytest.approx(1.0, abs=0.05)
    # an exactly uniform truth: the floor keeps the ratio finite
    flat = np.full((3, 64, 64), 80.0)
    assert grain(flat + 1.0 * rng.standard_normal((1, 64, 64)), flat)["ratio"] == pytest.approx(0.94 / 0.5, rel=0.1)
    with pytest.raises(ValueError):
        grain(clear[:, :10], clear)


def test_bootstrap_ci():
    mean, lo, hi = bench.bootstrap_ci([0.4] * 12)
    assert mean == lo == hi == pytest.approx(0.4)
    rng = np.random.default_rng(0)
    v = rng.normal(0.5, 1.0, 400)
    mean, lo, hi = bench.bootstrap_ci(v, n_boot=4000)
    half = 1.96 * v.std() / np.sqrt(len(v))
    assert mean == pytest.approx(v.mean())
    assert lo == pytest.approx(mean - half, abs=0.02) and hi == pytest.approx(mean + half, abs=0.02)
    assert bench.bootstrap_ci(v, n_boot=4000) == (mean, lo, hi)      # seeded
    small = bench.bootstrap_ci([1.0, -0.2, 0.3, 0.8, 0.1])
    assert small[1] < small[0] < small[2] and small[1] >= -0.2 and small[2] <= 1.0
    assert all(np.isnan(bench.bootstrap_ci([])))


def test_paired_differences_match_by_image():
    rows = {"reference E": [{"folder": "rice1", "id": "1", "psnr": 20.0}, {"folder": "rice2", "id": "1", "psnr": 30.0},
                            {"folder": "rice2", "id": "2", "psnr": 25.0}],
            "DE 10 steps": [{"folder": "rice2", "id": "1", "psnr": 30.5}, {"folder": "rice1", "id": "1", "psnr": 19.0}]}
    assert sorted(bench.paired_differences(rows, "DE 10 steps")) == [-1.0, 0.5]
    assert bench.paired_differences(rows, "DE 10 steps", folder="rice2") == [0.5]


@pytest.fixture(scope="module")
def tiny_models(data_dir, tmp_path_factory):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from skyclear.models.common.run import RunDir
    from skyclear.models.diffusion.reference import build_reference
    from skyclear.models.diffusion.trainer import export
    from skyclear.models.diffusion.unet import ConditionalNoisePredictor, WeightAllocationNet
    tmp = tmp_path_factory.mktemp("bench_models")
    torch.manual_seed(0)
    cnp_cfg = {"preset": "cnp-tiny", "condition": "cloudy+reference", "prediction": "residual"}
    ref, cnp, wa = (build_reference({"channels": 8, "blocks": 1}, 3), ConditionalNoisePredictor(3, cnp_cfg),
                    WeightAllocationNet(3, "wa-tiny"))
    with torch.no_grad():
        for m in (ref, cnp, wa):
            for p in m.parameters():
                p.add_(torch.randn(p.shape) * 0.03)
    data = str(data_dir / "rice1")
    RunDir(str(tmp / "ref")).save_config({"kind": "de-reference", "bands": 3, "data": data,
                                           "reference": {"channels": 8, "blocks": 1}})
    RunDir(str(tmp / "ref")).save_checkpoint(1, {"models": {"reference": ref.state_dict()}})
    RunDir(str(tmp / "wa")).save_config({"kind": "de-wa", "bands": 3, "cnp": cnp_cfg, "wa": "wa-tiny", "eta": 0.3,
                                          "diffusion": {"T": 1000, "beta_start": 1e-4, "beta_end": 0.02},
                                          "t_start": 200, "reference_run": str(tmp / "ref"), "data": data})
    RunDir(str(tmp / "wa")).save_checkpoint(1, {"models": {"wa": wa.state_dict()}, "frozen": {"cnp": cnp.state_dict()}})
    args = argparse.Namespace(sample=None, size=64)
    export(str(tmp / "ref"), str(tmp / "ref.onnx"), args)
    export(str(tmp / "wa"), str(tmp / "step.onnx"), args)
    return tmp


def test_benchmark_end_to_end(tiny_models, data_dir, capsys):
    out = tiny_models / "metrics.json"
    assert bench.main(["--reference", str(tiny_models / "ref.onnx"), "--step", str(tiny_models / "step.onnx"),
                       "--data", str(data_dir), "--de-pairs", "2", "--steps", "2", "1x2", "5x2", "--threads", "1",
                       "--time-repeats", "1", "--boot", "500", "--metrics-json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Table B: paired per-image differences DE - E" in text and "s / 256² tile" in text
    assert "eta 0.3, t_start 200" in text                     # both read from the step model's card
    summary = json.loads(out.read_text())
    assert summary["eta"] == 0.3 and summary["t_start"] == 200
    entry = summary["paired_de_minus_e"]["DE 2 steps / all"]
    assert entry["n"] == 4 and entry["psnr"]["ci95"][0] <= entry["psnr"]["mean"] <= entry["psnr"]["ci95"][1]
    # the card's default setting (10 steps, 1 sample) is always measured, and the bar judged on it
    assert set(summary["s_per_256_tile_cpu"]) == {"reference E", "DE 2 steps", "DE 1 steps x 2 samples",
                                                  "DE 5 steps x 2 samples", "DE 10 steps"}
    assert summary["card_default"] == "DE 10 steps"
    assert set(summary["issue11_bar_10_step_calls"]) == {"DE 10 steps", "DE 5 steps x 2 samples"}
    means = summary["means"]
    assert means["reference E / rice1"]["n"] == 2 and "grain" in means["DE 2 steps / rice2"]
    assert means["DE 1 steps x 2 samples / all"]["n"] == 4
    # eta = 1 from the command line: DE is E exactly, so every paired difference is 0
    assert bench.main(["--reference", str(tiny_models / "ref.onnx"), "--step", str(tiny_models / "step.onnx"),
                       "--data", str(data_dir), "--de-pairs", "1", "--steps", "3", "--eta", "1", "--threads", "1",
                       "--time-repeats", "0", "--boot", "200", "--folders", "rice1", "--metrics-json", str(out)]) == 0
    entry = json.loads(out.read_text())["paired_de_minus_e"]["DE 3 steps / all"]
    assert entry["psnr"]["mean"] == 0 and entry["ssim"]["mean"] == 0
