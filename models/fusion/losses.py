"""Fusion losses: intensity + GWPL (gradient-weighted pixel loss) + SSIM (+ adversarial).

All images are single-band luminance tensors (B, 1, H, W) in [-1, 1].

* ``intensity_loss``: L1 to the element-wise max of the sources (``mode="max"``, the usual
  fusion intensity term) or to their mean (``mode="mean"``).
* ``gwpl``: per pixel, the source with the larger local saliency (Sobel gradient magnitude
  averaged over a ``window``×``window`` neighbourhood) is the target, and the L1 distance
  to it is weighted by that saliency (normalised by its image mean, detached):
  ``mean(w * |F - T|)`` with ``T = A if s_A >= s_B else B`` and ``w = max(s_A, s_B) / mean``.
* ``ssim_loss``: ``1 - (SSIM(F, A) + SSIM(F, B)) / 2`` with an 11×11 Gaussian window
  (sigma 1.5), data range 2 (images in [-1, 1]).
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    kx = _SOBEL_X.to(x)[None, None]
    ky = kx.transpose(-1, -2)
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(xp, kx), F.conv2d(xp, ky)
    return torch.sqrt(gx * gx + gy * gy + 1e-12)


def saliency(x: torch.Tensor, window: int = 3) -> torch.Tensor:
    g = sobel_magnitude(x)
    if window > 1:
        g = F.avg_pool2d(F.pad(g, [window // 2] * 4, mode="replicate"), window, stride=1)
    return g


def gwpl(fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor, window: int = 3) -> torch.Tensor:
    with torch.no_grad():
        sa, sb = saliency(a, window), saliency(b, window)
        pick_a = sa >= sb
        target = torch.where(pick_a, a, b)
        s = torch.maximum(sa, sb)
        weight = s / (s.mean(dim=(1, 2, 3), keepdim=True) + 1e-6)
    return (weight * (fused - target).abs()).mean()


def intensity_loss(fused, a, b, mode: str = "max"):
    target = torch.maximum(a, b) if mode == "max" else 0.5 * (a + b)
    return F.l1_loss(fused, target)


def _gaussian(size: int = 11, sigma: float = 1.5, device=None, dtype=None):
    ax = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(ax ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, size: int = 11, sigma: float = 1.5):
    w = _gaussian(size, sigma, x.device, x.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mx * mx
    syy = F.conv2d(y * y, w) - my * my
    sxy = F.conv2d(x * y, w) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return m.mean()


def ssim_loss(fused, a, b):
    return 1.0 - 0.5 * (ssim(fused, a) + ssim(fused, b))


def content_losses(fused, opt_y, sar, weights: Dict[str, float], intensity_mode: str = "max",
                   gwpl_window: int = 3) -> Dict[str, torch.Tensor]:
    losses = {
        "intensity": intensity_loss(fused, opt_y, sar, intensity_mode),
        "gwpl": gwpl(fused, opt_y, sar, gwpl_window),
        "ssim": ssim_loss(fused, opt_y, sar),
    }
    losses["content"] = sum(weights.get(k, 1.0) * v for k, v in losses.items())
    return losses
