"""Non-learned SAR-optical fusion (numpy/scipy): baselines users can run without a model.

All functions work on float images in [0, 1] (network units). Grey fusion rules take two
2-D arrays ``a`` (optical luminance) and ``b`` (SAR); ``fuse_rgb`` fuses the luminance Y of
the optical image (BT.601 YCbCr, ``colour.py``) with the SAR and recomposes RGB with the
original Cb, Cr, so the optical colours are kept.

Methods (``METHODS``):

- ``optical``: the optical image unchanged (trivial baseline).
- ``average``: ``Y' = (Y + S) / 2`` (trivial baseline).
- ``laplacian``: Laplacian pyramid (Burt & Adelson; 5-tap binomial kernel
  [1, 4, 6, 4, 1]/16, ``levels`` detail levels); detail levels take the coefficient with the
  larger absolute value (max-abs selection), the low-pass top level is averaged.
- ``guided``: guided-filtering fusion (GFF, Li, Kang & Hu 2013) on the He et al. guided
  filter: two-scale split with a 31x31 mean filter (base) and the residual (detail);
  saliency = Gaussian-smoothed |Laplacian| (3x3 Laplacian, Gaussian sigma 5, radius 5);
  binary max-saliency maps refined by the guided filter with each source as guide
  (base weights r=45, eps=0.3; detail weights r=7, eps=1e-6), clipped to [0, 1] and
  normalised to sum 1.

Tiling: every method only looks ``context_radius(method)`` pixels away, with borders
handled by reflection, so a tile processed with at least that much real context on each
side equals the whole-image result there. The Laplacian pyramid decimates, so its result
also depends on where the decimation lattice falls: pass the tile's ``origin`` (row, col in
the full image) and the tile is padded so that all tiles share the whole image's lattice.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
from scipy import ndimage

from .colour import rgb_to_ycbcr, ycbcr_to_rgb

METHODS = ("optical", "average", "laplacian", "guided")

PYRAMID_KERNEL = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
DEFAULT_LEVELS = 4

GFF_BASE_SIZE = 31
GFF_SALIENCY_SIGMA = 5.0
GFF_SALIENCY_RADIUS = 5
GFF_R1, GFF_EPS1 = 45, 0.3
GFF_R2, GFF_EPS2 = 7, 1e-6


# ---------------------------------------------------------------------------------------
# Laplacian pyramid


def _blur(img: np.ndarray, mode: str) -> np.ndarray:
    out = ndimage.correlate1d(img, PYRAMID_KERNEL, axis=0, mode=mode)
    return ndimage.correlate1d(out, PYRAMID_KERNEL, axis=1, mode=mode)


def _reduce(img: np.ndarray) -> np.ndarray:
    return _blur(img, "reflect")[::2, ::2]


def _expand(img: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Upsample ``img`` (ceil(h/2), ceil(w/2)) to ``shape`` by normalised convolution:
    zero-insertion, blur, divided by the blurred sample mask (= 4 * blur inside the image,
    exact interpolation weights at the border)."""
    up = np.zeros(shape, dtype=np.float64)
    up[::2, ::2] = img
    mask = np.zeros(shape, dtype=np.float64)
    mask[::2, ::2] = 1.0
    return _blur(up, "constant") / _blur(mask, "constant")


def max_levels(shape: Tuple[int, int]) -> int:
    """Deepest pyramid whose top level still has at least 2 x 2 pixels."""
    return max(0, int(np.floor(np.log2(max(1, min(shape))))) - 1)


def laplacian_pyramid(img: np.ndarray, levels: int = DEFAULT_LEVELS) -> List[np.ndarray]:
    """``levels`` band-pass images (finest first) followed by the low-pass top."""
    g = np.asarray(img, dtype=np.float64)
    levels = min(levels, max_levels(g.shape))
    pyr = []
    for _ in range(levels):
        low = _reduce(g)
        pyr.append(g - _expand(low, g.shape))
        g = low
    pyr.append(g)
    return pyr


def reconstruct_laplacian(pyr: List[np.ndarray]) -> np.ndarray:
    """Inverse of ``laplacian_pyramid`` (exact up to float rounding)."""
    img = pyr[-1]
    for band in reversed(pyr[:-1]):
        img = band + _expand(img, band.shape)
    return img


def _lattice_pad(origin: Tuple[int, int], levels: int) -> Tuple[int, int]:
    step = 2 ** levels
    return int(origin[0]) % step, int(origin[1]) % step


def fuse_laplacian(a: np.ndarray, b: np.ndarray, levels: int = DEFAULT_LEVELS,
                   origin: Tuple[int, int] = (0, 0)) -> np.ndarray:
    """Laplacian-pyramid fusion: max-abs detail selection, averaged low-pass top.

    ``origin`` is the (row, col) of ``a[0, 0]`` in the whole image; the tile is reflect-padded
    on the top/left so that its decimation lattice is the whole image's."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    pr, pc = _lattice_pad(origin, levels)
    if pr or pc:
        a = np.pad(a, ((pr, 0), (pc, 0)), mode="symmetric")
        b = np.pad(b, ((pr, 0), (pc, 0)), mode="symmetric")
    pa, pb = laplacian_pyramid(a, levels), laplacian_pyramid(b, levels)
    fused = [np.where(np.abs(da) >= np.abs(db), da, db) for da, db in zip(pa[:-1], pb[:-1])]
    fused.append(0.5 * (pa[-1] + pb[-1]))
    return reconstruct_laplacian(fused)[pr:, pc:]


# ---------------------------------------------------------------------------------------
# guided filter and GFF


def box_mean(img: np.ndarray, r: int) -> np.ndarray:
    """Mean over the (2r+1) x (2r+1) window (reflected borders)."""
    return ndimage.uniform_filter(img, size=2 * r + 1, mode="reflect")


def guided_filter(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """He, Sun & Tang guided filter of ``src`` with grey ``guide`` (box radius r, regulariser eps)."""
    i, p = np.asarray(guide, np.float64), np.asarray(src, np.float64)
    mean_i, mean_p = box_mean(i, r), box_mean(p, r)
    var_i = box_mean(i * i, r) - mean_i * mean_i
    cov_ip = box_mean(i * p, r) - mean_i * mean_p
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_mean(a, r) * i + box_mean(b, r)


_LAPLACIAN_3X3 = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def _saliency(img: np.ndarray) -> np.ndarray:
    lap = np.abs(ndimage.correlate(img, _LAPLACIAN_3X3, mode="reflect"))
    return ndimage.gaussian_filter(lap, GFF_SALIENCY_SIGMA, mode="reflect",
                                   truncate=GFF_SALIENCY_RADIUS / GFF_SALIENCY_SIGMA)


def _normalised_weights(wa: np.ndarray, wb: np.ndarray):
    wa, wb = np.clip(wa, 0.0, 1.0), np.clip(wb, 0.0, 1.0)
    total = wa + wb
    safe = total > 1e-12
    wa = np.where(safe, wa / np.where(safe, total, 1.0), 0.5)
    return wa, 1.0 - wa


def fuse_guided(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Guided-filtering fusion (GFF) of two grey images in [0, 1]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    base_r = GFF_BASE_SIZE // 2
    base_a, base_b = box_mean(a, base_r), box_mean(b, base_r)
    det_a, det_b = a - base_a, b - base_b
    pa = (_saliency(a) >= _saliency(b)).astype(np.float64)
    pb = 1.0 - pa
    wba, wbb = _normalised_weights(guided_filter(a, pa, GFF_R1, GFF_EPS1), guided_filter(b, pb, GFF_R1, GFF_EPS1))
    wda, wdb = _normalised_weights(guided_filter(a, pa, GFF_R2, GFF_EPS2), guided_filter(b, pb, GFF_R2, GFF_EPS2))
    return wba * base_a + wbb * base_b + wda * det_a + wdb * det_b


# ---------------------------------------------------------------------------------------
# dispatch


def fuse_average(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 0.5 * (np.asarray(a, np.float64) + np.asarray(b, np.float64))


def context_radius(method: str, levels: int = DEFAULT_LEVELS) -> int:
    """Pixels of real context each side that make a tile's result equal the whole image's."""
    if method in ("optical", "average"):
        return 0
    if method == "laplacian":
        return 4 * (2 ** levels - 1)
    if method == "guided":
        saliency = 1 + GFF_SALIENCY_RADIUS
        return max(GFF_BASE_SIZE // 2, 2 * GFF_R1 + saliency, 2 * GFF_R2 + saliency)
    raise ValueError(f"unknown fusion method {method!r}; choose one of {METHODS}")


def fuse_grey(a: np.ndarray, b: np.ndarray, method: str, levels: int = DEFAULT_LEVELS,
              origin: Tuple[int, int] = (0, 0)) -> np.ndarray:
    """Fuse grey ``a`` (optical luminance) with grey ``b`` (SAR) by ``method`` (not clipped)."""
    if method == "optical":
        return np.asarray(a, np.float64).copy()
    if method == "average":
        return fuse_average(a, b)
    if method == "laplacian":
        return fuse_laplacian(a, b, levels=levels, origin=origin)
    if method == "guided":
        return fuse_guided(a, b)
    raise ValueError(f"unknown fusion method {method!r}; choose one of {METHODS}")


def fuse_rgb(optical: np.ndarray, sar: np.ndarray, method: str, levels: int = DEFAULT_LEVELS,
             origin: Tuple[int, int] = (0, 0), clip: Optional[Tuple[float, float]] = (0.0, 1.0)) -> np.ndarray:
    """Fuse the luminance of ``optical`` (3, H, W) with ``sar`` (H, W) and recompose RGB.

    Returns (3, H, W) float64, clipped to ``clip`` (None: not clipped)."""
    optical = np.asarray(optical, np.float64)
    sar = np.asarray(sar, np.float64)
    if sar.ndim == 3 and sar.shape[0] == 1:
        sar = sar[0]
    if optical.ndim != 3 or optical.shape[0] != 3 or sar.shape != optical.shape[1:]:
        raise ValueError(f"expected optical (3, H, W) and sar (H, W) on one grid, got {optical.shape} and {sar.shape}")
    if method == "optical":
        out = optical.copy()
    else:
        ycc = rgb_to_ycbcr(optical)
        ycc[0] = fuse_grey(ycc[0], sar, method, levels=levels, origin=origin)
        out = ycbcr_to_rgb(ycc)
    return out if clip is None else np.clip(out, clip[0], clip[1])
