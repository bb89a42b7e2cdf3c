"""Which project layer the dialog preselects for a role: the one that best fits what the
model (or, without a model, the task) expects — band count, data type and value range —
judged with the core band mapper and value-range check the engine itself uses.
QGIS-free (works on ``logic.LayerInfo``) so it is easy to test."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..plugin.core import bands as core_bands

INTEGER_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32")


@dataclass(frozen=True)
class Expectation:
    """What a model input (or the task's default) wants for one role."""
    role: str                                  # "optical" | "sar"
    bands: Tuple[str, ...]                     # model band names in tensor order
    clip: Optional[Tuple[float, float]] = None  # union of the card's clip ranges
    dtypes: Optional[Tuple[str, ...]] = None   # raster dtypes the card accepts (None = any)
    spec: object = None                        # the card's TensorSpec (for the value-range check)


def expectation_from_card(card, role: str) -> Optional[Expectation]:
    specs = card.inputs_with_role(role) if card is not None else []
    if not specs:
        return None
    names = tuple(b.name for spec in specs for b in spec.bands)
    clips = [b.clip for spec in specs for b in spec.bands if b.clip]
    clip = (min(c[0] for c in clips), max(c[1] for c in clips)) if clips else None
    dtypes = specs[0].dtypes
    return Expectation(role, names, clip, tuple(dtypes) if dtypes else None, specs[0])


def dtype_fits(dtype: str, expectation: Expectation) -> Optional[bool]:
    """True/False when the raster type clearly fits / does not fit; None when unknown."""
    if not dtype:
        return None
    if expectation.dtypes:
        return dtype in expectation.dtypes
    if expectation.clip is None:
        return None
    lo, hi = expectation.clip
    if hi <= 255 and lo >= 0:                       # an 8-bit model (e.g. RGB photos, RICE)
        return dtype == "uint8"
    if lo < 0 and hi <= 0:                          # dB backscatter
        return dtype.startswith("float")
    if hi >= 1000:                                  # reflectance DN (Sentinel-2 × 10000)
        return dtype in ("uint16", "int16", "uint32", "int32") or dtype.startswith("float")
    return None


def score(info, expectation: Expectation, range_check=None) -> float:
    """Higher = a better fit. Band count (or a complete mapping by band descriptions) counts
    most, then the data type, then the sampled value range (``range_check``, optional)."""
    wanted = list(expectation.bands)
    total = 0.0
    if wanted:
        mapping = core_bands.map_bands(wanted, info.descriptions, info.band_count)
        if info.band_count == len(wanted) and mapping.rule in ("position", "descriptions"):
            total += 6
        elif mapping.complete and mapping.rule == "descriptions":
            total += 3                              # usable, but not the product the model is for
        elif mapping.complete:
            total += 1                              # e.g. a grey image into an RGB model
        else:
            total -= 6
    fits = dtype_fits(info.dtype, expectation)
    if fits is True:
        total += 3
    elif fits is False:
        total -= 4
    if range_check is not None:
        total += -4 if range_check.mismatch else 2
    names = {d.upper() for d in info.descriptions if d}
    lowered = info.name.lower() + " " + os.path.basename(info.path).lower()
    if expectation.role == "sar":
        if {"VV", "VH", "HH", "HV"} & names or any(w in lowered for w in ("sar", "s1", "sentinel-1", "sigma")):
            total += 1
    elif any(w in lowered for w in ("optical", "s2", "rgb", "cloudy", "sentinel-2")):
        total += 0.5
    return total


def rank(infos: Dict[str, object], expectation: Expectation, exclude: Sequence[str] = (),
         last_path: str = "", range_checks: Optional[Dict[str, object]] = None) -> List[Tuple[float, str]]:
    """[(score, layer id)] best first; ``exclude`` ids (the other role's layer) lose a lot,
    the layer used last time wins a tie."""
    out = []
    for layer_id, info in infos.items():
        value = score(info, expectation, (range_checks or {}).get(layer_id))
        if layer_id in exclude:
            value -= 20
        if last_path and os.path.abspath(info.path) == os.path.abspath(last_path):
            value += 0.25
        out.append((value, layer_id))
    out.sort(key=lambda item: -item[0])
    return out
