"""Evaluate results against rasters: restoration quality and fusion quality, as CSV rows.

Rasters are read whole (evaluation is meant for patches and scenes that fit in memory).
The second raster is aligned onto the first one's grid through the same ``RasterSource``
the engine uses, so a SAR image on another grid can be compared with a fused image.
"""
from __future__ import annotations

import csv
import os
from typing import Dict, List, Optional

import numpy as np
from rasterio.windows import Window

from . import atomic
from .errors import InputError, OutputError
from .metrics.fusion import fusion_metrics
from .metrics.restoration import restoration_metrics
from .raster_io import RasterSource, describe_raster, subgrid

REFLECTANCE_DN = 10000.0


MIN_SIZE = 11  # the SSIM window


def _read_on_grid(path: str, label: str, grid=None, bands=None):
    count = describe_raster(path)["count"]
    with RasterSource(path, bands or range(1, count + 1), label, grid=grid) as source:
        if min(source.grid.width, source.grid.height) < MIN_SIZE:
            raise InputError(f"{label}: {os.path.basename(path)} is {source.grid.width}x{source.grid.height} "
                             f"pixels; evaluation needs at least {MIN_SIZE}x{MIN_SIZE} (the SSIM window)")
        data, valid = source.read(Window(0, 0, source.grid.width, source.grid.height))
        return data, valid, source.grid, source.dtype


def _extent_grid(path: str, label: str, extent):
    """The part of ``path``'s grid inside ``extent`` (in its CRS), or None for all of it."""
    if extent is None:
        return None
    with RasterSource(path, [1], label) as whole:
        return subgrid(whole.grid, extent)


def default_data_range(dtype: str) -> float:
    """255 for 8-bit, 10000 for 16-bit reflectance DN (so PSNR is on reflectance), else 1."""
    return {"uint8": 255.0, "uint16": REFLECTANCE_DN}.get(dtype, 1.0)


def evaluate_restoration(prediction: str, reference: str, mask: Optional[str] = None,
                         data_range: Optional[float] = None, extent=None) -> List[Dict[str, object]]:
    """PSNR, SSIM, SAM (overall only), MAE per band and overall; ``mask`` > 0 selects pixels;
    ``extent`` (xmin, ymin, xmax, ymax in the prediction's CRS) limits the area."""
    pred, pred_valid, grid, dtype = _read_on_grid(prediction, "PREDICTION",
                                                  _extent_grid(prediction, "PREDICTION", extent))
    ref, ref_valid, _, _ = _read_on_grid(reference, "REFERENCE", grid)
    if pred.shape != ref.shape:
        raise InputError(f"PREDICTION has {pred.shape[0]} band(s) but REFERENCE has {ref.shape[0]}")
    select = pred_valid & ref_valid
    if mask:
        mask_data, _, _, _ = _read_on_grid(mask, "MASK", grid, bands=[1])
        select &= mask_data[0] > 0
    if not select.any():
        raise InputError("no pixel is valid in both rasters" + (" inside the mask" if mask else ""))
    data_range = data_range or default_data_range(dtype)
    names = describe_raster(prediction)["descriptions"]
    rows = []
    for i in range(pred.shape[0]):
        values = restoration_metrics(pred[i:i + 1], ref[i:i + 1], data_range, select)
        rows.append({"band": names[i] or f"band {i + 1}", **values})
    rows.append({"band": "all", **restoration_metrics(pred, ref, data_range, select)})
    return rows


def to_8bit(data: np.ndarray, valid: np.ndarray, dtype: str) -> np.ndarray:
    """8-bit data stay as they are; anything else is stretched between its 2nd and 98th
    percentile (per band, over valid pixels) to 0-255, the usual display convention."""
    if dtype == "uint8":
        return data
    out = np.empty_like(data)
    for i, band in enumerate(data):
        lo, hi = np.percentile(band[valid], [2, 98]) if valid.any() else (0.0, 1.0)
        out[i] = np.clip((band - lo) / max(hi - lo, 1e-12) * 255.0, 0, 255)
    return out


def evaluate_fusion(fused: str, sar: str, optical: str, extent=None) -> Dict[str, float]:
    """The fusion metrics of ``metrics.fusion`` with A = SAR, B = optical, on the fused grid.

    Grey and RGB mix freely (e.g. an RGB fusion of a grey optical image fed as R = G = B):
    the metrics compare luminance (BT.601) anyway."""
    f, f_valid, grid, f_dtype = _read_on_grid(fused, "FUSED", _extent_grid(fused, "FUSED", extent))
    a, a_valid, _, a_dtype = _read_on_grid(sar, "SAR", grid, bands=[1])
    b, b_valid, _, b_dtype = _read_on_grid(optical, "OPTICAL", grid)
    if f.shape[0] not in (1, 3):
        raise InputError(f"FUSED: {os.path.basename(fused)} must have 1 or 3 bands (grey or RGB), "
                         f"it has {f.shape[0]}")
    if b.shape[0] not in (1, 3):
        raise InputError(f"OPTICAL must have 1 or 3 bands (grey or RGB), it has {b.shape[0]}")
    valid = f_valid & a_valid & b_valid
    return fusion_metrics(to_8bit(f, valid, f_dtype), to_8bit(a, valid, a_dtype), to_8bit(b, valid, b_dtype))


def write_csv(rows: List[Dict[str, object]], path: str) -> str:
    """Write rows atomically (temporary file, then rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"output folder does not exist: {folder}")
    if os.path.isdir(path):
        raise InputError(f"output {path} is a folder; give a CSV file name")
    atomic.sweep_stale(folder)
    tmp = atomic.temp_path(path)
    atomic.register(tmp)
    try:
        with open(tmp, "w", newline="") as f:
            fields = list(dict.fromkeys(key for row in rows for key in row))
            writer = csv.DictWriter(f, fieldnames=fields, restval="")
            writer.writeheader()
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        atomic.commit([(tmp, path)])
    except OSError as exc:
        atomic.remove(tmp)
        raise OutputError(f"writing {path} failed ({exc.strerror or exc}); nothing was written") from exc
    except BaseException:
        atomic.remove(tmp)
        raise
    return path
