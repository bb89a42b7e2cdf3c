"""Per-sample evaluation of SAR cloud-removal models (used by the cross-validation driver and
the quality benchmark): restoration metrics, SAR structure under cloud, and a stripe index.

Conventions (as ``benchmarks/quality_sar_cloud_removal.py``): reflectance in [0, 1]
(outputs rounded to the uint16 DN the plugin writes), PSNR with data range 1, SSIM 11x11
Gaussian sigma 1.5, SAM in degrees; "cloudy" = the triplet's cloud_mask == 1.

- ``sar_edge_correlation``: Pearson correlation, inside cloudy pixels, between the gradient
  magnitude of the output (mean of B2, B3, B4, B8, Gaussian sigma 1) and that of the SAR
  (mean of VV, VH in network units, Gaussian sigma 1.5 against speckle). A model that puts
  the SAR's roads, field edges and blocks under the cloud scores higher than one that fills
  the cloud with a smooth blob. The cloud-free target's own score is the reference.
- ``stripe_index``: half the log-ratio of the output's high-frequency power along x to
  that along y (top 15 % of frequencies, B2/B3/B4/B8), minus the same for the output of the
  transposed input transposed back. Image content rotates with the input and cancels; a
  pattern tied to the network's own frame (the 1.x vertical stripes) does not. Bundled
  1.1.0 models on the 15 triplets: baseline |index| <= 0.57; IB-HFN above 1 on 8 of them,
  2.4 on oriolac_5278 (positive = vertical stripes).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np

from ...plugin.core.metrics.restoration import restoration_metrics

VISIBLE_NIR = (1, 2, 3, 7)  # B2, B3, B4, B8


def quantise(reflectance: np.ndarray) -> np.ndarray:
    """As written by the plugin: clip to [0, 1] and round to uint16 DN, back to reflectance."""
    return np.rint(np.clip(reflectance, 0.0, 1.0) * 10000.0) / 10000.0


def _grad_mag(img: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter, sobel
    s = gaussian_filter(img.astype(np.float64), sigma)
    return np.hypot(sobel(s, axis=0), sobel(s, axis=1))


def sar_edge_correlation(optical: np.ndarray, sar: np.ndarray, mask: Optional[np.ndarray],
                         min_pixels: int = 200, border: int = 3) -> float:
    """Correlation of optical and SAR edge strength inside ``mask`` (H, W) (NaN if too few pixels)."""
    eo = _grad_mag(optical[list(VISIBLE_NIR)].mean(0), 1.0)
    es = _grad_mag(sar.mean(0), 1.5)
    sel = np.ones(eo.shape, bool) if mask is None else mask.astype(bool).copy()
    sel[:border], sel[-border:], sel[:, :border], sel[:, -border:] = False, False, False, False
    if sel.sum() < min_pixels:
        return float("nan")
    a, b = eo[sel], es[sel]
    if a.std() < 1e-12 or b.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def hf_anisotropy(img: np.ndarray, top: float = 0.15) -> float:
    """log(x-power / y-power) in the top ``top`` fraction of frequencies, bands B2/B3/B4/B8."""
    ratios = []
    for b in img[list(VISIBLE_NIR)].astype(np.float64):
        b = b - b.mean()
        px = (np.abs(np.fft.rfft(b, axis=1)) ** 2).mean(0)
        py = (np.abs(np.fft.rfft(b, axis=0)) ** 2).mean(1)
        kx, ky = int(len(px) * (1 - top)), int(len(py) * (1 - top))
        ratios.append(np.log((px[kx:].sum() + 1e-20) / (py[ky:].sum() + 1e-20)))
    return float(np.median(ratios))


def stripe_index(model_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], optical: np.ndarray,
                 sar: np.ndarray, out: Optional[np.ndarray] = None) -> float:
    """Frame-tied stripes of ``model_fn(optical, sar) -> restored`` (all (C, H, W), network units)."""
    if out is None:
        out = model_fn(optical, sar)
    out_t = model_fn(np.ascontiguousarray(optical.transpose(0, 2, 1)), np.ascontiguousarray(sar.transpose(0, 2, 1)))
    return 0.5 * (hf_anisotropy(out) - hf_anisotropy(out_t.transpose(0, 2, 1)))


def sample_row(pred: np.ndarray, cloudy: np.ndarray, clear: np.ndarray, sar: np.ndarray,
               mask: Optional[np.ndarray]) -> Dict:
    """Metrics of one prediction (reflectance, (C, H, W)) against the clear target."""
    pred = quantise(pred)
    m = None if mask is None else mask.astype(bool)
    row = {"all": restoration_metrics(pred, clear, 1.0),
           "cloudy": restoration_metrics(pred, clear, 1.0, m) if m is not None and m.any() else None,
           "clear_area": restoration_metrics(pred, clear, 1.0, ~m) if m is not None and (~m).any() else None,
           "sar_edge_corr": sar_edge_correlation(pred, sar, m),
           "cloud_fraction": float(m.mean()) if m is not None else None}
    return row


def torch_predictor(model) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """(optical, sar) network-unit arrays -> restored, through an eval-mode torch model,
    reflect-padding to the model's size multiple."""
    import torch
    multiple = int(getattr(model, "size_multiple", 1))

    @torch.no_grad()
    def run(optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        h, w = optical.shape[1:]
        ph, pw = (-h) % multiple, (-w) % multiple
        if ph or pw:
            pad = ((0, 0), (0, ph), (0, pw))
            optical, sar = np.pad(optical, pad, mode="reflect"), np.pad(sar, pad, mode="reflect")
        out = model(torch.from_numpy(np.ascontiguousarray(optical, np.float32))[None],
                    torch.from_numpy(np.ascontiguousarray(sar, np.float32))[None])[0][0].numpy()
        return out[:, :h, :w]
    return run
