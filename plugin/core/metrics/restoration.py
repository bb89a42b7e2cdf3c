"""Restoration metrics on (C, H, W) arrays, conventions as in the cloud-removal literature.

- PSNR with an explicit ``data_range`` (1.0 for reflectance in [0, 1], 255 for 8-bit).
- SSIM: Gaussian window 11x11, sigma 1.5, K1=0.01, K2=0.03 (Wang et al. 2004), per band
  and averaged, via scikit-image.
- SAM: spectral angle in degrees per pixel, averaged over pixels.
- MAE in the array's units.
An optional boolean ``mask`` (H, W) restricts every metric to those pixels (SSIM: the
SSIM map is averaged over the mask).
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
from skimage.metrics import structural_similarity


def _pixels(a: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
    a = a.reshape(a.shape[0], -1)
    return a if mask is None else a[:, mask.reshape(-1)]


def mae(pred: np.ndarray, ref: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    return float(np.abs(_pixels(pred, mask).astype(np.float64) - _pixels(ref, mask)).mean())


def psnr(pred: np.ndarray, ref: np.ndarray, data_range: float, mask: Optional[np.ndarray] = None) -> float:
    mse = float(((_pixels(pred, mask).astype(np.float64) - _pixels(ref, mask)) ** 2).mean())
    if mse == 0:
        return float("inf")
    return 10.0 * np.log10(data_range ** 2 / mse)


def ssim_map(pred: np.ndarray, ref: np.ndarray, data_range: float) -> np.ndarray:
    """Mean over bands of the per-pixel SSIM map, shape (H, W)."""
    maps = []
    for p, r in zip(pred.astype(np.float64), ref.astype(np.float64)):
        _, m = structural_similarity(p, r, data_range=data_range, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, full=True)
        maps.append(m)
    return np.mean(maps, axis=0)


def ssim(pred: np.ndarray, ref: np.ndarray, data_range: float, mask: Optional[np.ndarray] = None) -> float:
    m = ssim_map(pred, ref, data_range)
    return float(m.mean() if mask is None else m[mask].mean())


def sam_degrees(pred: np.ndarray, ref: np.ndarray, mask: Optional[np.ndarray] = None, eps: float = 1e-8) -> float:
    p = _pixels(pred, mask).astype(np.float64)
    r = _pixels(ref, mask).astype(np.float64)
    cos = (p * r).sum(0) / (np.linalg.norm(p, axis=0) * np.linalg.norm(r, axis=0) + eps)
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).mean())


def restoration_metrics(pred: np.ndarray, ref: np.ndarray, data_range: float,
                        mask: Optional[np.ndarray] = None) -> Dict[str, float]:
    """PSNR, SSIM, SAM (degrees; only for 2+ bands) and MAE of ``pred`` against ``ref``."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if mask is not None and not mask.any():
        raise ValueError("mask selects no pixels")
    out = {"psnr": psnr(pred, ref, data_range, mask), "ssim": ssim(pred, ref, data_range, mask),
           "mae": mae(pred, ref, mask)}
    if pred.shape[0] > 1:
        out["sam"] = sam_degrees(pred, ref, mask)
    return out
