"""Tile grid and blending weights for seam-free streaming inference.

Tiles of size ``T`` start every ``S = T - O`` pixels (``O`` = overlap). Each tile is
weighted by a separable window that ramps smoothly (sin²) across the overlap on sides that
have a neighbour and stays 1 on image borders; the engine divides by the summed weights,
so the blend is exact where tiles agree and seam-free where they do not.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np


@dataclass(frozen=True)
class TileGrid:
    height: int
    width: int
    tile: int
    overlap: int

    def __post_init__(self):
        if self.tile < 1:
            raise ValueError(f"tile size must be positive, got {self.tile}")
        if not 0 <= self.overlap < self.tile:
            raise ValueError(f"overlap must be in [0, tile size {self.tile}), got {self.overlap}")

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @staticmethod
    def _count(size: int, tile: int, stride: int) -> int:
        return 1 if size <= tile else math.ceil((size - tile) / stride) + 1

    @property
    def rows(self) -> int:
        return self._count(self.height, self.tile, self.stride)

    @property
    def cols(self) -> int:
        return self._count(self.width, self.tile, self.stride)

    def __len__(self) -> int:
        return self.rows * self.cols

    def finished_span(self, index: int, count: int, size: int) -> tuple:
        """Pixels [start, stop) that are final once tile ``index`` (of ``count``) is blended."""
        start = index * self.stride
        stop = size if index == count - 1 else start + self.stride
        return start, min(stop, size)


def fit_to_image(tile: int, overlap: int, height: int, width: int, multiple: int = 1) -> Tuple[int, int]:
    """(tile, overlap) for an image of ``height`` x ``width``: an image that fits in one tile gets a
    tile only as large as it needs (its longer side rounded up to ``multiple``) -- padding a small
    image to a large tile costs time and memory for nothing; larger images keep the chosen tile."""
    need = max(multiple, -(-max(height, width) // multiple) * multiple)
    if need >= tile:
        return tile, overlap
    return need, min(overlap, need // 2)


def ramp_profile(length: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1-D window: 1 inside, and on each requested end a zero margin of ``overlap // 4``
    pixels followed by a sin² ramp up to 1 at ``overlap``.

    The zero margin drops the tile-edge pixels, where a network sees padding instead of
    context; the neighbour's ramp is still positive there, so every pixel keeps a weight.
    """
    w = np.ones(length, dtype=np.float64)
    if overlap > 0:
        margin = overlap // 4
        ramp = np.zeros(overlap)
        span = overlap - margin
        ramp[margin:] = np.sin(0.5 * np.pi * (np.arange(span) + 0.5) / span) ** 2
        if ramp_start:
            w[:overlap] *= ramp
        if ramp_end:
            w[length - overlap:] *= ramp[::-1]
    return w


def tile_weights(grid: TileGrid, row: int, col: int) -> np.ndarray:
    """float32 (T, T) weights of one tile; a fresh array the caller may modify."""
    return _weights(grid.tile, grid.overlap, row > 0, row < grid.rows - 1, col > 0, col < grid.cols - 1).copy()


@functools.lru_cache(maxsize=32)
def _weights(tile: int, overlap: int, top: bool, bottom: bool, left: bool, right: bool) -> np.ndarray:
    wy = ramp_profile(tile, overlap, top, bottom)
    wx = ramp_profile(tile, overlap, left, right)
    return np.outer(wy, wx).astype(np.float32)


def pad_to(data: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad a (C, h, w) array at the bottom/right to (C, height, width) by reflection.

    Reflection keeps image statistics at scene edges; 1-pixel-wide data falls back to edge copy.
    """
    ph, pw = height - data.shape[-2], width - data.shape[-1]
    if ph == 0 and pw == 0:
        return data
    pad = [(0, 0)] * (data.ndim - 2) + [(0, ph), (0, pw)]
    mode = "reflect" if min(data.shape[-2:]) > 1 else "edge"
    return np.pad(data, pad, mode=mode)
