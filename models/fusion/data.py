"""Co-registered SAR/optical pairs for fusion training, all values mapped to [-1, 1].

Sources (``--data`` folder):

* the shared data layout (``sar_optical/``, ``sen12mscr/``, ``ssl4eo/`` ...), detected by folder names:
  - ``cfog``: ``sar_optical/cfog_stest3_{sar,optical}.tif``: uint8, ``v/127.5 - 1``; training
    uses only the rows outside the held-out bottom third (see ``splits.py``);
  - ``sen12mscr``: ``sen12mscr/*/s1.tif`` + ``s2_cloudfree.tif``: VV dB clipped to [-25, 0] ->
    ``(v + 12.5) / 12.5``; S2 RGB = bands 4,3,2 clipped to [0, 3000] -> ``(v - 1500) / 1500``;
    held-out samples are skipped;
  - ``ssl4eo``: ``ssl4eo/*/s1_*.tif`` + the clear S2 dates (L1C 06-04, L2A 08-13): S1 and S2
    grids differ, so S1 VV is reprojected onto the S2 grid (bilinear, the engine's own path);
  - ``vsff``: the 1000² WHU-OPT-SAR crop (uint8), rows above the validation quarter;
  - ``bigearthnet``: ``bigearthnet_s1s2/*/s1.tif`` + ``s2.tif`` (L2A, 12 bands), as sen12mscr;
  - ``sen12ms_s1s2``: ``sen12ms_s1s2/*/s1.tif`` + ``s2_cloudfree.tif`` (open sea), as sen12mscr;
  - ``cfog_cp``: the CFOG PNG pair, SAR warped onto the optical grid by an affine fit of its
    294 control points (least squares, ~0.9 px RMS), cropped to where the SAR covers it.
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


def _s1s2_pairs(root: str, folder_glob: str, s2_name: str, prefix: str, keep) -> List[Pair]:
    out = []
    for folder in sorted(glob.glob(os.path.join(root, folder_glob, "*"))):
        name = os.path.basename(folder)
        s1, s2 = os.path.join(folder, "s1.tif"), os.path.join(folder, s2_name)
        if keep(name) and os.path.exists(s1) and os.path.exists(s2):
            out.append((f"{prefix}_{name}", norm_s1_db(_read(s1, [1])), norm_s2(s2_rgb(_read(s2)))))
    return out


def valid_rectangle(valid: np.ndarray):
    """Slices of a rectangle where ``valid`` (H, W) is all true, trimming the worst border line
    by line (the warped/reprojected SAR leaves a thin invalid margin); None if nothing is left."""
    r0, r1, c0, c1 = 0, valid.shape[0], 0, valid.shape[1]
    while r1 > r0 and c1 > c0:
        v = valid[r0:r1, c0:c1]
        if v.all():
            return slice(r0, r1), slice(c0, c1)
        bad = [(~v[0]).mean(), (~v[-1]).mean(), (~v[:, 0]).mean(), (~v[:, -1]).mean()]
        k = int(np.argmax(bad))
        r0, r1, c0, c1 = r0 + (k == 0), r1 - (k == 1), c0 + (k == 2), c1 - (k == 3)
    return None


def load_sen12mscr(root: str, heldout: bool = False, split: str = "train") -> List[Pair]:
    """SEN12MS-CR pairs: ``heldout=True`` the held-out ones; else ``split`` = "train" (without
    validation), "validation" or "train+validation"."""
    def keep(name):
        if splits.is_heldout_sen12mscr(name) or heldout:
            return splits.is_heldout_sen12mscr(name) and heldout
        is_val = name in splits.SEN12MSCR_VALIDATION
        return (is_val and "validation" in split) or (not is_val and "train" in split)
    return _s1s2_pairs(root, "sen12mscr", "s2_cloudfree.tif", "sen12mscr", keep)


def load_bigearthnet(root: str, split: str = "train") -> List[Pair]:
    def keep(name):
        is_val = name in splits.BIGEARTHNET_VALIDATION
        return (is_val and "validation" in split) or (not is_val and "train" in split)
    return _s1s2_pairs(root, "bigearthnet_s1s2", "s2.tif", "bigearthnet", keep)


def load_sen12ms_s1s2(root: str) -> List[Pair]:
    return _s1s2_pairs(root, "sen12ms_s1s2", "s2_cloudfree.tif", "sen12ms_s1s2", lambda name: True)


def load_vsff(root: str, rows=None, name: str = "vsff_train") -> Optional[Pair]:
    sar_p, opt_p = os.path.join(root, splits.VSFF_SAR), os.path.join(root, splits.VSFF_OPTICAL)
    if not (os.path.exists(sar_p) and os.path.exists(opt_p)):
        return None
    r0, r1 = rows or splits.vsff_train_rows()
    return (name, norm_uint8(_read(sar_p)[:1, r0:r1]), norm_uint8(_read(opt_p)[:3, r0:r1]))


def load_cfog_cp(root: str) -> Optional[Pair]:
    """The not pixel-aligned CFOG pair, SAR warped onto the optical grid (affine fit of the points)."""
    from scipy import ndimage
    folder = os.path.join(root, "sar_optical_cfog_cp")
    opt_p, sar_p = os.path.join(folder, "cfog_optical_ref.png"), os.path.join(folder, "cfog_sar_sen.png")
    cp_p = os.path.join(folder, "cfog_optical_to_sar_cp.txt")
    if not all(os.path.exists(p) for p in (opt_p, sar_p, cp_p)):
        return None
    pts = np.loadtxt(cp_p)
    x_opt, y_opt, x_sar, y_sar = pts.T
    design = np.stack([y_opt, x_opt, np.ones_like(x_opt)], 1)          # (row, col, 1) on the optical grid
    row_coef = np.linalg.lstsq(design, y_sar, rcond=None)[0]
    col_coef = np.linalg.lstsq(design, x_sar, rcond=None)[0]
    matrix = np.array([row_coef[:2], col_coef[:2]])
    offset = np.array([row_coef[2], col_coef[2]])
    opt = _read(opt_p)[:3]
    sar = _read(sar_p)[0]
    warped = ndimage.affine_transform(sar, matrix, offset, output_shape=opt.shape[1:], order=1, cval=np.nan)
    sl = valid_rectangle(np.isfinite(warped))
    if sl is None:
        return None
    warped, opt = warped[sl], opt[(slice(None),) + sl]
    return ("cfog_cp_warped", norm_uint8(warped[None]), norm_uint8(opt))


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


SSL4EO_PAIRS = (("s1_20200607.tif", "s2l1c_20200604.tif"), ("s1_20200903.tif", "s2l2a_20200813.tif"))


def load_ssl4eo(root: str) -> List[Pair]:
    """SSL4EO-S12 S1 VV reprojected onto the clear S2 dates (the cloudy L1C 08-23 is not used)."""
    out = []
    for folder in sorted(glob.glob(os.path.join(root, "ssl4eo", "*"))):
        for s1_name, s2_name in SSL4EO_PAIRS:
            s1, s2 = os.path.join(folder, s1_name), os.path.join(folder, s2_name)
            if not (os.path.exists(s1) and os.path.exists(s2)):
                continue
            sar = reproject_to(s1, s2)
            rect = valid_rectangle(np.isfinite(sar[0]))
            if rect is None:
                continue
            sl = (slice(None),) + rect
            tag = f"{os.path.basename(folder)}_{s2_name[:-4]}"
            out.append((f"ssl4eo_{tag}", norm_s1_db(sar[sl]), norm_s2(s2_rgb(_read(s2))[sl])))
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
    return any(os.path.isdir(os.path.join(root, d))
               for d in ("sar_optical", "sen12mscr", "ssl4eo", "sar_optical_vsff", "bigearthnet_s1s2"))


SOURCES = ("cfog", "sen12mscr", "ssl4eo", "vsff", "bigearthnet", "sen12ms_s1s2", "cfog_cp")


def load_training_pairs(root: str, sources=SOURCES, include_validation: bool = False) -> List[Pair]:
    """All training pairs under ``root``: held-out pairs of ``splits.py`` always excluded,
    validation pairs only with ``include_validation``."""
    if not is_shared_layout(root):
        return load_folder_pairs(root)
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown fusion data sources {sorted(unknown)}; choose from {SOURCES}")
    split = "train+validation" if include_validation else "train"
    pairs: List[Pair] = []
    singles = {"cfog": load_cfog, "vsff": load_vsff, "cfog_cp": load_cfog_cp}
    for source in sources:
        if source in singles:
            p = singles[source](root)
            pairs += [p] if p is not None else []
        elif source == "sen12mscr":
            pairs += load_sen12mscr(root, split=split)
        elif source == "bigearthnet":
            pairs += load_bigearthnet(root, split=split)
        elif source == "sen12ms_s1s2":
            pairs += load_sen12ms_s1s2(root)
        elif source == "ssl4eo":
            pairs += load_ssl4eo(root)
    if include_validation and "vsff" in sources:
        p = load_vsff(root, splits.vsff_validation_rows(), "vsff_validation")
        pairs += [p] if p is not None else []
    if not pairs:
        raise FileNotFoundError(f"no SAR/optical training pairs found under {root}")
    return pairs


def load_validation_pairs(root: str) -> List[Pair]:
    """The validation pairs (``splits.py``): for choosing loss weights and checkpoints."""
    out: List[Pair] = []
    p = load_vsff(root, splits.vsff_validation_rows(), "vsff_validation")
    out += [p] if p is not None else []
    return out + load_sen12mscr(root, split="validation") + load_bigearthnet(root, split="validation")


def load_heldout_pairs(root: str) -> List[Pair]:
    out = []
    p = load_cfog(root, rows=splits.cfog_heldout_rows())
    if p is not None:
        out.append(("cfog_heldout",) + p[1:])
    return out + load_sen12mscr(root, heldout=True)


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    """(C, h, w) -> (C, size, size), bilinear with antialiasing when shrinking."""
    import torch
    import torch.nn.functional as F
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=a.shape[-1] > size)
    return t[0].clamp(-1.0, 1.0).numpy()


class PatchSampler:
    """Random crops, random scale (a crop of ``patch * s`` pixels resized to ``patch``, ``s``
    log-uniform in ``scale_range``) and the 8 flips/rotations. Pairs are drawn in proportion to
    their area, capped at ``area_cap`` pixels so one large scene does not crowd out the rest."""

    def __init__(self, pairs: List[Pair], patch: int, seed: int = 0, augment: bool = True,
                 scale_range=(1.0, 1.0), area_cap: float = 3e5):
        self.pairs, self.patch, self.augment = pairs, patch, augment
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        area = np.array([min(p[1].shape[1] * p[1].shape[2], area_cap) for p in pairs], np.float64)
        self.weights = area / area.sum()
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int):
        sars, opts = [], []
        lo, hi = self.scale_range
        for _ in range(size):
            _, sar, opt = self.pairs[int(self.rng.choice(len(self.pairs), p=self.weights))]
            crop = self.patch
            if self.augment and hi > lo:
                s = float(np.exp(self.rng.uniform(np.log(lo), np.log(hi))))
                crop = int(round(self.patch * s))
                crop = max(8, min(crop, max(sar.shape[1], sar.shape[2], self.patch)))
            s, o = random_crop([sar, opt], crop, self.rng)
            if crop != self.patch:
                s, o = _resize(s, self.patch), _resize(o, self.patch)
            if self.augment:
                s, o = random_dihedral([s, o], self.rng)
            sars.append(s)
            opts.append(o)
        return np.stack(sars).astype(np.float32), np.stack(opts).astype(np.float32)

    def state(self):
        return self.rng.bit_generator.state

    def set_state(self, state):
        self.rng.bit_generator.state = state
