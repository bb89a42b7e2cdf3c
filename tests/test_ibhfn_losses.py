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
