"""Colour transforms for luminance fusion: full-range BT.601 YCbCr (JPEG/JFIF), values in [0, 1].

    Y  = 0.299 R + 0.587 G + 0.114 B
    Cb = 0.5 + (B - Y) / 1.772
    Cr = 0.5 + (R - Y) / 1.402

``ycbcr_to_rgb`` is the exact inverse (round trip to float precision; no clipping, so a
caller that changes Y decides how to clip). Arrays are channel-first ``(3, ...)``.
"""
from __future__ import annotations

import numpy as np

KR, KG, KB = 0.299, 0.587, 0.114
CB_SCALE = 2.0 * (1.0 - KB)   # 1.772
CR_SCALE = 2.0 * (1.0 - KR)   # 1.402


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(3, ...) RGB in [0, 1] -> (3, ...) Y, Cb, Cr (Y in [0, 1], Cb/Cr centred on 0.5)."""
    rgb = np.asarray(rgb)
    if rgb.shape[0] != 3:
        raise ValueError(f"expected channel-first RGB (3, ...), got shape {rgb.shape}")
    r, g, b = rgb[0], rgb[1], rgb[2]
    y = KR * r + KG * g + KB * b
    return np.stack([y, 0.5 + (b - y) / CB_SCALE, 0.5 + (r - y) / CR_SCALE])


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Inverse of ``rgb_to_ycbcr`` (no clipping)."""
    ycc = np.asarray(ycc)
    if ycc.shape[0] != 3:
        raise ValueError(f"expected channel-first YCbCr (3, ...), got shape {ycc.shape}")
    y, cb, cr = ycc[0], ycc[1], ycc[2]
    r = y + CR_SCALE * (cr - 0.5)
    b = y + CB_SCALE * (cb - 0.5)
    g = (y - KR * r - KB * b) / KG
    return np.stack([r, g, b])


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Y of ``rgb_to_ycbcr`` only."""
    rgb = np.asarray(rgb)
    return KR * rgb[0] + KG * rgb[1] + KB * rgb[2]
