"""Extra training data for IB-HFN beside the SEN12MS-CR triplets (training only, never evaluation).

Everything is returned in network units (``data.S2_BANDS`` / ``data.S1_BANDS``) as
``data.Sample`` objects of three kinds:

- clear pairs (S1 + clear S2, ``cloudy`` None): backgrounds for synthetic clouds.
  ``bigearthnet_s1s2`` (L2A, 12 bands, 120 px), ``sen12ms_s1s2`` (L1C, open sea) and
  ``ssl4eo`` (S2 L1C 2020-06-04 with S1 2020-06-07 reprojected onto the S2 grid: the two
  grids differ by ~4 px and < 1 % in scale);
- real triplets (S1 + cloudy S2 + clear S2 of another date): ``ssl4eo`` L1C 2020-08-23
  (visibly cloudy) with S1 2020-09-03, target the clear 2020-06-04;
- cloud layers (cloudy S2 + clear S2 of the same place, no SAR): ``sen12mscr_ts``, each
  cloudy date with the nearest clear date (dates classified from the data, see
  ``classify_ts_dates``); the cloud layer is what the cloudy date adds to the clear one.

L2A -> L1C: BigEarthNet has no B10 (cirrus) and surface instead of top-of-atmosphere
reflectance. B10 is filled with 13 DN (median B10 of the 15 SEN12MS-CR clear targets) and
the other bands mapped with the per-band linear fit L1C = a * L2A + b measured on the one
place where both products of the same acquisition exist (``ssl4eo`` 2020-06-04; r >= 0.996
except B9). This is one atmosphere, so it is approximate; the background jitter of the
composites covers the rest.

``place_overlap`` is the leakage guard: extra samples that show the place of an evaluation
triplet (high-pass NIR template match, any date) or the same SAR acquisition (high-pass dB
match) are dropped by the trainer. On the shared data no extra sample comes close (NIR
NCC <= 0.32 and SAR <= 0.20 against all 15 triplets; the same place on another date scores
0.7-0.87, the same acquisition 1.0).
"""
from __future__ import annotations

import glob
import os
import re
import warnings
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .data import S1_BANDS, S2_BANDS, Sample, preprocess, read_tif

B10_FILL_DN = 13.0
# L1C = a * L2A + b for the 12 L2A bands (B1..B9, B11, B12), fitted on ssl4eo/0000200 2020-06-04
L2A_TO_L1C = (
    (0.556, 1105.8), (0.592, 796.7), (0.641, 562.7), (0.739, 368.1), (0.687, 323.8), (0.745, 420.4),
    (0.813, 436.7), (0.781, 368.1), (0.863, 388.2), (0.093, 135.5), (0.868, 72.2), (0.757, 21.4))
L2A_INDEX_IN_L1C = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12)   # where the 12 L2A bands go among the 13
SOURCES = ("bigearthnet", "sen12ms_s1s2", "ssl4eo", "sen12mscr_ts")


def l2a_to_l1c(l2a_dn: np.ndarray, fit: bool = True) -> np.ndarray:
    """(12, H, W) L2A DN -> (13, H, W) approximate L1C DN (B10 filled, optional linear fit)."""
    if l2a_dn.shape[0] != 12:
        raise ValueError(f"expected 12 L2A bands, got {l2a_dn.shape[0]}")
    out = np.full((13,) + l2a_dn.shape[1:], B10_FILL_DN, np.float32)
    for j, i in enumerate(L2A_INDEX_IN_L1C):
        a, b = L2A_TO_L1C[j] if fit else (1.0, 0.0)
        out[i] = a * l2a_dn[j].astype(np.float32) + b
    return out


def fit_l2a_to_l1c(l1c_dn: np.ndarray, l2a_dn: np.ndarray) -> List[Tuple[float, float, float]]:
    """Per-band least-squares (a, b, r) of L1C = a * L2A + b (used to derive ``L2A_TO_L1C``)."""
    fits = []
    for j, i in enumerate(L2A_INDEX_IN_L1C):
        x, y = l2a_dn[j].ravel().astype(np.float64), l1c_dn[i].ravel().astype(np.float64)
        (a, b), *_ = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1), y, rcond=None)
        fits.append((float(a), float(b), float(np.corrcoef(x, y)[0, 1])))
    return fits


def _s2(raw: np.ndarray) -> np.ndarray:
    return preprocess(raw, S2_BANDS)


def _s1(raw: np.ndarray) -> np.ndarray:
    return preprocess(raw, S1_BANDS)


def load_bigearthnet(root: str, fit: bool = True) -> List[Sample]:
    """Clear S1 + S2 pairs of ``bigearthnet_s1s2/<patch>/{s1,s2}.tif`` (S2 L2A -> L1C-like)."""
    out = []
    for s2_path in sorted(glob.glob(os.path.join(root, "*", "s2.tif"))):
        d = os.path.dirname(s2_path)
        s1_path = os.path.join(d, "s1.tif")
        if not os.path.exists(s1_path):
            continue
        clear = _s2(l2a_to_l1c(read_tif(s2_path), fit))
        out.append(Sample(f"bigearthnet/{os.path.basename(d)}", _s1(read_tif(s1_path)), None, clear, None))
    return out


def load_sen12ms_s1s2(root: str) -> List[Sample]:
    """Clear S1 + S2 pairs of ``sen12ms_s1s2/<patch>/{s1,s2_cloudfree}.tif`` (open sea)."""
    out = []
    for s2_path in sorted(glob.glob(os.path.join(root, "*", "s2_cloudfree.tif"))):
        d = os.path.dirname(s2_path)
        out.append(Sample(f"sen12ms_s1s2/{os.path.basename(d)}", _s1(read_tif(os.path.join(d, "s1.tif"))), None,
                          _s2(read_tif(s2_path)), None))
    return out


def reproject_to(src_path: str, like_path: str) -> np.ndarray:
    """Bands of ``src_path`` resampled (bilinear) onto the grid of ``like_path``; outside = NaN."""
    import rasterio
    from rasterio.warp import Resampling, reproject
    with rasterio.open(like_path) as like, rasterio.open(src_path) as src:
        out = np.full((src.count, like.height, like.width), np.nan, np.float32)
        reproject(rasterio.band(src, list(range(1, src.count + 1))), out, src_transform=src.transform,
                  src_crs=src.crs, dst_transform=like.transform, dst_crs=like.crs, src_nodata=None,
                  dst_nodata=np.nan, resampling=Resampling.bilinear)
    return out


def _fill_nan_edges(sar_db: np.ndarray) -> np.ndarray:
    """Edge pixels the reprojection could not reach: nearest valid value along each row/column."""
    out = sar_db.copy()
    for band in out:
        bad = ~np.isfinite(band)
        if not bad.any():
            continue
        rows, cols = np.nonzero(~bad)
        if rows.size == 0:
            band[:] = -20.0
            continue
        from scipy.ndimage import distance_transform_edt
        _, (iy, ix) = distance_transform_edt(bad, return_indices=True)
        band[bad] = band[iy[bad], ix[bad]]
    return out


def load_ssl4eo(root: str) -> Tuple[List[Sample], List[Sample]]:
    """(clear pairs, real triplets) of ``ssl4eo/<location>/`` (S1 reprojected to the S2 grid)."""
    clear_pairs, triplets = [], []
    for loc in sorted(glob.glob(os.path.join(root, "*"))):
        clear_s2 = os.path.join(loc, "s2l1c_20200604.tif")
        if not os.path.exists(clear_s2):
            continue
        name = os.path.basename(loc)
        clear = _s2(read_tif(clear_s2))
        s1_clear = os.path.join(loc, "s1_20200607.tif")
        if os.path.exists(s1_clear):
            clear_pairs.append(Sample(f"ssl4eo/{name}/20200604", _s1(_fill_nan_edges(reproject_to(s1_clear, clear_s2))),
                                      None, clear, None))
        cloudy_s2, s1_cloudy = os.path.join(loc, "s2l1c_20200823.tif"), os.path.join(loc, "s1_20200903.tif")
        if os.path.exists(cloudy_s2) and os.path.exists(s1_cloudy):
            sar = _s1(_fill_nan_edges(reproject_to(s1_cloudy, cloudy_s2)))
            triplets.append(Sample(f"ssl4eo/{name}/20200823", sar, _s2(read_tif(cloudy_s2)), clear, None))
    return clear_pairs, triplets


_TS_DATE = re.compile(r"ImgNo_(\d+)_(\d{4}-\d{2}-\d{2})_patch_(\d+)")


def classify_ts_dates(paths: Sequence[str]) -> Dict[str, bool]:
    """Path -> clear? A date is clear when under 2 % of its pixels have blue (B2) above 0.18
    reflectance and its mean cirrus band (B10) is under 0.005 (haze and cirrus show there).
    On the shared series this gives 13 clear dates (3, 9, 12-14, 16-20, 22-24), consistent
    with the README's visual notes."""
    out = {}
    for p in paths:
        raw = read_tif(p).astype(np.float32)
        out[p] = bool((raw[1] > 1800).mean() < 0.02 and raw[10].mean() < 50)
    return out


def load_ts_cloud_layers(root: str, min_cloud: float = 0.02) -> List[Sample]:
    """Cloud layers (cloudy date, nearest clear date of the same patch) of ``sen12mscr_ts``.
    Dates whose visible brightness excess over the clear partner is above 0.05 on under
    ``min_cloud`` of the pixels and under 0.01 on average (neither cloud nor haze) are skipped."""
    paths = sorted(glob.glob(os.path.join(root, "s2_*.tif")))
    by_patch: Dict[str, List[Tuple[np.datetime64, str]]] = {}
    for p in paths:
        m = _TS_DATE.search(os.path.basename(p))
        if m:
            by_patch.setdefault(m.group(3), []).append((np.datetime64(m.group(2)), p))
    out = []
    for patch, dated in sorted(by_patch.items()):
        clear_flags = classify_ts_dates([p for _, p in dated])
        clear = [(d, p) for d, p in dated if clear_flags[p]]
        if not clear:
            continue
        for d, p in dated:
            if clear_flags[p]:
                continue
            dc, pc = min(clear, key=lambda c: abs(c[0] - d))
            cloudy, clear_img = _s2(read_tif(p)), _s2(read_tif(pc))
            excess = np.clip(cloudy - clear_img, 0.0, None)[1:4].mean(0)
            if (excess > 0.05).mean() < min_cloud and excess.mean() < 0.01:  # keeps haze-only dates
                continue
            out.append(Sample(f"sen12mscr_ts/p{patch}/{d}~{dc}", None, cloudy, clear_img, None))
    return out


def load_extra(data_root: str, spec: Dict) -> Dict[str, List[Sample]]:
    """The extra sources named in ``spec`` (the trainer config's ``extra``):
    ``{"clear": [...], "real": [...], "cloud_layers": [...], "exclude": [id prefixes]}``.
    Source names: ``SOURCES``; folders are looked up under ``data_root`` (the shared data folder).
    Returns ``{"clear": [...], "real": [...], "cloud_layers": [...]}`` lists of samples."""
    def wanted(kind):
        names = list(spec.get(kind, []))
        bad = [n for n in names if n not in SOURCES]
        if bad:
            raise ValueError(f"unknown extra source(s) {bad} in extra.{kind}; known: {list(SOURCES)}")
        return names

    def folder(name):
        path = os.path.join(data_root, {"bigearthnet": "bigearthnet_s1s2"}.get(name, name))
        if not os.path.isdir(path):
            raise FileNotFoundError(f"extra source {name!r}: folder {path} not found")
        return path

    clear_names, real_names, layer_names = wanted("clear"), wanted("real"), wanted("cloud_layers")
    out: Dict[str, List[Sample]] = {"clear": [], "real": [], "cloud_layers": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ssl = load_ssl4eo(folder("ssl4eo")) if "ssl4eo" in clear_names + real_names else ([], [])
        for name in clear_names:
            if name == "bigearthnet":
                out["clear"] += load_bigearthnet(folder(name), fit=bool(spec.get("l2a_fit", True)))
            elif name == "sen12ms_s1s2":
                out["clear"] += load_sen12ms_s1s2(folder(name))
            elif name == "ssl4eo":
                out["clear"] += ssl[0]
            else:
                raise ValueError(f"extra source {name!r} has no clear S1+S2 pairs")
        for name in real_names:
            if name != "ssl4eo":
                raise ValueError(f"extra source {name!r} has no real cloudy triplets (only 'ssl4eo')")
            out["real"] += ssl[1]
        for name in layer_names:
            if name != "sen12mscr_ts":
                raise ValueError(f"extra source {name!r} has no cloud layers (only 'sen12mscr_ts')")
            out["cloud_layers"] += load_ts_cloud_layers(folder(name))
    exclude = tuple(spec.get("exclude", []))
    for kind in out:
        out[kind] = [s for s in out[kind] if not s.id.startswith(exclude)] if exclude else out[kind]
    return out


# ------------------------------------------------------------------------------------------
# leakage guard


def _highpass(img: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter
    img = img.astype(np.float64)
    return img - gaussian_filter(img, sigma)


def _best_match(small: np.ndarray, big: np.ndarray, size: int = 64) -> float:
    """Max normalised cross-correlation of four ``size`` crops of ``small`` searched in ``big``."""
    from skimage.feature import match_template
    if small.shape[0] * small.shape[1] > big.shape[0] * big.shape[1]:
        small, big = big, small
    h, w = small.shape
    s = min(size, h // 2, w // 2, big.shape[0], big.shape[1])
    best = -1.0
    for y, x in ((h // 4, w // 4), (h // 4, w // 2), (h // 2, w // 4), (h // 2, w // 2)):
        y, x = min(y, h - s), min(x, w - s)
        t = small[y:y + s, x:x + s]
        if t.std() < 1e-9:
            continue
        best = max(best, float(match_template(big, t).max()))
    return best


def place_overlap(a: Sample, b: Sample) -> Tuple[float, float]:
    """(NIR score, SAR score): how strongly ``a`` and ``b`` look like the same place (high-pass
    log-NIR of their clear S2 images: stable structure, so any date matches) and the same SAR
    acquisition (high-pass VV). NaN = not comparable (no SAR on one side)."""
    def nir(s: Sample):
        return _highpass(np.log(np.clip(s.clear[7], 1e-4, None)))
    nir_score = _best_match(nir(a), nir(b))
    sar_score = float("nan")
    if a.sar is not None and b.sar is not None:
        sar_score = _best_match(_highpass(a.sar[0]), _highpass(b.sar[0]))
    return nir_score, sar_score


def drop_overlapping(extras: Iterable[Sample], protected: Sequence[Sample], threshold: float = 0.6,
                     log: Optional[list] = None) -> List[Sample]:
    """``extras`` without those whose place or SAR acquisition matches any ``protected`` sample
    (score > ``threshold``). Each check is appended to ``log`` as (extra id, protected id, nir, sar)."""
    kept = []
    cache: Dict[str, bool] = {}
    for e in extras:
        key = "/".join(e.id.split("/")[:2]) if e.id.startswith("sen12mscr_ts/") else e.id  # one place
        if key not in cache:
            hit = False
            for p in protected:
                nir, sar = place_overlap(e, p)
                if log is not None:
                    log.append((e.id, p.id, round(nir, 3), None if np.isnan(sar) else round(sar, 3)))
                if nir > threshold or (not np.isnan(sar) and sar > threshold):
                    hit = True
            cache[key] = hit
        if not cache[key]:
            kept.append(e)
    return kept
