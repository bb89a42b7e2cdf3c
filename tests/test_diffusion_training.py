"""DE data readers, the four training losses on real RICE data (tiny models), CLI + resume."""
import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # the test machine is shared

from skyclear.models.diffusion import data as de_data  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
from skyclear.models.diffusion import splits  # noqa: E402
from skyclear.models.diffusion.gaussian import GaussianDiffusion  # noqa: E402
from skyclear.models.diffusion.reference import build_reference  # noqa: E402
from skyclear.models.diffusion.trainer import DEFAULTS, compute_losses, train  # noqa: E402
from skyclear.models.diffusion.unet import ConditionalNoisePredictor, WeightAllocationNet  # noqa: E402


@pytest.fixture(scope="module")
def rice(data_dir):
    return de_data.PairDataset([str(data_dir / "rice1")], "train", 3)


def test_readers_and_split(data_dir, tmp_path):
    pairs = de_data.find_pairs(str(data_dir / "rice1"))
    assert len(pairs) == 80 and pairs[0].pair_id == "9"
    train_ids = {p.pair_id for p in de_data.select_pairs([str(data_dir / "rice1")], "train")}
    test_ids = {p.pair_id for p in de_data.select_pairs([str(data_dir / "rice1")], "test")}
    assert test_ids == set(splits.HELD_OUT["rice1"]) and not (train_ids & test_ids)
    assert len(de_data.select_pairs([str(data_dir / "rice2")], "test")) == len(splits.HELD_OUT["rice2"])
    thin = de_data.find_pairs(str(data_dir / "thin_cloud"))
    assert [p.pair_id for p in thin] == ["pna_1", "pna_27", "pna_9"]
    # CUHK-CR-style layout: cloudy/ + label/ with the same names, 4-band GeoTIFF
    import rasterio
    for sub in ("cloudy", "label"):
        (tmp_path / sub).mkdir()
        arr = np.random.default_rng(0).integers(0, 256, (4, 40, 40), dtype=np.uint8)
        with rasterio.open(tmp_path / sub / "a1.tif", "w", driver="GTiff", width=40, height=40, count=4,
                           dtype="uint8") as dst:
            dst.write(arr)
    ds = de_data.PairDataset([str(tmp_path)], "all", bands=4)
    y, x = ds.batch(np.random.default_rng(0), 2, 32)
    assert y.shape == (2, 4, 32, 32) and y.dtype == np.float32 and -1 <= y.min() and y.max() <= 1


def test_batch_values(rice):
    y, x = rice.batch(np.random.default_rng(0), 3, 64)
    assert y.shape == x.shape == (3, 3, 64, 64)
    assert y.min() >= -1 and y.max() <= 1
    assert de_data.from_net(de_data.to_net(np.arange(256, dtype=np.uint8))).tolist() == list(range(256))


def _loss_drop(kind, models, frozen, config, y, x0, steps=12, lr=3e-3):
    """Overfit one fixed real batch with fixed t/noise (seeded) and return the loss before/after."""
    diffusion = GaussianDiffusion()

    def loss():
        torch.manual_seed(123)  # same t and noise every evaluation
        return compute_losses(kind, config, models, frozen, diffusion, y, x0)["loss"]

    params = [p for m in models.values() for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    with torch.no_grad():
        before = float(loss())
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        after = float(loss())
    return before, after


@pytest.mark.parametrize("kind", ["de-reference", "de-cnp", "de-wa", "de-joint"])
def test_a_few_steps_reduce_each_loss(kind, rice):
    torch.manual_seed(0)
    y_np, x_np = rice.batch(np.random.default_rng(1), 2, 32)
    y, x0 = torch.from_numpy(y_np), torch.from_numpy(x_np)
    config = dict(DEFAULTS, coarse_size=16)
    ref = build_reference({"channels": 8, "blocks": 1}, 3)
    cnp = ConditionalNoisePredictor(3, "cnp-tiny")
    wa = WeightAllocationNet(3, "wa-tiny")
    if kind == "de-reference":
        models, frozen = {"reference": ref}, {}
    elif kind == "de-cnp":
        models, frozen = {"cnp": cnp}, {}
    elif kind == "de-wa":
        models, frozen = {"wa": wa}, {"reference": ref.eval(), "cnp": cnp.eval()}
    else:
        models, frozen = {"cnp": cnp, "wa": wa}, {"reference": ref.eval()}
    before, after = _loss_drop(kind, models, frozen, config, y, x0)
    assert after < 0.9 * before, (kind, before, after)


def test_cli_stages_and_resume(data_dir, tmp_path):
    """The four stages chain through run folders; a second call resumes from the checkpoint."""
    data = str(data_dir / "rice1")

    def run(kind, out, steps, **sets):
        sets.update(steps=steps, threads=1)
        config = os.path.join(REPO, "models", "configs", f"{kind}-tiny.json")
        args = argparse.Namespace(kind=kind, config=config, data=data, out=str(out),
                                  set=[f"{k}={json.dumps(v)}" for k, v in sets.items()], device="cpu", seed=0,
                                  no_resume=False)
        train(args)
        return [json.loads(line) for line in open(out / "metrics.jsonl")]

    ref = tmp_path / "ref"
    run("de-reference", ref, 2)
    log = run("de-reference", ref, 3)          # resumes at step 2, adds one step
    assert [e["step"] for e in log] == [1, 2, 3]
    run("de-cnp", tmp_path / "cnp", 2)
    wa_log = run("de-wa", tmp_path / "wa", 2, reference_run=str(ref), cnp_run=str(tmp_path / "cnp"))
    assert 0 < wa_log[-1]["w_mean"] < 1
    joint_log = run("de-joint", tmp_path / "joint", 2, wa_run=str(tmp_path / "wa"))
    assert {"l_wa", "l_ddpm", "loss"} <= set(joint_log[-1])
