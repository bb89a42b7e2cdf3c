"""Co-registered SAR/optical pairs for fusion training, all values mapped to [-1, 1].

Sources (``--data`` folder):

* the shared data layout (``sar_optical/``, ``sen12mscr/``, ``ssl4eo/``), detected by folder names:
  - ``sar_optical/cfog_stest3_{sar,optical}.tif``: uint8, ``v/127.5 - 1``; training uses
    only the rows outside the held-out bottom third (see ``splits.py``);
  - ``sen12mscr/*/s1.tif`` + ``s2_cloudfree.tif``: VV dB clipped to [-25, 0] ->
    ``(v + 12.5) / 12.5``; S2 RGB = bands 4,3,2 clipped to [0, 3000] -> ``(v - 1500) / 1500``;
    held-out samples are skipped;
  - ``ssl4eo/*/s1_*.tif`` + ``s2l1c_*`` (clear date): S1 and S2 grids differ, so S1 VV is
    reprojected onto the S2 grid with ``rasterio.warp.reproject`` (bilinear).
* any other folder: a *folder of pairs* (WHU-OPT-SAR / SEN1-2 style): two sub-folders, one
  for SAR (named ``sar``, ``s1``, ``SAR`` ...) and one for optical (``opt``, ``optical``,
  ``s2``, ``rgb`` ...), with matching file names (a ``s1``/``s2`` token in the name may differ,
  as in SEN1-2). Values are mapped by dtype: uint8 -> [0, 255]; float SAR -> dB [-25, 0];
  uint16 optical -> [0, 3000]; anything else -> per-image 0.5/99.5 percentiles.

Every sample is a pair ``(sar (1, H, W), optical (3, H, W))`` float32 in [-1, 1].
"""
from __future__ import annotations

import glob
import os
import re
import warnings
from typing import List, Optional, Tuple

import numpy as np

from ..common.augment import random_crop, random_dihedral
from . import splits

Pair = Tuple[str, np.ndarray, np.ndarray]  # name, sar (1,H,W), optical (3,H,W)

SAR_DIRS = ("sar", "s1", "SAR", "S1", "sen", "radar")
OPT_DIRS = ("opt", "optical", "s2", "rgb", "OPT", "S2", "RGB", "optic", "ref")
EXTS = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def _read(path: str, bands=None) -> np.ndarray:
    import rasterio
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as src:
            return src.read(bands).astype(np.float32) if bands else src.read().astype(np.float32)


def norm_uint8(v):
    return (np.clip(v, 0, 255) - 127.5) / 127.5


def norm_s1_db(v):
    v = np.nan_to_num(v, nan=-25.0, posinf=0.0, neginf=-25.0)
    return (np.clip(v, -25.0, 0.0) + 12.5) / 12.5


def norm_s2(v):
    v = np.nan_to_num(v, nan=0.0)
    return (np.clip(v, 0.0, 3000.0) - 1500.0) / 1500.0


def _percentile_norm(v):
    lo, hi = np.percentile(v, [0.5, 99.5])
    hi = hi if hi > lo else lo + 1
    return (np.clip(v, lo, hi) - lo) / (hi - lo) * 2 - 1


def s2_rgb(arr: np.ndarray) -> np.ndarray:
    """RGB (bands 4,3,2) of a 12/13-band S2 stack."""
    return arr[[3, 2, 1]]


def load_cfog(root: str, rows=None) -> Optional[Pair]:
    sar_p, opt_p = os.path.join(root, splits.CFOG_SAR), os.path.join(root, splits.CFOG_OPTICAL)
    if not (os.path.exists(sar_p) and os.path.exists(opt_p)):
        return None
    r0, r1 = rows or splits.cfog_train_rows()
    return ("cfog_train", norm_uint8(_read(sar_p)[:1, r0:r1]), norm_uint8(_read(opt_p)[:3, r0:r1]))


def load_sen12mscr(root: str, heldout: bool = False) -> List[Pair]:
    out = []
    for folder in sorted(glob.glob(os.path.join(root, "sen12mscr", "*"))):
        name = os.path.basename(folder)
        if splits.is_heldout_sen12mscr(name) != heldout:
            continue
        s1, s2 = os.path.join(folder, "s1.tif"), os.path.join(folder, "s2_cloudfree.tif")
        if os.path.exists(s1) and os.path.exists(s2):
            out.append((f"sen12mscr_{name}", norm_s1_db(_read(s1, [1])), norm_s2(s2_rgb(_read(s2)))))
    return out


def reproject_to(src_path: str, dst_path: str, band: int = 1) -> np.ndarray:
    """Band ``band`` of ``src_path`` read onto the grid of ``dst_path`` (bilinear), NaN where the
    source has no data: the plugin engine's own alignment, so training sees what inference sees."""
    from rasterio.windows import Window

    from ...plugin.core.raster_io import RasterSource

    with RasterSource(dst_path, [1], "target") as target:
        grid = target.grid
    with RasterSource(src_path, [band], "SAR", grid=grid, resampling="bilinear") as source:
        data, valid = source.read(Window(0, 0, grid.width, grid.height))
    data[:, ~valid] = np.nan
    return data


def load_ssl4eo(root: str) -> List[Pair]:
    out = []
    for folder in sorted(glob.glob(os.path.join(root, "ssl4eo", "*"))):
        s1s = sorted(glob.glob(os.path.join(folder, "s1_*.tif")))
        s2 = os.path.join(folder, "s2l1c_20200604.tif")   # the clear date
        if not s1s or not os.path.exists(s2):
            continue
        sar = reproject_to(s1s[0], s2)
        valid = np.isfinite(sar[0])
        rows, cols = np.where(valid)
        if rows.size == 0:
            continue
        sl = (slice(None), slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        out.append((f"ssl4eo_{os.path.basename(folder)}", norm_s1_db(sar[sl]), norm_s2(s2_rgb(_read(s2))[sl])))
    return out


def _find_dir(root: str, names) -> Optional[str]:
    for n in names:
        p = os.path.join(root, n)
        if os.path.isdir(p):
            return p
    return None


def _pair_key(fname: str) -> str:
    stem = os.path.splitext(fname)[0].lower()
    return re.sub(r"(?<![a-z0-9])(s1|s2|sar|opt|optical)(?![a-z0-9])", "x", stem)


def normalise_sar(v: np.ndarray, dtype) -> np.ndarray:
    if dtype == np.uint8:
        return norm_uint8(v)
    if np.issubdtype(dtype, np.floating):
        return norm_s1_db(v)
    return _percentile_norm(v)


def normalise_optical(v: np.ndarray, dtype) -> np.ndarray:
    if v.shape[0] >= 12:
        v = s2_rgb(v)
    elif v.shape[0] == 1:
        v = np.repeat(v, 3, axis=0)
    v = v[:3]
    if dtype == np.uint8:
        return norm_uint8(v)
    if dtype == np.uint16:
        return norm_s2(v)
    return _percentile_norm(v)


def load_folder_pairs(root: str, sar_dir: Optional[str] = None, opt_dir: Optional[str] = None,
                      limit: Optional[int] = None) -> List[Pair]:
    """Pairs from two folders with matching file names (WHU-OPT-SAR ``sar/`` + ``opt/``,
    SEN1-2 ``s1_*/`` + ``s2_*/`` with names differing only in the s1/s2 token)."""
    import rasterio
    sar_dir = sar_dir or _find_dir(root, SAR_DIRS)
    opt_dir = opt_dir or _find_dir(root, OPT_DIRS)
    if sar_dir is None or opt_dir is None:
        subs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        sar_dir = sar_dir or next((os.path.join(root, d) for d in subs if d.lower().startswith(("s1", "sar"))), None)
        opt_dir = opt_dir or next((os.path.join(root, d) for d in subs if d.lower().startswith(("s2", "opt", "rgb"))), None)
    if sar_dir is None or opt_dir is None:
        raise FileNotFoundError(f"{root}: no SAR/optical sub-folders found (expected e.g. sar/ and opt/)")
    opt_files = {_pair_key(f): os.path.join(opt_dir, f) for f in os.listdir(opt_dir) if f.lower().endswith(EXTS)}
    out = []
    for f in sorted(os.listdir(sar_dir)):
        if not f.lower().endswith(EXTS) or _pair_key(f) not in opt_files:
            continue
        sp, op = os.path.join(sar_dir, f), opt_files[_pair_key(f)]
        with rasterio.open(sp) as a, rasterio.open(op) as b:
            sdt, odt = np.dtype(a.dtypes[0]), np.dtype(b.dtypes[0])
        sar = normalise_sar(_read(sp)[:1], sdt)
        opt = normalise_optical(_read(op), odt)
        h, w = min(sar.shape[1], opt.shape[1]), min(sar.shape[2], opt.shape[2])
        out.append((os.path.splitext(f)[0], sar[:, :h, :w], opt[:, :h, :w]))
        if limit and len(out) >= limit:
            break
    if not out:
        raise FileNotFoundError(f"{root}: no pairs with matching names in {sar_dir} and {opt_dir}")
    return out


def is_shared_layout(root: str) -> bool:
    return any(os.path.isdir(os.path.join(root, d)) for d in ("sar_optical", "sen12mscr", "ssl4eo"))


def load_training_pairs(root: str, sources=("cfog", "sen12mscr", "ssl4eo")) -> List[Pair]:
    """All training pairs under ``root`` (held-out pairs of ``splits.py`` excluded)."""
    if not is_shared_layout(root):
        return load_folder_pairs(root)
    pairs: List[Pair] = []
    if "cfog" in sources:
        p = load_cfog(root)
        if p is not None:
            pairs.append(p)
    if "sen12mscr" in sources:
        pairs += load_sen12mscr(root)
    if "ssl4eo" in sources:
        pairs += load_ssl4eo(root)
    if not pairs:
        raise FileNotFoundError(f"no SAR/optical training pairs found under {root}")
    return pairs


def load_heldout_pairs(root: str) -> List[Pair]:
    out = []
    p = load_cfog(root, rows=splits.cfog_heldout_rows())
    if p is not None:
        out.append(("cfog_heldout",) + p[1:])
    return out + load_sen12mscr(root, heldout=True)


class PatchSampler:
    """Random crops + 8 dihedral transforms; the cfog scene is sampled in proportion to its area."""

    def __init__(self, pairs: List[Pair], patch: int, seed: int = 0, augment: bool = True):
        self.pairs, self.patch, self.augment = pairs, patch, augment
        area = np.array([p[1].shape[1] * p[1].shape[2] for p in pairs], np.float64)
        self.weights = area / area.sum()
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int):
        sars, opts = [], []
        for _ in range(size):
            _, sar, opt = self.pairs[int(self.rng.choice(len(self.pairs), p=self.weights))]
            s, o = random_crop([sar, opt], self.patch, self.rng)
            if self.augment:
                s, o = random_dihedral([s, o], self.rng)
            sars.append(s)
            opts.append(o)
        return np.stack(sars).astype(np.float32), np.stack(opts).astype(np.float32)

    def state(self):
        return self.rng.bit_generator.state

    def set_state(self, state):
        self.rng.bit_generator.state = state
