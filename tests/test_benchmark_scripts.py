"""The benchmark scripts run and print sane tables: gpu_check in its CPU smoke form (never needs a
GPU), limits.py on the small benchmark conv, and the FLOP counter against hand formulas."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from factories import conv_model
from skyclear.plugin.core.runtime import gpu_status
from skyclear.plugin.core.zoo import bundled_models

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))

import limits  # noqa: E402
from peer_deepness import benchmark_conv  # noqa: E402


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO / "tests"), os.environ.get("PYTHONPATH")) if p))


def _table_rows(text: str):
    """Data rows of the markdown tables in ``text``, as lists of stripped cells."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


# ------------------------------------------------------------------------------- FLOP counting


def test_conv_flops_match_the_hand_formula(tmp_path):
    # conv 3x3 5 -> 8 (no bias), ReLU, conv 3x3 8 -> 2: MACs per pixel = 9 * (5*8 + 8*2)
    path = conv_model(str(tmp_path / "c.onnx"), 5, 2, hidden=8)
    count = limits.count_flops(path, tile=64)
    assert count["flops"] == 2 * 64 * 64 * 9 * (5 * 8 + 8 * 2)
    assert count["ignored"] == {"Relu": 1}
    assert count["from_onnxruntime"] == 0


def test_benchmark_conv_flops_per_pixel(tmp_path):
    path = benchmark_conv(tmp_path / "b.onnx", tile=96)
    count = limits.count_flops(str(path), tile=96)
    per_pixel = 2 * 9 * (3 * 32 + 32 * 32 + 32 * 1)
    assert count["flops"] == per_pixel * 96 * 96 == 20736 * 96 * 96
    assert count["ignored"] == {"Relu": 2, "Sigmoid": 1}


def test_matmul_gemm_einsum_and_unresolved_shapes(tmp_path):
    """MatMul/Gemm/Einsum MACs, and a MatMul whose shape only onnxruntime can resolve
    (a Reshape to a shape computed at run time is still counted exactly)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((6, 5)).astype(np.float32), "w")
    g = numpy_helper.from_array(rng.standard_normal((7, 5)).astype(np.float32), "g")
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 3, 1]),           # (1, H, W, 6)
        helper.make_node("MatMul", ["xt", "w"], ["m"]),                            # (1, H, W, 5)
        helper.make_node("Shape", ["m"], ["ms"]),
        helper.make_node("ReduceProd", ["ms"], ["n"], keepdims=1),
        helper.make_node("Div", ["n", "five"], ["rows"]),
        helper.make_node("Concat", ["rows", "five"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["m", "flat_shape"], ["flat"]),                # (H*W, 5)
        helper.make_node("Gemm", ["flat", "g"], ["y"], transB=1),                  # (H*W, 7)
        helper.make_node("Einsum", ["flat", "flat"], ["gram"], equation="pc,pd->cd"),
    ]
    five = numpy_helper.from_array(np.array([5], np.int64), "five")
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 6, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("gram", TensorProto.FLOAT, None)],
                              initializer=[w, g, five])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path = str(tmp_path / "mm.onnx")
    onnx.save(model, path)
    count = limits.count_flops(path, tile=16)
    p = 16 * 16
    assert count["per_op"] == {"MatMul": 2 * p * 6 * 5, "Gemm": 2 * p * 5 * 7, "Einsum": 2 * p * 5 * 5}
    assert count["from_onnxruntime"] > 0  # the Reshape target is only known at run time


def test_every_bundled_model_is_counted():
    for path, card in bundled_models():
        count = limits.count_flops(path, card.tile_size)
        per_pixel = count["flops"] / count["pixels"]
        assert 1e3 < per_pixel < 1e8, (path, per_pixel)  # kFLOP..100 MFLOP per pixel for these nets


# ------------------------------------------------------------------------------- scripts


def test_limits_prints_the_table_for_the_conv(tmp_path):
    cmd = [sys.executable, str(BENCH / "limits.py"), "--models", "conv", "--conv-tile", "128", "--runs", "2",
           "--threads", "1", "--matmul-size", "512", "--matmul-runs", "5", "--steps", "0",
           "--cache", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    peak = float(re.search(r"-> peak used for 1 thread\(s\): ([\d.]+) GFLOP/s", proc.stdout).group(1))
    assert peak > 1.0
    header, row = _table_rows(proc.stdout)
    assert header[0] == "model" and "% of peak (1 thr)" in header
    values = dict(zip(header, row))
    assert values["model"].startswith("benchmark conv")
    assert values["tile"] == "128"
    assert float(values["GFLOP / 256²"]) == pytest.approx(20736 * 65536 / 1e9, abs=1e-3)
    assert float(values["GFLOP / tile"]) == pytest.approx(20736 * 128 * 128 / 1e9, abs=1e-3)
    achieved = float(values["GFLOP/s (1 thr)"])
    seconds = float(values["s / tile (1 thr)"])
    assert seconds > 0 and achieved > 0
    assert achieved == pytest.approx(20736 * 128 * 128 / 1e9 / seconds, rel=0.1)  # rounding of s/tile
    # a busy machine can under-measure the peak, so no "< 100 %" here; the ratio must be consistent
    assert float(values["% of peak (1 thr)"].rstrip(" %")) == pytest.approx(100 * achieved / peak, abs=1.0)


def test_gpu_check_smoke_runs_every_bundled_model_on_cpu(tmp_path):
    env = dict(_env(), PYTHON=sys.executable)
    cmd = ["bash", str(BENCH / "gpu_check.sh"), "--smoke", "--size", "128", "--steps", "1",
           "--cache", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cuda, reason = gpu_status()
    if not cuda:
        assert f"CUDA not available: {reason}" in proc.stdout
    rows = _table_rows(proc.stdout)
    header, rows = rows[0], rows[1:]
    assert header[0] == "case"
    names = " ".join(r[0] for r in rows)
    for path, card in bundled_models():
        assert Path(path).stem in names  # the step graph runs inside the DE case
    assert any("(1 steps)" in r[0] for r in rows)
    assert any(r[0].startswith("benchmark conv") for r in rows)
    for r in rows:
        assert "ERROR" not in r[-1], r
        job, model = (float(v) for v in r[1].split(" / "))
        assert 0 < job <= model  # the model calls are part of the job
        if not cuda:
            assert r[-1] == "not checked (no CUDA)"
        else:
            assert r[-1].startswith("agree"), r
    assert not list((tmp_path / "outputs").glob("*.tif"))  # outputs cleaned up


def test_gpu_check_compare_flags_differences_beyond_tolerance(tmp_path):
    """The CPU-vs-CUDA comparison itself, on two CPU-made rasters: equal, within, beyond tolerance."""
    import gpu_check
    from factories import write_raster

    base = np.random.default_rng(0).integers(0, 10000, (2, 300, 300)).astype("uint16")
    a = write_raster(str(tmp_path / "a.tif"), base)
    same = write_raster(str(tmp_path / "same.tif"), base.copy())
    near = base.copy()
    near[0, :10, :10] += 3  # 3 DN in 100 pixels: far below 1e-3 of the 10 000 range on average
    near = write_raster(str(tmp_path / "near.tif"), near)
    far = base.astype("int32")
    far[1] = np.clip(far[1] + 300, 0, 65535)  # 3 % of the range everywhere in band 2
    far = write_raster(str(tmp_path / "far.tif"), far.astype("uint16"))
    spans = {"restored": [10000.0, 10000.0]}

    ok, text = gpu_check.compare({"restored": a}, {"restored": same}, spans, 1e-3, 1e-2)
    assert ok and "max |diff| 0.0e+00" in text
    ok, text = gpu_check.compare({"restored": a}, {"restored": near}, spans, 1e-3, 1e-2)
    assert ok and "3.0e-04" in text and "band 1" in text
    ok, text = gpu_check.compare({"restored": a}, {"restored": far}, spans, 1e-3, 1e-2)
    assert not ok and "restored band 2" in text and "band 1" not in text
    ok, text = gpu_check.compare({"restored": a}, {}, spans, 1e-3, 1e-2)
    assert not ok and "missing" in text


def test_peer_benchmark_skips_deepness_with_a_reason(tmp_path, monkeypatch):
    import peer_deepness

    monkeypatch.setattr(peer_deepness, "DEEPNESS_SRC", tmp_path / "absent" / "src")
    reason = peer_deepness.deepness_unavailable(tmp_path / "deps", install=False)
    assert reason == f"Deepness source not found at {tmp_path / 'absent' / 'src'}"


@pytest.mark.parametrize("via,command", [("processing", "skyclear-process"), ("batch", "skyclear-batch")])
def test_peer_benchmark_skyclear_row(tmp_path, via, command):
    """The SkyClear half end to end (through qgis_process, or the QGIS-free batch command) on a
    small scene; Deepness not run."""
    if not (REPO / ".venv" / "bin" / command).exists():
        pytest.skip(f"{command} not installed (make setup)")
    cmd = [sys.executable, str(BENCH / "peer_deepness.py"), "--only", "skyclear", "--sizes", "600",
           "--cache", str(tmp_path), "--skyclear-via", via]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header, row = _table_rows(proc.stdout)
    assert header[:3] == ["scene", "SkyClear wall / peak RSS", "Deepness wall / peak RSS"]
    assert row[0] == "600²" and row[2] == "skipped: not requested"
    wall, rss = re.fullmatch(r"([\d.]+) s / ([\d ]+) MB", row[1]).groups()
    assert 0 < float(wall) < 170 and 100 < float(rss.replace(" ", "")) < 8000
    assert "SkyClear 600²: output 600x600 float32" in proc.stdout


def test_fusion_headroom_prints_the_bound_table():
    """Two free-pixel steps on the validation pairs: the table has the two classical rows, the bound
    and the bar, and the bar row repeats the classical values it is made of."""
    data = REPO / ".." / "shared" / "data"
    if not data.is_dir():
        pytest.skip("../shared/data is not present")
    proc = subprocess.run([sys.executable, str(BENCH / "fusion_headroom.py"), "--steps", "2"],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r[0]: r[1:] for r in _table_rows(proc.stdout)}
    guided, laplacian, bar = (rows["guided filter"], rows["laplacian pyramid"],
                              rows["bar (guided Qabf, guided VIF, Laplacian SSIM)"])
    assert bar[:3] == [guided[0], guided[1], laplacian[2]]
    assert "free pixels (bound)" in rows and float(guided[3]) < 0 and float(laplacian[3]) < 0
