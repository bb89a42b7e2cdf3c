"""IB-HFN losses and the dynamic weighting schedule."""
import math

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # the test machine is shared; oversubscribed threads are much slower

from skyclear.models.ibhfn.losses import (LossSchedule, blur, contrastive_sharpness, ramp, sam, ssim,  # noqa: E402
                                          total_loss)


def test_ssim_identity_and_degradation():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-5)
    assert float(ssim(x, blur(x))) < 0.9


def test_ssim_matches_skimage():
    skm = pytest.importorskip("skimage.metrics")
    torch.manual_seed(1)
    x = torch.rand(1, 1, 48, 48)
    y = (x + 0.1 * torch.rand(1, 1, 48, 48)).clamp(0, 1)
    ref = skm.structural_similarity(x[0, 0].double().numpy(), y[0, 0].double().numpy(), data_range=1.0,
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)[1]
    assert float(ssim(x, y)) == pytest.approx(float(ref[5:-5, 5:-5].mean()), abs=1e-4)


def test_sam_zero_for_scaled_spectra_and_right_angle():
    x = torch.rand(1, 13, 8, 8) + 0.1
    assert float(sam(x, 2 * x)) == pytest.approx(0.0, abs=2e-3)
    a = torch.zeros(1, 2, 1, 1); a[:, 0] = 1
    b = torch.zeros(1, 2, 1, 1); b[:, 1] = 1
    assert float(sam(a, b)) == pytest.approx(math.pi / 2, abs=1e-3)


def test_contrastive_sharpness_prefers_sharp():
    torch.manual_seed(0)
    t = torch.rand(1, 3, 32, 32)
    assert float(contrastive_sharpness(t, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(contrastive_sharpness(blur(t), t)) > 0.5


def test_schedule_ramps():
    assert ramp(0, 10, delay=5) == 0.0
    assert ramp(10, 10, delay=5) == pytest.approx(0.5)
    assert ramp(100, 10) == 1.0
    assert ramp(5, 10, shape="cosine") == pytest.approx(0.5)
    s = LossSchedule({"ssim": 0.2, "kl": 0.01}, warmup=10, delay=0)
    w0, w10 = s(0), s(10)
    assert w0["ssim"] == 0 and w0["kl"] == 0 and w0["l1"] == 1.0
    assert w10["ssim"] == pytest.approx(0.2) and w10["kl"] == pytest.approx(0.01)


def test_total_loss_logs_every_term_and_backprops():
    pred = torch.rand(2, 13, 16, 16, requires_grad=True)
    target = torch.rand(2, 13, 16, 16)
    clear = torch.rand(2, 1, 16, 16, requires_grad=True)
    mask = (torch.rand(2, 1, 16, 16) > 0.5).float()
    loss, logged = total_loss(pred, target, torch.tensor(0.3), LossSchedule(warmup=0)(0), clear, mask,
                              torch.tensor([1.0, 0.0]))
    for k in ("l1", "ssim", "sam", "sharp", "kl", "gate"):
        assert f"loss_{k}" in logged and f"w_{k}" in logged
    assert logged["loss"] == pytest.approx(float(loss))
    loss.backward()
    assert pred.grad is not None and clear.grad is not None
    assert float(clear.grad[1].abs().sum()) == 0.0  # sample without a mask gets no gate loss


# ------------------------------------------------------------------------------------------
# 2.0: sharpness forms that do not reward stripes, gate targets


def _textured(seed=0, b=4, size=64):
    """Smooth random texture with edges (a stand-in for land cover)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 13, size // 8, size // 8, generator=g)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="nearest")
    return blur(x, 3, 0.7) * 0.3


def test_ratio_sharpness_rewards_stripes_the_new_forms_do_not():
    """Where the output cannot know the target's detail (here: it is a blurred target), adding a
    period-2 vertical stripe lowers the 1.x ratio term: the origin of the 1.x stripes."""
    from skyclear.models.ibhfn.losses import sharpness
    target = _textured()
    pred = blur(target, 5, 2.0)
    stripe = 0.003 * (-1.0) ** torch.arange(64).view(1, 1, 1, 64)
    assert float(sharpness(pred + stripe, target, "ratio")) < float(sharpness(pred, target, "ratio"))
    for mode in ("nce", "l1"):
        assert float(sharpness(pred + stripe, target, mode)) > float(sharpness(pred, target, mode)), mode


def test_nce_sharpness_prefers_the_sharp_target_and_backprops():
    from skyclear.models.ibhfn.losses import contrastive_sharpness_nce
    target = _textured(1)
    exact = float(contrastive_sharpness_nce(target, target))
    blurred = float(contrastive_sharpness_nce(blur(target, 5, 2.0), target))
    shuffled = float(contrastive_sharpness_nce(target.flip(0), target))
    assert exact < blurred and exact < shuffled
    pred = blur(target).requires_grad_(True)
    contrastive_sharpness_nce(pred, target).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and float(pred.grad.abs().sum()) > 0


def test_gate_targets():
    from skyclear.models.ibhfn.losses import gate_target_for, reliability_target
    target = torch.full((2, 13, 16, 16), 0.1)
    cloudy = target.clone()
    cloudy[:, :, :, 8:] += 0.3          # right half: cloud
    cloudy[1] += 0.04                    # sample 1: haze everywhere, missed by the mask
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, :, 8:] = 1
    has = torch.tensor([1.0, 1.0])
    rel = reliability_target(cloudy, target, tau=0.03)
    assert rel.shape == (2, 1, 16, 16)
    assert float(rel[0, 0, :, :4].min()) > 0.99 and float(rel[0, 0, :, 12:].max()) < 0.01
    assert float(rel[1, 0, :, :4].max()) < 0.3     # haze is not "copy me", unlike the mask target
    clear_m, w_m = gate_target_for("mask", cloudy, target, mask, has)
    assert float(clear_m[1, 0, :, :4].min()) == 1.0 and torch.equal(w_m, has)
    clear_r, w_r = gate_target_for("reliability", cloudy, target, mask, torch.tensor([0.0, 1.0]))
    assert torch.equal(clear_r, rel) and torch.equal(w_r, torch.ones(2))  # no mask needed
    assert gate_target_for("none", cloudy, target, mask, has) is None
    with pytest.raises(ValueError):
        gate_target_for("haze", cloudy, target, mask, has)
    with pytest.raises(ValueError, match="sharp_mode"):
        LossSchedule(sharp_mode="laplace")
