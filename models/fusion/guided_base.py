"""Guided-filtering fusion (GFF) as torch ops, so the exported ONNX graph computes its own base.

A port of ``plugin.core.fusion_classical.fuse_guided`` (Li, Kang & Hu 2013 on the He et al.
guided filter) with the same constants and the same border rule (scipy's ``reflect``, i.e.
symmetric padding ``d c b a | a b c d``), built only from slicing, flips, concatenation and
separable average pooling / convolution, which all export to ONNX with dynamic tile sizes.
Equal to the numpy version up to float32 rounding (the tests pin it), so a fusion network whose
correction head is zero starts exactly where the classical tool ends.

Images are (B, 1, H, W) in [0, 1] (the classical module's units: its ``eps`` values depend on
them). Tiles must be at least ``GFF_R1 + 1`` = 46 pixels on each side (one reflection).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...plugin.core.fusion_classical import (GFF_BASE_SIZE, GFF_EPS1, GFF_EPS2, GFF_R1, GFF_R2,
                                               GFF_SALIENCY_RADIUS, GFF_SALIENCY_SIGMA)

MIN_TILE = GFF_R1 + 1


def symmetric_pad(x: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """Pad ``pad`` values on both ends of ``dim`` by half-sample reflection (scipy 'reflect')."""
    if pad == 0:
        return x
    n = x.shape[dim]
    if isinstance(n, int) and n < pad:
        raise ValueError(f"tile of {n} pixels is too small for a {pad}-pixel reflection; "
                         f"use tiles of at least {MIN_TILE} pixels")
    head = x.narrow(dim, 0, pad).flip(dim)
    tail = x.narrow(dim, n - pad, pad).flip(dim)
    return torch.cat([head, x, tail], dim)


def box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over the (2r+1)² window, reflected borders: ``scipy.ndimage.uniform_filter(size=2r+1)``."""
    k = 2 * r + 1
    x = F.avg_pool2d(symmetric_pad(x, r, 2), (k, 1), stride=1)
    return F.avg_pool2d(symmetric_pad(x, r, 3), (1, k), stride=1)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, r: int, eps: float) -> torch.Tensor:
    mean_i, mean_p = box_mean(guide, r), box_mean(src, r)
    var_i = box_mean(guide * guide, r) - mean_i * mean_i
    cov_ip = box_mean(guide * src, r) - mean_i * mean_p
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_mean(a, r) * guide + box_mean(b, r)


def _gaussian_1d(sigma: float, radius: int) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).float()


class GuidedFusionBase(nn.Module):
    """``forward(y, sar) -> GFF(y, sar)``, both (B, 1, H, W) in [0, 1]; no learnable weights."""

    def __init__(self):
        super().__init__()
        g = _gaussian_1d(GFF_SALIENCY_SIGMA, GFF_SALIENCY_RADIUS)
        self.register_buffer("gauss_v", g.view(1, 1, -1, 1), persistent=False)
        self.register_buffer("gauss_h", g.view(1, 1, 1, -1), persistent=False)
        lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        self.register_buffer("laplace", lap.view(1, 1, 3, 3), persistent=False)

    def saliency(self, x: torch.Tensor) -> torch.Tensor:
        lap = F.conv2d(symmetric_pad(symmetric_pad(x, 1, 2), 1, 3), self.laplace).abs()
        r = GFF_SALIENCY_RADIUS
        lap = F.conv2d(symmetric_pad(lap, r, 2), self.gauss_v)
        return F.conv2d(symmetric_pad(lap, r, 3), self.gauss_h)

    @staticmethod
    def _normalised(wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
        wa, wb = wa.clamp(0.0, 1.0), wb.clamp(0.0, 1.0)
        total = wa + wb
        safe = total > 1e-12
        return torch.where(safe, wa / torch.where(safe, total, torch.ones_like(total)), torch.full_like(wa, 0.5))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        base_r = GFF_BASE_SIZE // 2
        base_a, base_b = box_mean(a, base_r), box_mean(b, base_r)
        det_a, det_b = a - base_a, b - base_b
        pa = (self.saliency(a) >= self.saliency(b)).to(a.dtype)
        pb = 1.0 - pa
        wba = self._normalised(guided_filter(a, pa, GFF_R1, GFF_EPS1), guided_filter(b, pb, GFF_R1, GFF_EPS1))
        wda = self._normalised(guided_filter(a, pa, GFF_R2, GFF_EPS2), guided_filter(b, pb, GFF_R2, GFF_EPS2))
        return wba * base_a + (1.0 - wba) * base_b + wda * det_a + (1.0 - wda) * det_b
