"""Grain: the fine noise a restoration (e.g. a diffusion sampler) leaves in flat areas.

``grain(output, target)`` compares the high-frequency energy of the output with the clear target
image's own, on the pixels where the target is flat:

- grey = mean over bands (float64, the arrays' own units, e.g. uint8 DN);
- high-pass = grey minus its 3x3 mean (the part a 3x3 box filter removes);
- flat pixels = the ``flat_fraction`` (default 30 %) of pixels with the lowest gradient magnitude
  (Sobel) of the *target* smoothed with a Gaussian of ``sigma`` = 2 px, at least 2 px from the border;
- ``ratio`` = RMS(high-pass of output) / max(RMS(high-pass of target), ``floor``), both over those
  pixels. ``floor`` (default 0.5, in the arrays' units, made for 8-bit data: the RMS of uint8
  rounding noise is 0.29) keeps the ratio finite where the clear image is exactly uniform (RICE2
  has such water areas): there any texture the output adds counts as grain against 0.5 DN.

``ratio`` = 1: as much fine texture in flat areas as the clear image has; > 1: added grain
(1.5 = 50 % more high-frequency amplitude than the truth); < 1: smoother than the truth (blur).
Clouds left in the output are smooth, so they lower the ratio rather than raise it; read it next
to PSNR/SSIM. The flat mask comes from the target only, so outputs of different methods are
scored on the same pixels.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
from scipy import ndimage


def _grey(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.mean(axis=0) if a.ndim == 3 else a


def high_pass(grey: np.ndarray) -> np.ndarray:
    """grey minus its 3x3 mean (reflect padding)."""
    return grey - ndimage.uniform_filter(grey, size=3, mode="reflect")


def flat_mask(target: np.ndarray, flat_fraction: float = 0.3, sigma: float = 2.0) -> np.ndarray:
    """Boolean (H, W): the ``flat_fraction`` lowest-gradient pixels of the smoothed target."""
    if not 0.0 < flat_fraction <= 1.0:
        raise ValueError(f"flat_fraction must be in (0, 1], got {flat_fraction}")
    smooth = ndimage.gaussian_filter(_grey(target), sigma)
    magnitude = np.hypot(ndimage.sobel(smooth, axis=0), ndimage.sobel(smooth, axis=1))
    inner = np.zeros(magnitude.shape, bool)
    inner[2:-2, 2:-2] = True
    if not inner.any():
        raise ValueError(f"image too small for the grain metric: {magnitude.shape}")
    threshold = np.quantile(magnitude[inner], flat_fraction)
    return inner & (magnitude <= threshold)


def grain(output: np.ndarray, target: np.ndarray, flat_fraction: float = 0.3, sigma: float = 2.0,
          floor: float = 0.5) -> Dict[str, float]:
    """``ratio``, ``rms_output`` and ``rms_target`` (high-pass RMS on the target's flat pixels, in
    the arrays' units) for (C, H, W) or (H, W) arrays of the same shape."""
    if np.shape(output) != np.shape(target):
        raise ValueError(f"output and target shapes differ: {np.shape(output)} vs {np.shape(target)}")
    mask = flat_mask(target, flat_fraction, sigma)
    rms_out = float(np.sqrt(np.mean(high_pass(_grey(output))[mask] ** 2)))
    rms_tgt = float(np.sqrt(np.mean(high_pass(_grey(target))[mask] ** 2)))
    return {"ratio": rms_out / max(rms_tgt, float(floor)), "rms_output": rms_out, "rms_target": rms_tgt}
