"""Classical SAR-optical fusion as an engine tile processor, with a model-card-like dict.

The engine treats a classical method like a model: ``classical_fusion_card`` returns a card
dict (schema of ``model_card.py``, task ``sar_optical_fusion``) that tells it how to scale
the rasters, and ``ClassicalFusionProcessor`` is the tile processor

    processor(inputs, origins) -> {"fused": (B, 3, T, T) float32 in [0, 1]}

with ``inputs["optical"]`` (B, 3, T, T) and ``inputs["sar"]`` (B, 1, T, T), both in [0, 1]
network units. Band specs (network value = (clip(v, lo, hi) - offset) / scale):

- optical uint8: clip [0, 255], scale 255; uint16 (Sentinel-2 DN): clip [0, 3000], scale
  3000 (true-colour stretch, brighter values saturate); float: clip [0, 1], scale 1.
- SAR uint8 (8-bit display values): clip [0, 255], scale 255, filtered as linear values;
  float (backscatter in dB, e.g. Sentinel-1 sigma0): clip [-25, 0], offset -25, scale 25,
  despeckled in linear intensity.
- output ``fused``: the optical band specs, ``dtype`` null (= the optical input's dtype).

Tiling: the engine's blend window gives no weight to the outer ``overlap // 4`` pixels of a
tile side that has a neighbour and some weight everywhere inside, so ``default_overlap`` is
four times the method's context radius (plus the despeckle window): every pixel that gets
weight has its full context inside the tile, and a tiled run equals a whole-image run. Tiles
that reach past the image edge are cut back to the image before fusing (``bind_grid``), so
the methods see the image border exactly as in a whole-image run, not the engine's padding.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..despeckle import S1_GRD_ENL, lee_filter
from ..errors import InputError
from ..fusion_classical import DEFAULT_LEVELS, METHODS, context_radius, fuse_rgb
from ..model_card import SCHEMA_VERSION, band
from ..tiling import pad_to

DESPECKLE = (None, "lee")
SAR_DB_CLIP = (-25.0, 0.0)
OPTICAL_UINT16_CLIP = (0.0, 3000.0)
TILE_SIZE = 512
RGB = (("R", "red"), ("G", "green"), ("B", "blue"))


def _is_float(dtype: str) -> bool:
    return str(dtype).startswith("float")


def sar_band_spec(dtype: str, clip: Optional[Sequence[float]] = None) -> Tuple[Dict[str, Any], str]:
    """Band entry for a 1-band SAR raster of ``dtype`` and its units ("linear" or "db").

    uint8 -> 8-bit values [0, 255]; float32/float64 -> dB clipped to [-25, 0]. ``clip`` overrides
    the range (its units follow the dtype). Other dtypes need an explicit ``clip``."""
    dtype = str(dtype)
    if _is_float(dtype):
        lo, hi = clip or SAR_DB_CLIP
        return band("SAR", "SAR backscatter in dB", [lo, hi], scale=hi - lo, offset=lo), "db"
    if dtype == "uint8" or clip is not None:
        lo, hi = clip or (0.0, 255.0)
        return band("SAR", "SAR backscatter, display values", [lo, hi], scale=hi - lo, offset=lo), "linear"
    raise InputError(
        f"SAR raster of type {dtype} has no default value range for classical fusion. "
        "Fix: give the SAR value range explicitly, or convert the SAR to dB (float32) or 8-bit")


def optical_band_specs(dtype: str, clip: Optional[Sequence[float]] = None) -> List[Dict[str, Any]]:
    """Band entries R, G, B for an optical raster of ``dtype`` (see module docstring)."""
    dtype = str(dtype)
    if clip is None:
        if dtype == "uint8":
            clip = (0.0, 255.0)
        elif dtype == "uint16":
            clip = OPTICAL_UINT16_CLIP
        elif _is_float(dtype):
            clip = (0.0, 1.0)
        else:
            raise InputError(f"optical raster of type {dtype} has no default value range. "
                             "Fix: give the optical value range explicitly")
    lo, hi = float(clip[0]), float(clip[1])
    return [band(name, meaning, [lo, hi], scale=hi - lo, offset=lo) for name, meaning in RGB]


def context_for(method: str, despeckle: Optional[str] = None, lee_size: int = 7,
                levels: int = DEFAULT_LEVELS) -> int:
    """Pixels of context each side a result pixel depends on (method + despeckle window)."""
    return context_radius(method, levels) + (lee_size // 2 if despeckle else 0)


def overlap_for(method: str, despeckle: Optional[str] = None, lee_size: int = 7,
                levels: int = DEFAULT_LEVELS) -> int:
    """Overlap (pixels, multiple of 16) whose blend-free margin (``overlap // 4``, see
    ``tiling.ramp_profile``) covers the context: every weighted pixel is exact."""
    return int(-(-4 * context_for(method, despeckle, lee_size, levels) // 16) * 16)


def tile_size_for(overlap: int, minimum: int = TILE_SIZE) -> int:
    """Tile size (multiple of 256) with a stride of at least 60 % of the tile, so the wide
    overlap of the context-heavy methods costs at most ~2.8x the whole-image work."""
    return max(int(minimum), int(-(-2.5 * overlap // 256) * 256))


def classical_fusion_card(method: str, sar_dtype: str = "uint8", optical_dtype: str = "uint8",
                          despeckle: Optional[str] = None, sar_clip=None, optical_clip=None,
                          lee_size: int = 7, enl: float = S1_GRD_ENL,
                          tile_size: int = TILE_SIZE) -> Dict[str, Any]:
    """Card dict (schema_version 1) describing classical ``method`` for the engine's I/O path."""
    _check(method, despeckle)
    sar_band, sar_units = sar_band_spec(sar_dtype, sar_clip)
    opt_bands = optical_band_specs(optical_dtype, optical_clip)
    overlap = overlap_for(method, despeckle, lee_size)
    tile_size = tile_size_for(overlap, tile_size)
    return {
        "schema_version": SCHEMA_VERSION,
        "name": f"classical-{method}" + (f"-{despeckle}" if despeckle else ""),
        "version": "1.0.0",
        "task": "sar_optical_fusion",
        "description": (f"Non-learned SAR-optical fusion, method '{method}': the luminance (Y of "
                        "YCbCr) of the optical image is fused with the SAR and RGB is recomposed "
                        "with the original Cb, Cr."
                        + (f" SAR despeckled with a {lee_size}x{lee_size} Lee filter (ENL {enl})."
                           if despeckle else "")),
        "inputs": [
            {"name": "optical", "role": "optical", "bands": opt_bands, "resampling": "bilinear"},
            {"name": "sar", "role": "sar", "bands": [sar_band], "resampling": "bilinear"},
        ],
        "outputs": [{"name": "fused", "role": "optical", "bands": optical_band_specs(optical_dtype, optical_clip),
                     "dtype": None, "nodata": None}],
        "tiling": {"tile_size": int(tile_size), "size_multiple": 1, "default_overlap": int(overlap)},
        "training": {"data": "none (classical method, no training)"},
        "license": "GPL-2.0-or-later",
        "extra": {"classical_method": method, "despeckle": despeckle, "sar_units": sar_units,
                  "sar_clip": sar_band["clip"], "lee_size": lee_size, "enl": enl,
                  "pyramid_levels": DEFAULT_LEVELS,
                  "context_px": context_for(method, despeckle, lee_size)},
    }


def _check(method: str, despeckle: Optional[str]) -> None:
    if method not in METHODS:
        raise InputError(f"unknown fusion method '{method}'. Fix: choose one of {', '.join(METHODS)}")
    if despeckle not in DESPECKLE:
        raise InputError(f"unknown despeckling filter '{despeckle}'. Fix: use 'lee' or none")


class ClassicalFusionProcessor:
    """Tile processor for the classical methods (see the module docstring).

    ``sar_units``: "linear" (the SAR network value is filtered as it is) or "db" (the network
    value maps linearly to dB over ``sar_clip``; the Lee filter then works in linear intensity).
    ``origins`` keep the Laplacian pyramid's decimation lattice the whole image's, so results do
    not depend on tiling beyond ``context`` pixels from a tile edge."""

    input_names = ("optical", "sar")
    output_names = ("fused",)

    def __init__(self, method: str, despeckle: Optional[str] = None, sar_units: str = "linear",
                 sar_clip: Sequence[float] = SAR_DB_CLIP, lee_size: int = 7, enl: float = S1_GRD_ENL,
                 levels: int = DEFAULT_LEVELS):
        _check(method, despeckle)
        if sar_units not in ("linear", "db"):
            raise InputError(f"unknown SAR units '{sar_units}'. Fix: use 'linear' or 'db'")
        self.method, self.despeckle, self.sar_units = method, despeckle, sar_units
        self.sar_clip = (float(sar_clip[0]), float(sar_clip[1]))
        self.lee_size, self.enl, self.levels = int(lee_size), float(enl), int(levels)
        self.context = context_radius(method, levels) + (self.lee_size // 2 if despeckle else 0)
        self.grid_shape: Optional[Tuple[int, int]] = None

    def bind_grid(self, height: int, width: int) -> None:
        """The output grid's size: tiles are cut back to it, so that the image border is
        treated as in a whole-image run whatever the engine pads tiles with."""
        self.grid_shape = (int(height), int(width))

    @classmethod
    def from_card(cls, card: Dict[str, Any]) -> "ClassicalFusionProcessor":
        extra = card.get("extra", {})
        return cls(extra["classical_method"], despeckle=extra.get("despeckle"),
                   sar_units=extra.get("sar_units", "linear"), sar_clip=extra.get("sar_clip", SAR_DB_CLIP),
                   lee_size=extra.get("lee_size", 7), enl=extra.get("enl", S1_GRD_ENL),
                   levels=extra.get("pyramid_levels", DEFAULT_LEVELS))

    def despeckle_sar(self, sar: np.ndarray) -> np.ndarray:
        """Despeckle a 2-D SAR tile given in network units; returns network units."""
        if not self.despeckle or self.method == "optical":
            return np.asarray(sar, np.float64)
        if self.sar_units == "db":
            lo, hi = self.sar_clip
            lin = np.power(10.0, (lo + np.asarray(sar, np.float64) * (hi - lo)) / 10.0)
            db = 10.0 * np.log10(np.maximum(lee_filter(lin, self.lee_size, self.enl), 1e-30))
            return (db - lo) / (hi - lo)
        return lee_filter(sar, self.lee_size, self.enl)

    def __call__(self, inputs: Dict[str, np.ndarray], origins: List[Tuple[int, int]]) -> Dict[str, np.ndarray]:
        optical, sar = np.asarray(inputs["optical"]), np.asarray(inputs["sar"])
        if optical.ndim != 4 or optical.shape[1] != 3 or sar.ndim != 4 or sar.shape[1] != 1 \
                or optical.shape[0] != sar.shape[0] or optical.shape[2:] != sar.shape[2:]:
            raise InputError(f"classical fusion needs optical (B, 3, H, W) and sar (B, 1, H, W) tiles, "
                             f"got {optical.shape} and {sar.shape}")
        origins = list(origins) if origins is not None else [(0, 0)] * optical.shape[0]
        out = np.empty(optical.shape, dtype=np.float32)
        size = optical.shape[2:]
        for i in range(optical.shape[0]):
            h, w = size
            if self.grid_shape is not None:  # the part of the tile inside the image
                h = max(1, min(h, self.grid_shape[0] - int(origins[i][0])))
                w = max(1, min(w, self.grid_shape[1] - int(origins[i][1])))
            s = self.despeckle_sar(sar[i, 0, :h, :w])
            fused = fuse_rgb(optical[i, :, :h, :w], s, self.method, levels=self.levels, origin=tuple(origins[i]))
            out[i] = pad_to(fused, *size) if (h, w) != tuple(size) else fused
        return {"fused": out}
