"""Image-fusion quality metrics on 8-bit grey images (numpy + scipy + scikit-image, no torch).

Conventions follow the Python fusion toolbox most fusion papers (CDDFuse, MACTFusion,
and the SAR-visible paper SkyClear ports) report with, and the VIFB MATLAB benchmark
where that toolbox is silent. Every function takes 2-D arrays of grey values on the 0-255
scale (any real dtype; they are used as float64 and are **not** rescaled). ``A`` and ``B``
are the two sources (SkyClear: A = SAR, B = optical), ``F`` the fused image.

No-reference (F only)
- **EN** entropy in **bits** (log2) of the 256-bin histogram of ``round(clip(F, 0, 255))``.
- **SD** population standard deviation (``ddof=0``).
- **SF** spatial frequency ``sqrt(RF^2 + CF^2)`` with ``RF^2`` the mean of the squared
  horizontal first differences over the ``H x (W-1)`` differences, ``CF^2`` likewise
  vertically (``H-1`` x ``W``).
- **AG** average gradient ``mean(sqrt((Gx^2 + Gy^2) / 2))`` over all ``H x W`` pixels,
  ``Gx, Gy`` from ``numpy.gradient`` (central differences / 2 inside, one-sided at the
  border; MATLAB ``gradient``). VIFB divides the same sum by ``(H-1)(W-1)`` instead.

With the sources
- **Qabf** Xydeas-Petrovic edge transfer: Sobel responses with zero padding ("same"
  convolution, as MATLAB ``conv2``; so a non-zero constant image has edges along its border), edge strength ``g = sqrt(sx^2 + sy^2)``, orientation ``a = arctan(sy/sx)``
  (``pi/2`` where ``sx == 0``); relative strength ``G = min(gA, gF)/max(gA, gF)`` (1 where
  they are equal, 0/0 included), relative orientation ``A = 1 - |aA - aF| / (pi/2)``;
  ``Q = Gg/(1+exp(kg (G - sg))) * Ga/(1+exp(ka (A - sa)))`` with Gg=0.9994, kg=-15,
  sg=0.5, Ga=0.9879, ka=-22, sa=0.8; ``Qabf = sum(QAF wA + QBF wB) / sum(wA + wB)``,
  ``w = g^L`` with L=1. With these standard constants a perfect transfer (F = A = B) gives
  ``QABF_PERFECT`` = 0.974794, not 1. (The MATLAB/Python toolboxes set G = gF instead of 1
  where gA == gF exactly; that differs only at pixels with 0 < g < ~1, i.e. not measurably.)
- **SSIM** ``SSIM(F, A) + SSIM(F, B)`` (so at most 2): scikit-image defaults, i.e. a 7x7
  uniform window, sample covariance, K1=0.01, K2=0.03, **data_range = 255**, mean over the
  pixels whose window fits inside the image. (Toolboxes that passed float images without
  ``data_range`` to old scikit-image used data_range = 2, which gives other numbers.)
- **VIF** ``VIF(A, F) + VIF(B, F)``, each the pixel-domain multi-scale VIF of Sheikh &
  Bovik (``vifp_mscale``): 4 scales, Gaussian windows N = 17, 9, 5, 3 with sigma = N/5,
  "valid" filtering, 2x decimation of the filtered image between scales, HVS noise
  variance sigma_n^2 = 2 (in 0-255 units), eps 1e-10, log10 sums. NaN when the reference
  is constant (no information to preserve). Identical to ``torchmetrics``'
  ``visual_information_fidelity`` (the test pins it), written here because the plugin
  does not ship torch.
- **MI** ``MI(A, F) + MI(B, F)`` in **bits** from the 256x256 joint histogram of the rounded,
  clipped grey values. (scikit-learn's ``mutual_info_score``, used by some toolboxes, gives
  nats: divide by ln 2.)
- **PSNR** ``10 log10(255^2 / MSE)`` with ``MSE = (MSE(A, F) + MSE(B, F)) / 2`` (VIFB).

``fusion_metrics(fused, sar, optical)`` converts colour inputs to grey with ITU-R BT.601
luma ``Y = 0.299 R + 0.587 G + 0.114 B``, rounded and clipped to [0, 255] (what OpenCV's
``COLOR_RGB2GRAY`` and MATLAB's ``rgb2gray`` give on uint8), and returns all of them.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
from scipy import ndimage
from skimage.metrics import structural_similarity

from ..choices import FUSION_METRICS as METRIC_NAMES  # the one list of names (core/choices.py)

# Qabf model constants (Xydeas & Petrovic 2000), as used by every toolbox.
QABF_L = 1.0
QABF_TG, QABF_KG, QABF_DG = 0.9994, -15.0, 0.5
QABF_TA, QABF_KA, QABF_DA = 0.9879, -22.0, 0.8
QABF_PERFECT = (QABF_TG / (1.0 + np.exp(QABF_KG * (1.0 - QABF_DG)))
                * QABF_TA / (1.0 + np.exp(QABF_KA * (1.0 - QABF_DA))))

VIF_SIGMA_N_SQ = 2.0
VIF_EPS = 1e-10
LUMA_BT601 = (0.299, 0.587, 0.114)


def _grey(img) -> np.ndarray:
    a = np.asarray(img, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D grey image, got shape {a.shape}")
    return a


def _check_same(*imgs) -> None:
    shapes = {i.shape for i in imgs}
    if len(shapes) != 1:
        raise ValueError(f"images differ in shape: {sorted(shapes)}")


def _uint8_levels(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img), 0, 255).astype(np.int64)


# ---------------------------------------------------------------------------------------
# no-reference metrics


def entropy(img) -> float:
    """EN: Shannon entropy in bits of the 256-bin histogram of the rounded 0-255 values."""
    levels = _uint8_levels(_grey(img)).ravel()
    p = np.bincount(levels, minlength=256) / levels.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def standard_deviation(img) -> float:
    """SD: population standard deviation of the grey values."""
    return float(_grey(img).std())


def spatial_frequency(img) -> float:
    """SF = sqrt(mean(horizontal diff^2) + mean(vertical diff^2))."""
    a = _grey(img)
    rf2 = np.mean(np.diff(a, axis=1) ** 2) if a.shape[1] > 1 else 0.0
    cf2 = np.mean(np.diff(a, axis=0) ** 2) if a.shape[0] > 1 else 0.0
    return float(np.sqrt(rf2 + cf2))


def average_gradient(img) -> float:
    """AG = mean over all pixels of sqrt((Gx^2 + Gy^2)/2), numpy.gradient differences."""
    a = _grey(img)
    if min(a.shape) < 2:
        raise ValueError("AG needs at least 2 rows and 2 columns")
    gy, gx = np.gradient(a)
    return float(np.mean(np.sqrt((gx ** 2 + gy ** 2) / 2.0)))


# ---------------------------------------------------------------------------------------
# Qabf

_SOBEL_Y = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)   # h1
_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)   # h3


def _sobel_strength_orientation(a: np.ndarray):
    # conv2(a, h, 'same') == ndimage.convolve(a, h, mode='constant') for 3x3 kernels
    sx = ndimage.convolve(a, _SOBEL_X, mode="constant", cval=0.0)
    sy = ndimage.convolve(a, _SOBEL_Y, mode="constant", cval=0.0)
    g = np.sqrt(sx ** 2 + sy ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(sx == 0, np.pi / 2, np.arctan(sy / np.where(sx == 0, 1.0, sx)))
    return g, alpha


def _edge_preservation(g_src, a_src, g_f, a_f) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_g = np.where(g_src > g_f, g_f / g_src, np.where(g_src < g_f, g_src / g_f, 1.0))
    rel_a = 1.0 - np.abs(a_src - a_f) / (np.pi / 2)
    qg = QABF_TG / (1.0 + np.exp(QABF_KG * (rel_g - QABF_DG)))
    qa = QABF_TA / (1.0 + np.exp(QABF_KA * (rel_a - QABF_DA)))
    return qg * qa


def qabf(fused, a, b) -> float:
    """Qabf (Xydeas-Petrovic) of ``fused`` from sources ``a`` and ``b``; NaN if both are flat."""
    f, a, b = _grey(fused), _grey(a), _grey(b)
    _check_same(f, a, b)
    g_a, al_a = _sobel_strength_orientation(a)
    g_b, al_b = _sobel_strength_orientation(b)
    g_f, al_f = _sobel_strength_orientation(f)
    w_a, w_b = g_a ** QABF_L, g_b ** QABF_L
    den = float(np.sum(w_a + w_b))
    if den == 0.0:
        return float("nan")
    num = np.sum(_edge_preservation(g_a, al_a, g_f, al_f) * w_a + _edge_preservation(g_b, al_b, g_f, al_f) * w_b)
    return float(num / den)


# ---------------------------------------------------------------------------------------
# SSIM, VIF, MI, PSNR


def ssim(x, y) -> float:
    """SSIM of two grey images (scikit-image defaults: 7x7 uniform window, data_range 255)."""
    x, y = _grey(x), _grey(y)
    _check_same(x, y)
    return float(structural_similarity(x, y, data_range=255.0))


def ssim_sum(fused, a, b) -> float:
    """SSIM(F, A) + SSIM(F, B)."""
    return ssim(fused, a) + ssim(fused, b)


def _gauss_window_1d(n: int) -> np.ndarray:
    """1-D factor of the normalised n x n Gaussian window (sigma = n/5) of vifp_mscale.

    The 2-D window exp(-(x^2+y^2)/(2 sd^2)) / sum is the outer product of this vector with
    itself (MATLAB's zeroing of entries below eps * max never triggers for n <= 17)."""
    sd = n / 5.0
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    h = np.exp(-(x * x) / (2.0 * sd * sd))
    return h / h.sum()


def _filter_valid(img: np.ndarray, win1d: np.ndarray) -> np.ndarray:
    """Separable filtering, "valid" part only (symmetric window: convolution == correlation)."""
    r = (len(win1d) - 1) // 2
    out = ndimage.correlate1d(img, win1d, axis=0, mode="constant")
    out = ndimage.correlate1d(out, win1d, axis=1, mode="constant")
    return out[r:img.shape[0] - r, r:img.shape[1] - r]


def vif(ref, dist) -> float:
    """Pixel-domain multi-scale VIF of ``dist`` against the reference ``ref`` (vifp_mscale)."""
    ref, dist = _grey(ref), _grey(dist)
    _check_same(ref, dist)
    if min(ref.shape) < 41:
        raise ValueError(f"VIF needs images of at least 41x41 pixels, got {ref.shape}")
    num = den = 0.0
    eps = VIF_EPS
    for scale in range(4):
        win = _gauss_window_1d(2 ** (4 - scale) + 1)
        if scale > 0:
            ref = _filter_valid(ref, win)[::2, ::2]
            dist = _filter_valid(dist, win)[::2, ::2]
        mu1, mu2 = _filter_valid(ref, win), _filter_valid(dist, win)
        s1 = np.maximum(_filter_valid(ref * ref, win) - mu1 * mu1, 0.0)
        s2 = np.maximum(_filter_valid(dist * dist, win) - mu2 * mu2, 0.0)
        s12 = _filter_valid(ref * dist, win) - mu1 * mu2
        g = s12 / (s1 + eps)
        sv = s2 - g * s12
        m = s1 < eps
        g[m] = 0.0
        sv[m] = s2[m]
        s1[m] = 0.0
        m = s2 < eps
        g[m] = 0.0
        sv[m] = 0.0
        m = g < 0
        sv[m] = s2[m]
        g[m] = 0.0
        sv = np.maximum(sv, eps)
        num += float(np.sum(np.log10(1.0 + g * g * s1 / (sv + VIF_SIGMA_N_SQ))))
        den += float(np.sum(np.log10(1.0 + s1 / VIF_SIGMA_N_SQ)))
    if den == 0.0:
        return float("nan")
    return num / den


def vif_sum(fused, a, b) -> float:
    """VIF(A, F) + VIF(B, F)."""
    return vif(a, fused) + vif(b, fused)


def mutual_information(x, y) -> float:
    """MI in bits from the 256x256 joint histogram of the rounded 0-255 values."""
    x, y = _grey(x), _grey(y)
    _check_same(x, y)
    xi, yi = _uint8_levels(x).ravel(), _uint8_levels(y).ravel()
    joint = np.bincount(xi * 256 + yi, minlength=256 * 256).reshape(256, 256) / xi.size
    px, py = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = np.sum(joint[nz] * np.log2(joint[nz] / np.outer(px, py)[nz]))
    return float(max(mi, 0.0))


def mi_sum(fused, a, b) -> float:
    """MI(A, F) + MI(B, F) in bits."""
    return mutual_information(a, fused) + mutual_information(b, fused)


def psnr_fusion(fused, a, b) -> float:
    """10 log10(255^2 / ((MSE(A,F) + MSE(B,F)) / 2)); inf if F = A = B."""
    f, a, b = _grey(fused), _grey(a), _grey(b)
    _check_same(f, a, b)
    mse = (np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2.0
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(255.0 ** 2 / mse))


# ---------------------------------------------------------------------------------------
# all of them


def to_grey8(img) -> np.ndarray:
    """(H, W), (1, H, W) or (3, H, W) channel-first 0-255 values -> float64 (H, W) grey levels.

    RGB uses BT.601 luma 0.299 R + 0.587 G + 0.114 B; the result is rounded and clipped to
    [0, 255] (an 8-bit grey image, kept as float64)."""
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    elif a.ndim == 3 and a.shape[0] == 3:
        a = LUMA_BT601[0] * a[0] + LUMA_BT601[1] * a[1] + LUMA_BT601[2] * a[2]
    elif a.ndim != 2:
        raise ValueError(f"expected (H, W), (1, H, W) or (3, H, W) channel-first, got shape {a.shape}")
    return np.clip(np.rint(a), 0.0, 255.0)


def fusion_metrics(fused, sar, optical) -> Dict[str, float]:
    """All fusion metrics of ``fused`` against A = ``sar`` and B = ``optical``.

    Inputs are channel-first arrays on the 0-255 scale (RGB or grey; see ``to_grey8``), all on
    the same pixel grid. Returns ``{"en", "sd", "sf", "ag", "qabf", "ssim", "vif", "mi", "psnr"}``
    (``ssim``, ``vif`` and ``mi`` are sums over the two sources, see the module docstring).
    """
    f, a, b = to_grey8(fused), to_grey8(sar), to_grey8(optical)
    _check_same(f, a, b)
    return {
        "en": entropy(f),
        "sd": standard_deviation(f),
        "sf": spatial_frequency(f),
        "ag": average_gradient(f),
        "qabf": qabf(f, a, b),
        "ssim": ssim_sum(f, a, b),
        "vif": vif_sum(f, a, b),
        "mi": mi_sum(f, a, b),
        "psnr": psnr_fusion(f, a, b),
    }
