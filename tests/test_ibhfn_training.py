"""IB-HFN data, training and export on real SEN12MS-CR triplets (tiny configs, seconds)."""
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # the test machine is shared; oversubscribed threads are much slower

from skyclear.models.ibhfn import splits  # noqa: E402
from skyclear.models.ibhfn.data import (S1_BANDS, S2_BANDS, TripletDataset, composite_cloud,  # noqa: E402
                                        find_samples, load_sample, postprocess, preprocess)
from skyclear.models.ibhfn.losses import LossSchedule, total_loss  # noqa: E402
from skyclear.models.ibhfn.network import IBHFN  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data" / "sen12mscr"
CONFIGS = REPO / "models" / "configs"
needs_data = pytest.mark.skipif(not (DATA / "oriolac_0581" / "s1.tif").exists(), reason="shared data absent")


def test_preprocess_card_convention():
    s1 = np.array([[[-30.0, -25.0, -12.5, 0.0, 3.0]], [[-40.0, -32.5, -16.25, 0.0, 1.0]]], np.float32)
    out = preprocess(s1, S1_BANDS)
    assert np.allclose(out[0, 0], [0, 0, 0.5, 1, 1]) and np.allclose(out[1, 0], [0, 0, 0.5, 1, 1])
    s2 = np.full((13, 1, 3), [0, 5000, 20000], np.float32)
    assert np.allclose(preprocess(s2, S2_BANDS)[:, 0], [0, 0.5, 1])
    assert postprocess(np.full((13, 1, 1), 0.12345, np.float32), S2_BANDS).dtype == np.uint16
    assert int(postprocess(np.full((13, 1, 1), 0.12341, np.float32), S2_BANDS)[0, 0, 0]) == 1234


def test_splits_are_disjoint():
    ids = [f"oriolac_{i:04d}" for i in (581, 746, 1302, 2729, 3968, 4065, 4294, 4433, 4438, 5278, 5349,
                                        6317, 6780, 7264, 7657)]
    train, val, held = splits.split_ids(ids)
    assert sorted(held) == sorted(splits.HELDOUT) and val == list(splits.VALIDATION)
    assert not set(train) & set(held) and not set(val) & set(held) and len(train) == 10


@needs_data
def test_reader_shared_layout():
    files = find_samples(str(DATA))
    assert len(files) >= 15 and files[0].cloud_mask
    s = load_sample(files[0])
    assert s.sar.shape == (2, 256, 256) and s.cloudy.shape == (13, 256, 256) and s.mask.shape == (1, 256, 256)
    for a in (s.sar, s.cloudy, s.clear):
        assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1


def test_reader_official_layout(tmp_path):
    rasterio = pytest.importorskip("rasterio")

    def write(path, count, dtype):
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=count, dtype=dtype) as dst:
            dst.write(np.ones((count, 8, 8), dtype))
    for kind, count, dtype in (("s1", 2, "float32"), ("s2", 13, "uint16"), ("s2_cloudy", 13, "uint16")):
        write(tmp_path / f"ROIs1158_spring_{kind}" / f"{kind}_1" / f"ROIs1158_spring_{kind}_1_p30.tif", count, dtype)
    files = find_samples(str(tmp_path))
    assert len(files) == 1
    f = files[0]
    assert f.s2_cloudfree.endswith("ROIs1158_spring_s2_1_p30.tif")
    assert f.s2_cloudy.endswith("ROIs1158_spring_s2_cloudy_1_p30.tif") and f.cloud_mask is None
    assert load_sample(f).cloudy.shape == (13, 8, 8)


@needs_data
def test_dataset_deterministic_and_synthetic():
    files = [f for f in find_samples(str(DATA)) if f.id not in splits.HELDOUT][:3]
    ds = TripletDataset(files, crop=32, seed=3, synthetic_p=1.0)
    a, b = ds[7], ds[7]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert a["optical"].shape == (13, 32, 32) and a["sar"].shape == (2, 32, 32) and a["has_mask"] == 1.0
    clear = np.full((13, 4, 4), 0.1, np.float32)
    cloudy, mask = composite_cloud(clear, clear + 0.3, clear, np.ones((1, 4, 4), np.float32))
    assert np.allclose(cloudy, 0.4) and mask.sum() == 16


@needs_data
def test_few_training_steps_reduce_loss_on_real_data():
    torch.manual_seed(0)
    files = [f for f in find_samples(str(DATA)) if f.id not in splits.HELDOUT]
    ds = TripletDataset(files, crop=32, seed=0, synthetic_p=0.0)
    batch = {k: torch.as_tensor(np.stack([ds[i][k] for i in range(4)])) for k in ds[0]}
    cfg = json.loads((CONFIGS / "ibhfn-tiny.json").read_text())
    model = IBHFN(**cfg["model"])
    optim = torch.optim.Adam(model.parameters(), lr=2e-3)
    weights = LossSchedule(warmup=0)(0)
    losses = []
    for _ in range(15):
        restored, clear, kl = model(batch["optical"], batch["sar"])
        loss, _ = total_loss(restored, batch["target"], kl, weights, clear, batch["mask"], batch["has_mask"])
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]


# the 2.0 recipe on the tiny network: every new option on (bottleneck on all SAR paths, affine clear
# path, reliability gate target, InfoNCE sharpness, harder composites, extra sources)
RECIPE_2 = ["--set", 'model.bottleneck="all"', "--set", 'model.clear_path="affine"',
            "--set", 'loss.gate_target="reliability"', "--set", 'loss.sharp_mode="nce"', "--set", "synthetic_p=0.5",
            "--set", "composite={}", "--set", "extra_p=0.5", "--set", "real_extra_p=0.2",
            "--set", 'extra={"clear": ["bigearthnet", "ssl4eo"], "real": ["ssl4eo"], "cloud_layers": ["sen12mscr_ts"]}']


@needs_data
@pytest.mark.parametrize("kind,recipe", [("ibhfn", []), ("dsen2cr", []), ("ibhfn", RECIPE_2)],
                         ids=["ibhfn", "dsen2cr", "ibhfn-recipe2"])
def test_train_resume_and_export_tiny(kind, recipe, tmp_path):
    from skyclear.models import export as export_cli
    from skyclear.models import train as train_cli
    from skyclear.plugin.core.model_card import read_card
    run = tmp_path / "run"
    argv = [kind, "--config", str(CONFIGS / f"{kind}-tiny.json"), "--data", str(DATA), "--out", str(run),
            "--quiet"] + recipe + ["--set", "steps=3", "--device", "cpu"]
    assert train_cli.main(argv) == 0
    assert (run / "checkpoints" / "last.pt").exists()
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"loss_l1", "loss_ssim", "loss_sam", "loss_sharp", "loss_kl", "w_kl"} <= set().union(*logged)
    config = json.loads((run / "config.json").read_text())
    assert not set(config["split"]["train"]) & set(splits.HELDOUT)
    if recipe:
        assert {"kl_deep", "kl_skip0", "kl_skip1", "loss_gate", "clear_prob_mean"} <= set().union(*logged)
        used = config["split"]["extra_used"]
        assert len(used["clear"]) == 7 and used["real"] and len(used["cloud_layers"]) >= 10
        assert config["split"]["extra_dropped_for_overlap"] == []
    assert train_cli.main(argv[:-4] + ["--set", "steps=4", "--device", "cpu"]) == 0  # resumes at 3
    steps = [e["step"] for e in (json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines())
             if "loss" in e]
    assert steps == [1, 2, 3, 4]
    onnx_path = tmp_path / "m.onnx"
    assert export_cli.main([str(run), "--out", str(onnx_path)]) == 0
    card = read_card(str(onnx_path))
    assert card.task == "sar_cloud_removal"
    assert [i.name for i in card.inputs] == ["optical", "sar"] and [i.role for i in card.inputs] == ["optical", "sar"]
    assert [o.name for o in card.outputs] == ["restored", "clear_probability"]
    assert card.output("restored").dtype == "uint16" and len(card.output("restored").bands) == 13
    assert card.input("sar").bands[0].clip == [-25.0, 0.0] and card.input("sar").bands[1].offset == -32.5
    assert card.training["onnx_vs_torch_max_abs_diff"] < 1e-4
    assert card.training["onnx_check_sample"] in splits.HELDOUT
    assert set(card.training["metrics"]["samples"]) == set(splits.HELDOUT)
    # ONNX == torch on a real sample through onnxruntime
    import onnxruntime as ort
    from skyclear.models.ibhfn.trainer import load_trained
    model, _, _ = load_trained(str(run))
    s = load_sample({f.id: f for f in find_samples(str(DATA))}["oriolac_5278"])
    opt, sar = s.cloudy[None, :, :64, :64].copy(), s.sar[None, :, :64, :64].copy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"optical": opt, "sar": sar})
    with torch.no_grad():
        want = model(torch.from_numpy(opt), torch.from_numpy(sar))
    assert max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want)) < 1e-4


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("ibhfn-*.json")) + sorted(CONFIGS.glob("dsen2cr-*.json")),
                         ids=lambda p: p.stem)
def test_configs_use_known_keys_and_build(path):
    """Every IB-HFN/baseline config: known keys only (a typo would be silently ignored) and it builds."""
    from skyclear.models.ibhfn.network import build_model
    from skyclear.models.ibhfn.trainer import check_config_keys
    config = json.loads(path.read_text())
    check_config_keys(config, path.name)
    assert config["kind"] in ("ibhfn", "dsen2cr") and path.stem.startswith(config["kind"])
    build_model(config["kind"], config)
    LossSchedule(**config.get("loss", {}))


def test_config_typos_fail_clearly():
    from skyclear.models.ibhfn.trainer import check_config_keys
    for bad, name in (({"stpes": 3}, "'stpes'"), ({"composite": {"opacity_": [0, 1]}}, "composite.opacity_"),
                      ({"extra": {"clear_pairs": []}}, "extra.clear_pairs"), ({"loss": {"gate": "mask"}}, "loss.gate")):
        with pytest.raises(SystemExit, match=name):
            check_config_keys(bad)
