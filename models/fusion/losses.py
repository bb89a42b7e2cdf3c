"""Fusion losses, aligned with what the fused image is judged by (``plugin/core/metrics/fusion.py``).

All images are single-band luminance tensors (B, 1, H, W) in [-1, 1]; ``a`` is the optical
luminance and ``b`` the SAR unless a docstring says otherwise.

* ``intensity_loss``: L1 to the optical luminance (``mode="optical"``), to the mean of the
  sources (``"mean"``) or to their element-wise maximum (``"max"``, the paper's term; it pulls
  the result away from both sources, which is why it is no longer the default).
* ``gradient_loss``: L1 between the Sobel gradient of F and, per pixel, the gradient of the source
  whose gradient is stronger (the edge transfer that Qabf rewards).
* ``gwpl``: the paper's gradient-weighted pixel loss: L1 to the source with the larger local
  saliency, weighted by that saliency (kept for the paper's configuration).
* ``ssim_loss``: ``1 - (SSIM(F, A) + SSIM(F, B)) / 2`` with the metric's conventions (7×7 uniform
  window, sample covariance, computed on [0, 1] like the metric on 0..255).
* ``vif_loss``: ``1 - (VIF(A, F) + VIF(B, F)) / 2``, a differentiable torch port of the metric's
  pixel-domain multi-scale VIF (0..255 units, sigma_n² = 2); torchmetrics' version is not
  differentiable (in-place masking).
* ``qabf_loss``: ``1 - Qabf(F; A, B)``, a differentiable port of the Xydeas-Petrović metric
  (zero-padded Sobel, the standard sigmoid constants).
* ``margin_losses`` (config ``"objective": "margin"``): the judged goal itself, a smooth minimum
  over Qabf, VIF and SSIM of the relative margin over the better classical method on the same
  crops (``classical_references``). The weighted sum above has no notion of "beat each bar": on
  the validation pairs it ranks ``GFF + 0.1 (average - GFF)`` (Qabf and VIF lower, SSIM higher)
  above GFF itself (``/work/runs/fusion-diag``, issue 12).
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, Optional

import torch
import torch.nn.functional as F

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
TERMS = ("intensity", "gradient", "gwpl", "ssim", "vif", "qabf")


def _sobel(x: torch.Tensor, pad_mode: str = "replicate"):
    kx = _SOBEL_X.to(x)[None, None]
    ky = kx.transpose(-1, -2)
    xp = F.pad(x, (1, 1, 1, 1), mode=pad_mode) if pad_mode != "constant" else F.pad(x, (1, 1, 1, 1))
    return F.conv2d(xp, kx), F.conv2d(xp, ky)


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    gx, gy = _sobel(x)
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


def gradient_loss(fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        ax, ay = _sobel(a)
        bx, by = _sobel(b)
        pick_a = (ax * ax + ay * ay) >= (bx * bx + by * by)
        tx, ty = torch.where(pick_a, ax, bx), torch.where(pick_a, ay, by)
    fx, fy = _sobel(fused)
    return 0.5 * ((fx - tx).abs().mean() + (fy - ty).abs().mean())


def intensity_loss(fused, a, b, mode: str = "optical"):
    if mode == "optical":
        target = a
    elif mode == "mean":
        target = 0.5 * (a + b)
    elif mode == "max":
        target = torch.maximum(a, b)
    else:
        raise ValueError(f"unknown intensity mode {mode!r} (optical, mean or max)")
    return F.l1_loss(fused, target)


def ssim(x: torch.Tensor, y: torch.Tensor, win: int = 7) -> torch.Tensor:
    """SSIM of images in [-1, 1] as the metric computes it on 0..255: scikit-image defaults (7×7
    uniform window, sample covariance, mean over the windows inside the image).

    SSIM's luminance term is not offset-invariant, so the images are moved to [0, 1] (data range
    1) first; on [-1, 1] the same formula gives other numbers (0.71 instead of 0.93 on a test
    pair). Written out because torchmetrics' SSIM pads the borders instead."""
    x, y, data_range = 0.5 * (x + 1.0), 0.5 * (y + 1.0), 1.0
    mean = lambda t: F.avg_pool2d(t, win, stride=1)  # noqa: E731  ("valid" windows)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    cov_norm = win * win / (win * win - 1.0)
    mx, my = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - mx * mx)
    vy = cov_norm * (mean(y * y) - my * my)
    vxy = cov_norm * (mean(x * y) - mx * my)
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean()


def ssim_loss(fused, a, b):
    return 1.0 - 0.5 * (ssim(fused, a) + ssim(fused, b))


def _gauss_window(n: int, like: torch.Tensor) -> torch.Tensor:
    """1-D factor (1, 1, n, 1) of the normalised n × n Gaussian window (sigma = n / 5)."""
    sd = n / 5.0
    x = torch.arange(n, dtype=like.dtype, device=like.device) - (n - 1) / 2.0
    h = torch.exp(-(x * x) / (2.0 * sd * sd))
    return (h / h.sum())[None, None, :, None]


def _filter_valid(x: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """'Valid' filtering with the separable Gaussian (same result as the 2-D window, ~n/2 × cheaper)."""
    return F.conv2d(F.conv2d(x, win), win.transpose(-1, -2))


def vif(ref: torch.Tensor, dist: torch.Tensor, sigma_n_sq: float = 2.0, eps: float = 1e-10) -> torch.Tensor:
    """Pixel-domain multi-scale VIF of ``dist`` against ``ref``, both in [-1, 1] (B, 1, H, W),
    evaluated in 0..255 units like the metric; mean over the batch. Needs H, W >= 41."""
    ref, dist = (ref + 1.0) * 127.5, (dist + 1.0) * 127.5
    num = den = 0.0
    for scale in range(4):
        win = _gauss_window(2 ** (4 - scale) + 1, ref)
        if scale > 0:
            ref = _filter_valid(ref, win)[..., ::2, ::2]
            dist = _filter_valid(dist, win)[..., ::2, ::2]
        mu1, mu2 = _filter_valid(ref, win), _filter_valid(dist, win)
        s1 = (_filter_valid(ref * ref, win) - mu1 * mu1).clamp_min(0.0)
        s2 = (_filter_valid(dist * dist, win) - mu2 * mu2).clamp_min(0.0)
        s12 = _filter_valid(ref * dist, win) - mu1 * mu2
        g = s12 / (s1 + eps)
        sv = s2 - g * s12
        flat_ref = s1 < eps
        g = torch.where(flat_ref, torch.zeros_like(g), g)
        sv = torch.where(flat_ref, s2, sv)
        s1 = torch.where(flat_ref, torch.zeros_like(s1), s1)
        flat_dist = s2 < eps
        g = torch.where(flat_dist, torch.zeros_like(g), g)
        sv = torch.where(flat_dist, torch.zeros_like(sv), sv)
        neg = g < 0
        sv = torch.where(neg, s2, sv)
        g = torch.where(neg, torch.zeros_like(g), g)
        sv = sv.clamp_min(eps)
        num = num + torch.log10(1.0 + g * g * s1 / (sv + sigma_n_sq)).sum(dim=(1, 2, 3))
        den = den + torch.log10(1.0 + s1 / sigma_n_sq).sum(dim=(1, 2, 3))
    return (num / den.clamp_min(1e-12)).mean()


def vif_loss(fused, a, b):
    return 1.0 - 0.5 * (vif(a, fused) + vif(b, fused))


_QG, _KG, _SG = 0.9994, -15.0, 0.5
_QA, _KA, _SA = 0.9879, -22.0, 0.8


def _strength_orientation(x: torch.Tensor):
    gx, gy = _sobel((x + 1.0) * 127.5, pad_mode="constant")
    g = torch.sqrt(gx * gx + gy * gy + 1e-6)
    sx = torch.where(gx.abs() < 1e-6, torch.full_like(gx, 1e-6), gx)
    return g, torch.atan(gy / sx)


def qabf(fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Differentiable Qabf (mean over the batch) of ``fused`` from sources ``a``, ``b``."""
    gf, af = _strength_orientation(fused)
    total_num = total_w = 0.0
    for src in (a, b):
        with torch.no_grad():
            gs, as_ = _strength_orientation(src)
        rel_g = torch.minimum(gs, gf) / torch.maximum(gs, gf)
        rel_a = 1.0 - (as_ - af).abs() / (math.pi / 2)
        q = (_QG / (1.0 + torch.exp(_KG * (rel_g - _SG)))) * (_QA / (1.0 + torch.exp(_KA * (rel_a - _SA))))
        total_num = total_num + (q * gs).sum(dim=(1, 2, 3))
        total_w = total_w + gs.sum(dim=(1, 2, 3))
    return (total_num / total_w.clamp_min(1e-6)).mean()


def qabf_loss(fused, a, b):
    return 1.0 - qabf(fused, a, b)


MARGIN_METRICS = ("qabf", "vif", "ssim")


def judged_metrics(fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Batch means of the three metrics the fusion tool is judged by, as the metric module sums
    them: Qabf(F; A, B), VIF(A, F) + VIF(B, F), SSIM(F, A) + SSIM(F, B) (differentiable ports)."""
    return {"qabf": qabf(fused, a, b), "vif": vif(a, fused) + vif(b, fused), "ssim": ssim(fused, a) + ssim(fused, b)}


def classical_references(a: torch.Tensor, b: torch.Tensor, *fusions: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Per metric, the best (largest) batch-mean value over the given classical fusions of the same
    crops: the bar of the trainer's ``selection_score`` (beat the better classical method on each)."""
    with torch.no_grad():
        values = [judged_metrics(f, a, b) for f in fusions]
        return {k: torch.stack([v[k] for v in values]).max() for k in MARGIN_METRICS}


def margin_losses(fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor, references: Dict[str, torch.Tensor],
                  temperature: float = 0.003, metrics: Iterable[str] = MARGIN_METRICS) -> Dict[str, torch.Tensor]:
    """The judged goal as a loss: relative margins ``m_k = (M_k(F) - R_k) / R_k`` of the batch-mean
    metrics over the classical references, and ``margin = T log sum_k exp(-m_k / T)``, a smooth
    ``-min_k m_k`` (T -> 0). A weighted sum of the terms lets a gain on a metric that already beats
    the classical methods pay for a loss on the one that does not; the smooth minimum puts the
    gradient on the metric that is behind (SSIM, at the guided-filter start) and keeps the others
    from falling below their bar. Returns ``margin`` and each ``margin_<metric>`` (for the log)."""
    metrics = list(metrics)
    values = judged_metrics(fused, a, b)
    m = {k: (values[k] - references[k]) / references[k].abs().clamp_min(1e-3) for k in metrics}
    out = {f"margin_{k}": v for k, v in m.items()}
    out["margin"] = temperature * torch.logsumexp(-torch.stack([m[k] for k in metrics]) / temperature, 0)
    return out


def content_losses(fused, opt_y, sar, weights: Dict[str, float], intensity_mode: str = "optical",
                   gwpl_window: int = 3, terms: Optional[Iterable[str]] = None) -> Dict[str, torch.Tensor]:
    """The weighted terms (``terms``; default: those with a non-zero weight) and their sum ``content``."""
    terms = list(terms) if terms is not None else [t for t in TERMS if weights.get(t, 0.0)]
    fns = {
        "intensity": lambda: intensity_loss(fused, opt_y, sar, intensity_mode),
        "gradient": lambda: gradient_loss(fused, opt_y, sar),
        "gwpl": lambda: gwpl(fused, opt_y, sar, gwpl_window),
        "ssim": lambda: ssim_loss(fused, opt_y, sar),
        "vif": lambda: vif_loss(fused, opt_y, sar),
        "qabf": lambda: qabf_loss(fused, opt_y, sar),
    }
    unknown = set(weights) - set(fns)
    if unknown:
        raise ValueError(f"unknown loss terms {sorted(unknown)}; choose from {TERMS}")
    losses = {t: fns[t]() for t in terms}
    losses["content"] = sum((weights.get(k, 0.0) * v for k, v in losses.items()), fused.new_zeros(()))
    return losses
