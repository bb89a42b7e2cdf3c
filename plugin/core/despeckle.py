"""SAR speckle filtering (numpy/scipy): the Lee filter.

Multiplicative speckle model ``z = x * n`` with ``E[n] = 1`` and ``Var[n] = Cu^2 = 1/ENL``
(intensity data; ENL = equivalent number of looks, about 4.4 for Sentinel-1 IW GRD-HR).
Local statistics come from a ``size x size`` box window (``scipy.ndimage.uniform_filter``,
border mode ``reflect``):

    m = mean(z), v = mean(z^2) - m^2, Ci^2 = v / m^2
    k = clip((1 - Cu^2 / Ci^2) / (1 + Cu^2), 0, 1)
    out = m + k (z - m)

(Lee 1980 in the form of Lopes et al. 1990.) Homogeneous areas (Ci <= Cu) get the local
mean, strong edges/targets (Ci >> Cu) keep their value. A constant image is returned
unchanged. The filter only looks ``size // 2`` pixels away, so it can run per tile with
that much overlap and give the same result as on the whole image.

``lee_filter_db`` applies it to backscatter given in dB (converted to linear intensity and
back), which is what speckle statistics refer to.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

S1_GRD_ENL = 4.4


def lee_filter(img: np.ndarray, size: int = 7, enl: float = S1_GRD_ENL) -> np.ndarray:
    """Lee filter of a non-negative 2-D intensity-like image; returns float64."""
    z = np.asarray(img, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {z.shape}")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"window size must be odd and positive, got {size}")
    if enl <= 0:
        raise ValueError(f"ENL must be positive, got {enl}")
    m = ndimage.uniform_filter(z, size=size, mode="reflect")
    v = np.maximum(ndimage.uniform_filter(z * z, size=size, mode="reflect") - m * m, 0.0)
    cu2 = 1.0 / enl
    with np.errstate(divide="ignore", invalid="ignore"):
        ci2 = v / (m * m)
        k = (1.0 - cu2 / ci2) / (1.0 + cu2)
    # v == 0 (flat window) gives ci2 = 0 -> k = -inf -> 0; m == 0 gives nan -> 0
    k = np.clip(np.nan_to_num(k, nan=0.0, neginf=0.0, posinf=1.0), 0.0, 1.0)
    return m + k * (z - m)


def lee_filter_db(img_db: np.ndarray, size: int = 7, enl: float = S1_GRD_ENL) -> np.ndarray:
    """Lee filter of backscatter in dB: filtered in linear intensity, returned in dB."""
    lin = np.power(10.0, np.asarray(img_db, dtype=np.float64) / 10.0)
    return 10.0 * np.log10(np.maximum(lee_filter(lin, size=size, enl=enl), 1e-30))
