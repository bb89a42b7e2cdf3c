"""Issue 12, v3: the margin objective (the selection score as a loss), its classical references,
the cosine learning-rate schedule and the separable VIF port."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from skyclear.models.fusion import losses as flosses  # noqa: E402
from skyclear.models.fusion import splits  # noqa: E402
from skyclear.models.fusion.guided_base import GuidedFusionBase  # noqa: E402
from skyclear.models.fusion.network import luminance  # noqa: E402
from skyclear.models.fusion.trainer import FusionTrainer, laplacian_fusion  # noqa: E402
from skyclear.plugin.core.fusion_classical import fuse_laplacian  # noqa: E402
from skyclear.plugin.core.metrics import fusion as fmetrics  # noqa: E402

from factories import TINY_FUSION, cfog_batch  # noqa: E402

torch.set_num_threads(1)

TINY = dict(TINY_FUSION, steps=100, weights={}, objective="margin", margin_temperature=0.003)


def _crop(data_dir, rows=(0, 96), cols=(100, 228)):
    """Real CFOG training crop as tensors in [-1, 1]: optical luminance, SAR (1, 1, H, W)."""
    rasterio = pytest.importorskip("rasterio")
    window = (rows, cols)
    with rasterio.open(data_dir / splits.CFOG_SAR) as s, rasterio.open(data_dir / splits.CFOG_OPTICAL) as o:
        opt = torch.from_numpy(o.read(window=window)[:3] / 127.5 - 1).float()[None]
        sar = torch.from_numpy(s.read(1, window=window) / 127.5 - 1).float()[None, None]
    return luminance(opt), sar


def _gff(y, sar):
    return GuidedFusionBase()(0.5 * (y + 1), 0.5 * (sar + 1)) * 2 - 1


def test_separable_vif_port_equals_the_metric():
    rng = np.random.default_rng(4)
    a = rng.random((70, 90)) * 255
    f = np.clip(0.7 * a + rng.normal(0, 20, a.shape), 0, 255)
    t = lambda v: torch.from_numpy(v / 127.5 - 1)[None, None]  # noqa: E731  (float64: exact comparison)
    assert float(flosses.vif(t(a), t(f))) == pytest.approx(fmetrics.vif(a, f), rel=1e-9)


def test_laplacian_reference_is_the_plugin_method(data_dir):
    y, sar = _crop(data_dir)
    got = laplacian_fusion(y, sar)[0, 0].numpy()
    want = fuse_laplacian(0.5 * (y[0, 0].double().numpy() + 1), 0.5 * (sar[0, 0].double().numpy() + 1)) * 2 - 1
    assert got.shape == y.shape[-2:] and np.abs(got - want).max() < 1e-6


def test_margins_are_relative_gains_over_the_better_classical_method(data_dir):
    y, sar = _crop(data_dir)
    gff, lap = _gff(y, sar), laplacian_fusion(y, sar)
    refs = flosses.classical_references(y, sar, gff, lap)
    vg, vl = flosses.judged_metrics(gff, y, sar), flosses.judged_metrics(lap, y, sar)
    for k in flosses.MARGIN_METRICS:
        assert float(refs[k]) == pytest.approx(max(float(vg[k]), float(vl[k])))
    out = flosses.margin_losses(gff, y, sar, refs)
    for k in flosses.MARGIN_METRICS:   # the guided filter's own margins: 0 where it is the better one
        assert float(out[f"margin_{k}"]) == pytest.approx((float(vg[k]) - float(refs[k])) / float(refs[k]), abs=1e-6)
    worst = min(float(out[f"margin_{k}"]) for k in flosses.MARGIN_METRICS)
    assert worst <= 0.0
    # a smooth -min: within T log 3 of it
    assert -worst <= float(out["margin"]) <= -worst + 0.003 * np.log(3) + 1e-6


def test_descending_the_margin_raises_the_worst_margin(data_dir):
    """Gradient steps on the pixels of the guided-filter result raise the smallest margin (the metric
    that is behind) instead of trading it for one that is already ahead."""
    y, sar = _crop(data_dir, rows=(0, 128), cols=(100, 228))
    gff = _gff(y, sar)
    refs = flosses.classical_references(y, sar, gff, laplacian_fusion(y, sar))
    delta = torch.zeros_like(gff, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=0.01)

    def worst():
        with torch.no_grad():
            out = flosses.margin_losses(gff + delta, y, sar, refs)
        return min(float(out[f"margin_{k}"]) for k in flosses.MARGIN_METRICS)

    before = worst()
    for _ in range(30):
        loss = flosses.margin_losses(gff + delta, y, sar, refs)["margin"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before < 0 and worst() > before + 0.005, (before, worst())


def test_a_few_margin_steps_reduce_the_margin_loss(data_dir):
    torch.manual_seed(0)
    trainer = FusionTrainer(dict(TINY), torch.device("cpu"))
    sar, opt = cfog_batch(data_dir)
    with torch.no_grad():
        before = {k: float(v) for k, v in trainer.losses(sar, opt)[2].items()}
    assert {"margin", "margin_qabf", "margin_vif", "margin_ssim"} <= set(before) and before["content"] == 0.0
    for _ in range(20):
        values = trainer.step(sar, opt)
    assert all(np.isfinite(v) for v in values.values())
    with torch.no_grad():
        after = {k: float(v) for k, v in trainer.losses(sar, opt)[2].items()}
    # from the guided-filter start the lagging metric (SSIM on this batch) is the one that moves
    assert after["margin"] < before["margin"] - 0.001, (before, after)
    assert after["margin_ssim"] > before["margin_ssim"], (before, after)


def test_margin_objective_without_the_base_path_still_has_references(data_dir):
    trainer = FusionTrainer(dict(TINY, use_base=False), torch.device("cpu"))
    sar, opt = cfog_batch(data_dir)
    with torch.no_grad():
        out = trainer.losses(sar, opt)[2]
    assert torch.isfinite(out["margin"]) and float(out["margin"]) > 0.05   # from scratch: far below both


def test_lr_schedules_and_bad_keys():
    cosine = FusionTrainer(dict(TINY, lr_schedule="cosine", lr=1e-3, steps=100), torch.device("cpu"))
    assert cosine.set_step(0) == pytest.approx(1e-3)
    assert cosine.set_step(50) == pytest.approx(5e-4)
    assert cosine.set_step(100) == pytest.approx(0.0, abs=1e-12)
    assert cosine.opt_g.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    constant = FusionTrainer(dict(TINY, objective="content", lr=1e-3), torch.device("cpu"))
    assert constant.set_step(0) == constant.set_step(99) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="objective"):
        FusionTrainer(dict(TINY, objective="pareto"), torch.device("cpu"))
    with pytest.raises(ValueError, match="lr_schedule"):
        FusionTrainer(dict(TINY, lr_schedule="step"), torch.device("cpu"))
