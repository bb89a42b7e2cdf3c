"""IB-HFN losses: L1, SSIM, SAM, contrastive sharpness, KL (+ optional gate supervision),
with the dynamic weighting schedule (warm-up ramps for beta and the perceptual terms).

All images are (B, C, H, W) in network units (reflectance in [0, 1] for S2).
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.nn.functional as F


def gaussian_window(size: int = 11, sigma: float = 1.5, device=None, dtype=torch.float32) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, size: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM (Gaussian 11x11 window, sigma 1.5, K1=0.01, K2=0.03), per channel: torchmetrics'."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(pred, target, data_range=data_range, gaussian_kernel=True,
                                               kernel_size=size, sigma=sigma)


def sam(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean spectral angle in radians over pixels."""
    dot = (pred * target).sum(1)
    norm = pred.norm(dim=1) * target.norm(dim=1) + eps
    return torch.acos((dot / norm).clamp(-1 + 1e-6, 1 - 1e-6)).mean()


_LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def high_pass(x: torch.Tensor) -> torch.Tensor:
    """Per-channel Laplacian response (replicate padding)."""
    c = x.shape[1]
    k = _LAPLACE.to(x.device, x.dtype).expand(c, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c)


def blur(x: torch.Tensor, size: int = 5, sigma: float = 1.5) -> torch.Tensor:
    c = x.shape[1]
    w = gaussian_window(size, sigma, x.device, x.dtype).expand(c, 1, size, size)
    p = size // 2
    return F.conv2d(F.pad(x, (p, p, p, p), mode="replicate"), w, groups=c)


def contrastive_sharpness(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """High-frequency response of the output pulled toward the target's (positive) and pushed
    away from that of a blurred copy of the target (negative): L1(pos) / (L1(neg) + eps)."""
    hp = high_pass(pred)
    pos = F.l1_loss(hp, high_pass(target))
    neg = F.l1_loss(hp, high_pass(blur(target)).detach())
    return pos / (neg + eps)


def ramp(step: int, warmup: int, delay: int = 0, shape: str = "linear") -> float:
    """0 until ``delay``, then ramps to 1 over ``warmup`` steps (linear or cosine), then 1."""
    if step < delay:
        return 0.0
    if warmup <= 0:
        return 1.0
    t = min(1.0, (step - delay) / warmup)
    return t if shape == "linear" else 0.5 * (1 - math.cos(math.pi * t))


DEFAULT_WEIGHTS = {"l1": 1.0, "ssim": 0.2, "sam": 0.1, "sharp": 0.05, "kl": 1e-3, "gate": 0.1}


class LossSchedule:
    """Weights per step: L1 and gate are constant; SSIM, SAM and sharpness ('perceptual') and
    beta (KL) ramp up after ``delay`` over ``warmup`` steps, so early training is pure
    reconstruction."""

    def __init__(self, weights: Optional[Dict[str, float]] = None, warmup: int = 500, delay: int = 0,
                 shape: str = "linear", kl_warmup: Optional[int] = None):
        self.weights = dict(DEFAULT_WEIGHTS, **(weights or {}))
        self.warmup, self.delay, self.shape = warmup, delay, shape
        self.kl_warmup = warmup if kl_warmup is None else kl_warmup

    def __call__(self, step: int) -> Dict[str, float]:
        r = ramp(step, self.warmup, self.delay, self.shape)
        rk = ramp(step, self.kl_warmup, self.delay, self.shape)
        w = dict(self.weights)
        for k in ("ssim", "sam", "sharp"):
            w[k] *= r
        w["kl"] *= rk
        return w


def total_loss(pred: torch.Tensor, target: torch.Tensor, kl: torch.Tensor, weights: Dict[str, float],
               clear_prob: Optional[torch.Tensor] = None, cloud_mask: Optional[torch.Tensor] = None,
               has_mask: Optional[torch.Tensor] = None):
    """Weighted sum and the dict of every (unweighted) term, as floats for logging."""
    terms = {
        "l1": F.l1_loss(pred, target),
        "ssim": 1.0 - ssim(pred, target),
        "sam": sam(pred, target),
        "sharp": contrastive_sharpness(pred, target),
        "kl": kl,
    }
    if clear_prob is not None and cloud_mask is not None and weights.get("gate", 0) > 0:
        per = F.binary_cross_entropy(clear_prob.clamp(1e-5, 1 - 1e-5), 1.0 - cloud_mask, reduction="none")
        per = per.mean(dim=(1, 2, 3))
        if has_mask is not None:
            terms["gate"] = (per * has_mask).sum() / has_mask.sum().clamp_min(1.0)
        else:
            terms["gate"] = per.mean()
    total = sum(weights.get(k, 0.0) * v for k, v in terms.items())
    logged = {f"loss_{k}": float(v.detach()) for k, v in terms.items()}
    logged.update({f"w_{k}": float(weights.get(k, 0.0)) for k in terms})
    logged["loss"] = float(total.detach())
    return total, logged
