"""Augmentations applied identically to every array of one training sample."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def random_crop(arrays: Sequence[np.ndarray], size: int, rng: np.random.Generator):
    """Crop the same (C, H, W) window out of each array; pads by reflection if too small."""
    h, w = arrays[0].shape[-2:]
    if h < size or w < size:
        pad = ((0, 0), (0, max(0, size - h)), (0, max(0, size - w)))
        arrays = [np.pad(a, pad, mode="reflect") for a in arrays]
        h, w = arrays[0].shape[-2:]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return [a[..., y:y + size, x:x + size] for a in arrays]


def random_dihedral(arrays: Sequence[np.ndarray], rng: np.random.Generator):
    """One of the 8 flips/rotations, the same for every array."""
    k = int(rng.integers(0, 4))
    flip = bool(rng.integers(0, 2))
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(-2, -1))
        if flip:
            a = a[..., ::-1]
        out.append(np.ascontiguousarray(a))
    return out
