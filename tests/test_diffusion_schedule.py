"""DE schedule, samplers, W clamp and one DE step against hand computations (numpy and torch)."""
import math

import numpy as np
import pytest

from skyclear.plugin.core.pipelines import optical_cloud_removal as ocr

torch = pytest.importorskip("torch")
from skyclear.models.diffusion import gaussian  # noqa: E402


def test_schedule_constants():
    betas = ocr.linear_betas()
    assert betas.shape == (1000,) and betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    abar = ocr.alphas_cumprod()
    assert np.all(np.diff(abar) < 0), "abar_t must be strictly decreasing"
    assert 0 < abar[-1] < abar[0] < 1
    assert abar[0] == pytest.approx(1 - 1e-4)
    assert abar[-1] == pytest.approx(4.04e-5, rel=0.02)  # the well-known DDPM value
    # product computed independently
    assert abar[499] == pytest.approx(math.prod(1 - (1e-4 + (0.02 - 1e-4) * i / 999) for i in range(500)), rel=1e-12)
    # torch side uses the same constants
    assert np.array_equal(gaussian.GaussianDiffusion().abar, abar)


@pytest.mark.parametrize("steps", [1, 5, 10, 25, 50, 1000])
def test_respacing(steps):
    ts = ocr.respaced_timesteps(1000, steps)
    assert len(ts) == steps == len(np.unique(ts))
    assert ts[-1] == 999 and (steps == 1 or ts[0] == 0)
    assert np.all(np.diff(ts) > 0)
    with pytest.raises(ValueError):
        ocr.respaced_timesteps(1000, 0)


def _toy_step(x, t):
    """A fixed, deterministic stand-in for the step graph: eps depends on x_t and t; W = 0."""
    eps = 0.5 * np.tanh(x) + 0.1 * np.cos(x * 3.0 + t[:, None, None, None] / 100.0)
    return eps.astype(np.float32), np.zeros_like(x)


def test_ddim_full_steps_equals_ddpm_mean_path():
    """What is compared, precisely.

    The *deterministic DDPM mean path* is x_{t-1} = mu~_t(x_t, x0_t) (the posterior mean, no noise
    added), for t = T-1..0 over all T timesteps. DDIM with all T steps reproduces it exactly when its
    sigma_t equals the DDPM posterior std (eta_ddim = 1) and the noise is zero, because then
    sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps' = mu~_t identically. With the same
    non-zero noise sequence, DDIM(eta_ddim=1) and DDPM give the same samples too.
    DDIM with eta_ddim = 0 is a *different* deterministic path (the ODE path): the test checks that
    it does differ, so a sampler that ignored eta_ddim, or a DDPM mean with wrong coefficients,
    would fail here.
    """
    rng = np.random.default_rng(0)
    shape = (2, 3, 8, 8)
    x_T = rng.standard_normal(shape).astype(np.float32)
    x_ref = rng.uniform(-1, 1, shape).astype(np.float32)
    zeros = [x_T] + [np.zeros(shape, np.float32)] * 1000
    ddpm_mean = ocr.sample(_toy_step, x_ref, zeros, steps=1000, eta=None, sampler="ddpm")
    ddim_1 = ocr.sample(_toy_step, x_ref, zeros, steps=1000, eta=None, sampler="ddim", eta_ddim=1.0)
    assert np.abs(ddim_1 - ddpm_mean).max() < 1e-5

    noise = [x_T] + [rng.standard_normal(shape).astype(np.float32) for _ in range(1000)]
    ddpm = ocr.sample(_toy_step, x_ref, noise, steps=1000, eta=None, sampler="ddpm")
    ddim_noisy = ocr.sample(_toy_step, x_ref, noise, steps=1000, eta=None, sampler="ddim", eta_ddim=1.0)
    assert np.abs(ddim_noisy - ddpm).max() < 1e-4

    ddim_0 = ocr.sample(_toy_step, x_ref, zeros, steps=1000, eta=None, sampler="ddim", eta_ddim=0.0)
    assert np.abs(ddim_0 - ddpm_mean).max() > 1e-3, "eta_ddim=0 must not coincide with the DDPM mean path"


def test_ddpm_update_matches_eps_form_mean():
    """mu~_t(x_t, x0(eps)) = (x_t - beta_t / sqrt(1 - abar_t) * eps) / sqrt(alpha_t) (DDPM eq. 11)."""
    betas, abar = ocr.linear_betas(), ocr.alphas_cumprod()
    rng = np.random.default_rng(1)
    x_t = rng.standard_normal((1, 3, 4, 4)) * 0.3
    eps = rng.standard_normal((1, 3, 4, 4)) * 0.3
    for t in (1, 10, 500, 999):
        x0 = (x_t - np.sqrt(1 - abar[t]) * eps) / np.sqrt(abar[t])
        got = ocr.ddpm_update(x_t, x0, abar[t], abar[t - 1], None)
        want = (x_t - betas[t] / np.sqrt(1 - abar[t]) * eps) / np.sqrt(1 - betas[t])
        assert np.abs(got - want).max() < 1e-5


def test_weight_clamp():
    w = np.array([-0.5, 0.0, 0.1, 0.3, 0.7, 1.0, 1.4], np.float32)
    assert np.allclose(ocr.clamp_weight(w, 0.3), [0.3, 0.3, 0.3, 0.3, 0.7, 1.0, 1.0])
    assert np.allclose(gaussian.clamp_weight(torch.from_numpy(w), 0.3).numpy(), ocr.clamp_weight(w, 0.3))
    # W = 0 from the network still mixes in eta of x0_E at inference
    x_t = np.zeros((1, 1, 1, 1), np.float32)
    out = ocr.de_x0(x_t, np.zeros_like(x_t), np.zeros_like(x_t), np.ones_like(x_t), 0.5, eta=0.3)
    assert out.item() == pytest.approx(0.3)
    out = ocr.de_x0(x_t, np.zeros_like(x_t), np.zeros_like(x_t), np.ones_like(x_t), 0.5, eta=None)
    assert out.item() == pytest.approx(0.0)


def test_one_de_step_by_hand():
    """x0_eps, fusion with clamped W, then the DDIM update, written out with scalars."""
    T, t, t_prev, eta = 1000, 500, 400, 0.3
    abar = lambda s: math.prod(1 - (1e-4 + (0.02 - 1e-4) * i / (T - 1)) for i in range(s + 1))
    a, ap = abar(t), abar(t_prev)
    x_t = [0.5, -0.2, 1.5, -2.0]
    eps = [0.1, 0.3, -0.9, 0.8]
    w = [0.1, 0.9, 0.5, 1.2]       # 0.1 -> 0.3 and 1.2 -> 1.0 by the clamp
    ref = [0.2, -0.4, 0.6, -0.1]
    want_x0, want_prev = [], []
    for xi, ei, wi, ri in zip(x_t, eps, w, ref):
        x0e = min(1.0, max(-1.0, (xi - math.sqrt(1 - a) * ei) / math.sqrt(a)))
        wc = min(1.0, max(eta, wi))
        x0 = (1 - wc) * x0e + wc * ri
        e2 = (xi - math.sqrt(a) * x0) / math.sqrt(1 - a)
        want_x0.append(x0)
        want_prev.append(math.sqrt(ap) * x0 + math.sqrt(1 - ap) * e2)
    arr = lambda v: np.array(v, np.float32).reshape(1, 4, 1, 1)
    x0 = ocr.de_x0(arr(x_t), arr(eps), arr(w), arr(ref), a, eta)
    assert np.allclose(x0.ravel(), want_x0, atol=1e-6)
    prev = ocr.ddim_update(arr(x_t), x0, a, ap, None, 0.0)
    assert np.allclose(prev.ravel(), want_prev, atol=1e-5)
    # the torch twin: a 2-step sampler over timesteps (t, 0) runs exactly this step first
    d = gaussian.GaussianDiffusion()
    x0_torch = gaussian.fuse(d.x0_from_eps(torch.from_numpy(arr(x_t)), torch.tensor([t]), torch.from_numpy(arr(eps))),
                             torch.from_numpy(arr(ref)), gaussian.clamp_weight(torch.from_numpy(arr(w)), eta))
    assert np.allclose(x0_torch.numpy().ravel(), want_x0, atol=1e-6)


def test_numpy_and_torch_samplers_agree_on_toy_model():
    rng = np.random.default_rng(3)
    shape = (2, 3, 8, 8)
    ref = rng.uniform(-1, 1, shape).astype(np.float32)
    noise = [rng.standard_normal(shape).astype(np.float32) for _ in range(11)]

    def step_np(x, t):
        eps, _ = _toy_step(x, t)
        return eps, (0.5 + 0.4 * np.sin(x)).astype(np.float32)

    def step_torch(x, t):
        eps, w = step_np(x.numpy(), t.numpy())
        return torch.from_numpy(eps), torch.from_numpy(w)

    for sampler, eta_ddim in (("ddim", 0.0), ("ddim", 0.5), ("ddpm", 0.0)):
        a = ocr.sample(step_np, ref, noise, 10, 0.3, sampler, eta_ddim)
        b = gaussian.sample(step_torch, torch.from_numpy(ref), [torch.from_numpy(n) for n in noise], 10, 0.3,
                            sampler, eta_ddim).numpy()
        assert np.abs(a - b).max() < 1e-5, sampler
