"""Gaussian diffusion for DE in torch: schedule, q_sample, losses, DDPM/DDIM samplers, DE step.

The schedule constants come from the plugin's numpy pipeline
(``plugin/core/pipelines/optical_cloud_removal.py``), so training, the torch sampler and the
plugin's sampler share one definition. The torch sampler mirrors the numpy one line by line
(also its truncated start from q(x0_E, t_start)); ``tests/test_diffusion_schedule.py`` and
``tests/test_diffusion_truncated.py`` check that they agree for a fixed noise sequence.
``sampler_states`` replays the inference sampler to train the WA on the states it visits.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch

from ...plugin.core.pipelines.optical_cloud_removal import (  # noqa: F401  (re-exported)
    BETA_END, BETA_START, ETA_DEFAULT, SAMPLERS, T_DEFAULT, alphas_cumprod, linear_betas,
    respaced_timesteps, sampling_timesteps)


class GaussianDiffusion:
    def __init__(self, T: int = T_DEFAULT, beta_start: float = BETA_START, beta_end: float = BETA_END):
        self.T, self.beta_start, self.beta_end = int(T), float(beta_start), float(beta_end)
        self.betas = linear_betas(self.T, self.beta_start, self.beta_end)
        self.abar = alphas_cumprod(self.T, self.beta_start, self.beta_end)
        self._abar_t = torch.from_numpy(self.abar)  # float64

    def schedule(self) -> dict:
        return {"T": self.T, "beta_start": self.beta_start, "beta_end": self.beta_end}

    def _a(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        a = self._abar_t.to(like.device)[t.long()].to(like.dtype)
        return a.reshape(-1, *([1] * (like.dim() - 1)))

    def sample_t(self, batch: int, device, t_max: Optional[int] = None) -> torch.Tensor:
        """Uniform training timesteps in [0, t_max) (default [0, T))."""
        return torch.randint(0, int(t_max or self.T), (batch,), device=device)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        a = self._a(t, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, clip: bool = True) -> torch.Tensor:
        a = self._a(t, x_t)
        x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
        return x0.clamp(-1, 1) if clip else x0


def clamp_weight(w: torch.Tensor, eta: float) -> torch.Tensor:
    return w.clamp(eta, 1.0)


def fuse(x0_eps: torch.Tensor, x0_ref: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x0_t = (1 - W) * x0_eps + W * x0_E."""
    return (1 - w) * x0_eps + w * x0_ref


def loss_wa(x0: torch.Tensor, x0_eps: torch.Tensor, x0_ref: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Eq. 16: |x0 - [(1 - W) * sg(x0_eps) + W * x0_E]| (mean absolute error)."""
    return (x0 - fuse(x0_eps.detach(), x0_ref, w)).abs().mean()


def loss_ddpm(eps: torch.Tensor, eps_hat: torch.Tensor) -> torch.Tensor:
    """Eq. 7: ||eps - eps_hat||^2 (mean over elements)."""
    return (eps - eps_hat).pow(2).mean()


@torch.no_grad()
def sample(step_fn: Callable, x0_ref: torch.Tensor, noise: Sequence[torch.Tensor], steps: int = 10,
           eta: Optional[float] = ETA_DEFAULT, sampler: str = "ddim", eta_ddim: float = 0.0,
           diffusion: Optional[GaussianDiffusion] = None, t_start: Optional[int] = None) -> torch.Tensor:
    """Torch twin of the plugin's numpy ``sample``: ``step_fn(x_t, t) -> (eps, W)``;
    ``noise[0]`` = x_T (with ``t_start``: the noise of q(x0_E, t_start)), ``noise[i]`` = noise of
    update i. Math in float64, states float32."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}")
    d = diffusion or GaussianDiffusion()
    abar = d.abar
    ts = sampling_timesteps(d.T, steps, t_start)
    ref = x0_ref.double()
    if t_start is None:
        x = noise[0].float()
    else:
        a0 = float(abar[int(t_start)])
        x = (a0 ** 0.5 * ref + (1 - a0) ** 0.5 * noise[0].double()).float()
    x0 = x
    for i, t in enumerate(ts):
        a_t = float(abar[t])
        a_prev = float(abar[ts[i + 1]]) if i + 1 < len(ts) else 1.0
        eps, w = step_fn(x, torch.full((x.shape[0],), float(t), dtype=torch.float32, device=x.device))
        xd, epsd, wd = x.double(), eps.double(), w.double()
        x0_eps = ((xd - (1 - a_t) ** 0.5 * epsd) / a_t ** 0.5).clamp(-1, 1)
        if eta is not None:
            wd = clamp_weight(wd, eta)
        x0 = fuse(x0_eps, ref, wd).float()
        x0d = x0.double()  # the numpy sampler also rounds x0_t to float32 before the update
        if i + 1 == len(ts):
            break
        z = noise[i + 1].double() if i + 1 < len(noise) else None
        if sampler == "ddim":
            e = (xd - a_t ** 0.5 * x0d) / (1 - a_t) ** 0.5
            sigma = eta_ddim * ((1 - a_prev) / (1 - a_t)) ** 0.5 * (1 - a_t / a_prev) ** 0.5
            nxt = a_prev ** 0.5 * x0d + max(1 - a_prev - sigma ** 2, 0.0) ** 0.5 * e
            if sigma > 0 and z is not None:
                nxt = nxt + sigma * z
        else:
            beta = 1 - a_t / a_prev
            mean = (a_prev ** 0.5 * beta / (1 - a_t)) * x0d + ((1 - beta) ** 0.5 * (1 - a_prev) / (1 - a_t)) * xd
            var = beta * (1 - a_prev) / (1 - a_t)
            nxt = mean + var ** 0.5 * z if (var > 0 and z is not None) else mean
        x = nxt.float()
    return x0


def make_noise(shape, steps: int, generator: Optional[torch.Generator] = None) -> List[torch.Tensor]:
    return [torch.randn(shape, generator=generator) for _ in range(steps + 1)]


@torch.no_grad()
def sampler_states(cnp_fn: Callable, wa_fn: Callable, x0_ref: torch.Tensor, steps: int, eta: Optional[float],
                   t_start: Optional[int], diffusion: GaussianDiffusion,
                   generator: Optional[torch.Generator] = None) -> List[tuple]:
    """The states the deterministic DDIM sampler visits at inference, for training the WA on them.

    Runs ``sample`` (DDIM, eta_ddim = 0) with ``cnp_fn(x_t, t) -> eps`` and ``wa_fn(x_t, t) -> W``
    and returns one ``(x_t, t, eps)`` per visited timestep (``t`` a long (B,) tensor). Only noise[0]
    (the start) is random; it is drawn here, on ``x0_ref``'s device."""
    states: List[tuple] = []

    def step(x, t):
        eps = cnp_fn(x, t)
        states.append((x, t.long(), eps))
        return eps, wa_fn(x, t)

    start = torch.randn(x0_ref.shape, generator=generator, device="cpu").to(x0_ref.device)
    sample(step, x0_ref, [start], steps=steps, eta=eta, sampler="ddim", eta_ddim=0.0, diffusion=diffusion,
           t_start=t_start)
    return states
