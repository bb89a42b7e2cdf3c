"""Readers for folders of cloudy/clear pairs (PNG or GeoTIFF, 3 or 4 bands, uint8).

Layouts (detected per folder):
- suffix layout: ``<id>_cloudy.<ext>`` + ``<id>_clear.<ext>`` (RICE ``rice1``/``rice2``:
  ``105_cloudy.png``; ``thin_cloud``: ``pna_1_cloudy.tif``);
- CUHK-CR-style layout: sub-folders ``cloudy/`` and ``label/`` holding files with the same
  names (4-band GeoTIFFs R, G, B, NIR).

Values are uint8 and mapped to [-1, 1] by ``(v - 127.5) / 127.5`` (the model card's offset
127.5 / scale 127.5). Splits (``splits.py``): ``train`` excludes held-out and validation pairs,
``validation`` and ``test`` (held-out) are disjoint from it, ``all`` is every pair.
"""
from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from ..common.augment import random_crop, random_dihedral
from .splits import is_held_out, validation_ids

EXTENSIONS = (".png", ".tif", ".tiff", ".jpg")


@dataclass(frozen=True)
class Pair:
    root: str
    pair_id: str
    cloudy: str
    clear: str


def find_pairs(root: str) -> List[Pair]:
    """All pairs in one folder, sorted by id (numeric ids numerically)."""
    pairs: List[Pair] = []
    cloudy_dir, label_dir = os.path.join(root, "cloudy"), os.path.join(root, "label")
    if os.path.isdir(cloudy_dir) and os.path.isdir(label_dir):
        for path in sorted(glob.glob(os.path.join(cloudy_dir, "*"))):
            name = os.path.basename(path)
            stem, ext = os.path.splitext(name)
            if ext.lower() in EXTENSIONS and os.path.exists(os.path.join(label_dir, name)):
                pairs.append(Pair(root, stem, path, os.path.join(label_dir, name)))
    else:
        for path in glob.glob(os.path.join(root, "*_cloudy.*")):
            base, ext = os.path.splitext(os.path.basename(path))
            if ext.lower() not in EXTENSIONS:
                continue
            stem = base[: -len("_cloudy")]
            clear = os.path.join(root, f"{stem}_clear{ext}")
            if os.path.exists(clear):
                pairs.append(Pair(root, stem, path, clear))
    pairs.sort(key=lambda p: (0, int(p.pair_id), "") if p.pair_id.isdigit() else (1, 0, p.pair_id))
    if not pairs:
        raise FileNotFoundError(f"no cloudy/clear pairs found in {root} "
                                "(expected <id>_cloudy.<ext> + <id>_clear.<ext>, or cloudy/ + label/)")
    return pairs


def split_roots(data: str) -> List[str]:
    """``--data`` may list several folders separated by commas (or os.pathsep)."""
    parts = [p for chunk in data.split(",") for p in chunk.split(os.pathsep)]
    return [p for p in (s.strip() for s in parts) if p]


def select_pairs(roots: Sequence[str], split: str = "train") -> List[Pair]:
    if split not in ("train", "validation", "test", "all"):
        raise ValueError(f"unknown split {split!r}")
    out = []
    for root in roots:
        pairs = find_pairs(root)
        validation = set(validation_ids(root, [p.pair_id for p in pairs]))
        for pair in pairs:
            held, val = is_held_out(root, pair.pair_id), pair.pair_id in validation
            kind = "test" if held else "validation" if val else "train"
            if split in ("all", kind):
                out.append(pair)
    return out


def read_image(path: str, bands: Optional[int] = None) -> np.ndarray:
    """(C, H, W) uint8. ``bands`` keeps the first N bands (e.g. drop PNG alpha).

    Pillow stands in for rasterio where GDAL is not installed (a rented GPU machine with torch
    only); PNG decoding is lossless, so both give the same pixels.
    """
    try:
        import rasterio
    except ImportError:
        from PIL import Image
        with Image.open(path) as image:
            data = np.asarray(image)
        data = data[None] if data.ndim == 2 else data.transpose(2, 0, 1)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NotGeoreferencedWarning for PNGs
            with rasterio.open(path) as src:
                data = src.read()
    if data.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 data, got {data.dtype}")
    if bands is not None:
        if data.shape[0] < bands:
            raise ValueError(f"{path} has {data.shape[0]} bands, {bands} needed")
        data = data[:bands]
    return data


def to_net(a: np.ndarray) -> np.ndarray:
    return (a.astype(np.float32) - 127.5) / 127.5


def from_net(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 127.5 + 127.5), 0, 255).astype(np.uint8)


class PairDataset:
    """In-memory pairs; ``batch(rng, n, size)`` draws random crops with the 8 dihedral augmentations.

    ``size=None`` uses the whole image (all images must share one size then).
    """

    def __init__(self, roots: Sequence[str], split: str = "train", bands: int = 3):
        self.pairs = select_pairs(roots, split)
        if not self.pairs:
            raise ValueError(f"no {split} pairs in {list(roots)}")
        self.bands = bands
        self.cloudy = [read_image(p.cloudy, bands) for p in self.pairs]
        self.clear = [read_image(p.clear, bands) for p in self.pairs]
        for p, a, b in zip(self.pairs, self.cloudy, self.clear):
            if a.shape != b.shape:
                raise ValueError(f"pair {p.pair_id} in {p.root}: shapes differ {a.shape} vs {b.shape}")

    def __len__(self) -> int:
        return len(self.pairs)

    def batch(self, rng: np.random.Generator, n: int, size: Optional[int] = None,
              extra: Optional[Sequence[np.ndarray]] = None):
        """(cloudy, clear) in network units; with ``extra`` (one float array per pair, e.g. E's
        cached output) also that, cropped and turned with its pair: (cloudy, clear, extra)."""
        ys, xs, es = [], [], []
        for _ in range(n):
            i = int(rng.integers(0, len(self.pairs)))
            arrays = [self.cloudy[i], self.clear[i]] + ([extra[i]] if extra is not None else [])
            if size:
                arrays = random_crop(arrays, size, rng)
            y, x, *e = random_dihedral(arrays, rng)
            ys.append(to_net(y))
            xs.append(to_net(x))
            es += [a.astype(np.float32) for a in e]
        if extra is not None:
            return np.stack(ys), np.stack(xs), np.stack(es)
        return np.stack(ys), np.stack(xs)
