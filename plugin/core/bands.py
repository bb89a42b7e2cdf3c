"""Which raster bands feed a model input, and whether their values fit the model.

One place for both decisions, used by the engine (hence Processing and scripts) and by the
dialog, so a raster is never mapped or judged differently depending on where it is run.

Band mapping precedence: an explicit band list, then band descriptions (with known aliases:
Sentinel-2 B2/B3/B4 = blue/green/red, B8 = nir, STAC common names, Sentinel-1 VV/VH), then a
grey (1-band) raster into an RGB input as R = G = B, then file order when the counts match
and no description names a wanted band at another position.

Value range: a few windows of each input are sampled; when most values fall outside the
card's clip range the model would see a flat image, so the run warns or refuses with the
fix, and a scaling (``value_scale``) can be folded into the card's band transforms so the
outputs come back in the input's units.
"""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import InputError
from .model_card import ModelCard, TensorSpec

log = logging.getLogger("skyclear.bands")

# ---------------------------------------------------------------------------------------
# band mapping

_ALIAS_GROUPS = (
    ("R", "RED", "B4", "B04"),
    ("G", "GREEN", "B3", "B03"),
    ("B", "BLUE", "B2", "B02"),
    ("NIR", "N", "B8", "B08", "NIR08_BROAD"),
    ("COASTAL", "B1", "B01"),
    ("REDEDGE1", "B5", "B05"),
    ("REDEDGE2", "B6", "B06"),
    ("REDEDGE3", "B7", "B07"),
    ("NIR08", "B8A", "B08A", "NIR_NARROW"),
    ("NIR09", "B9", "B09", "WATERVAPOUR", "WATER_VAPOUR"),
    ("CIRRUS", "B10"),
    ("SWIR16", "B11", "SWIR1"),
    ("SWIR22", "B12", "SWIR2"),
    ("VV", "SIGMA0_VV", "VV_DB", "SIGMA0_VV_DB"),
    ("VH", "SIGMA0_VH", "VH_DB", "SIGMA0_VH_DB"),
)
BAND_ALIASES: Dict[str, Tuple[str, ...]] = {}
for _group in _ALIAS_GROUPS:
    for _name in _group:
        BAND_ALIASES[_name] = tuple(n for n in _group if n != _name)
# a generic one-band SAR input takes the co-polarised channel
BAND_ALIASES["SAR"] = ("VV", "HH", "SIGMA0_VV", "SIGMA0_HH", "VV_DB")
_GENERIC = re.compile(r"^B\d+A?$")   # "B2": Sentinel-2 blue, or just "band 2"
_RGB = ({"R", "RED", "B4", "B04"}, {"G", "GREEN", "B3", "B03"}, {"B", "BLUE", "B2", "B02"})
RULES = ("explicit", "descriptions", "grey", "position", "unresolved")
_RULE_TEXT = {"explicit": "as chosen", "descriptions": "by band descriptions",
              "grey": "grey image: one band for R, G and B", "position": "by band order",
              "unresolved": "incomplete"}


def _names_of(description: Optional[str]) -> Tuple[str, ...]:
    """The names a band description can stand for: itself and, for GDAL-style descriptions
    such as "B4, central wavelength 665 nm", its first token."""
    text = (description or "").strip().upper()
    if not text:
        return ()
    first = re.split(r"[\s,;:()]+", text)[0]
    return (text,) if first == text or not first else (text, first)


def _aliases(name: str) -> Tuple[str, ...]:
    upper = name.strip().upper()
    return (upper,) + BAND_ALIASES.get(upper, ())


def same_band(model_name: str, description: Optional[str]) -> bool:
    """True when a raster band description names the model band (case-insensitive, aliases)."""
    return bool(set(_aliases(model_name)) & set(_names_of(description)))


def is_rgb(wanted: Sequence[str]) -> bool:
    """True when ``wanted`` are red, green and blue (any alias, any order)."""
    if len(wanted) != 3:
        return False
    groups = []
    for name in wanted:
        hits = [i for i, group in enumerate(_RGB) if name.strip().upper() in group]
        if not hits:
            return False
        groups.append(hits[0])
    return sorted(groups) == [0, 1, 2]


@dataclass(frozen=True)
class BandMapping:
    """1-based raster band for each wanted model band (None = unresolved) and the rule used."""

    bands: List[Optional[int]]
    rule: str
    wanted: List[str]
    band_count: int

    @property
    def complete(self) -> bool:
        return all(b is not None for b in self.bands) and len(self.bands) == len(self.wanted)

    @property
    def missing(self) -> List[str]:
        return [w for w, b in zip(self.wanted, self.bands) if b is None]

    def text(self) -> str:
        pairs = ", ".join(f"{w}←{b if b is not None else '?'}" for w, b in zip(self.wanted, self.bands))
        return f"{pairs} ({_RULE_TEXT[self.rule]})"


def map_bands(wanted: Sequence[str], descriptions: Sequence[Optional[str]], band_count: int,
              explicit: Optional[Sequence[int]] = None) -> BandMapping:
    """Map the model bands ``wanted`` onto a raster with ``band_count`` bands described by
    ``descriptions`` (see the module docstring for the precedence). Never raises: check the
    result with ``mapping_problem``."""
    wanted = list(wanted)
    if explicit:
        chosen = [int(b) if b else None for b in explicit]
        if len(chosen) == 1 and chosen[0] and is_rgb(wanted):  # one band for R, G, B: grey
            return BandMapping(chosen * 3, "grey", wanted, band_count)
        return BandMapping(chosen, "explicit", wanted, band_count)
    found: List[Optional[int]] = []
    for name in wanted:
        match = None
        for i, description in enumerate(list(descriptions)[:band_count], start=1):
            if same_band(name, description):
                match = i
                break
        found.append(match)
    if wanted and all(b is not None for b in found):
        return BandMapping(found, "descriptions", wanted, band_count)
    if band_count == 1 and is_rgb(wanted):
        return BandMapping([1, 1, 1], "grey", wanted, band_count)
    # a description naming a wanted band at another position vetoes the positional guess;
    # for bare names like "B2" only the name itself counts (it may mean "band 2", not
    # Sentinel-2 blue), for names like "R" or "NIR" their aliases count too
    veto = [b if not _GENERIC.match(name.strip().upper()) else
            next((i for i, d in enumerate(list(descriptions)[:band_count], start=1)
                  if name.strip().upper() in _names_of(d)), None)
            for name, b in zip(wanted, found)]
    contradicted = any(b is not None and b != i for i, b in enumerate(veto, start=1))
    if band_count == len(wanted) and not contradicted:
        return BandMapping(list(range(1, band_count + 1)), "position", wanted, band_count)
    return BandMapping(found, "unresolved", wanted, band_count)


def _list_hint(wanted: Sequence[str], band_count: int) -> str:
    """A band list to suggest when descriptions are missing, for the usual Sentinel-2 files."""
    s2 = {13: ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"],
          12: ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12"]}.get(band_count)
    if s2:
        mapped = map_bands(wanted, s2, band_count)
        if mapped.rule == "descriptions":
            return (f" If it is a Sentinel-2 {'L1C' if band_count == 13 else 'L2A'} stack in the usual "
                    f"order, use the band list {','.join(map(str, mapped.bands))}.")
    return ""


def mapping_problem(label: str, mapping: BandMapping, model_name: str = "", filename: str = "") -> Optional[str]:
    """None when ``mapping`` can be used, else a message naming the problem and the fix."""
    wanted, count = mapping.wanted, mapping.band_count
    who = f"model '{model_name}'" if model_name else "the model"
    what = f"{label}: {filename}" if filename else label
    if mapping.rule in ("explicit", "grey"):
        if len(mapping.bands) != len(wanted):
            return (f"{what}: {len(mapping.bands)} band(s) chosen ({','.join(map(str, mapping.bands))}) but {who} "
                    f"expects {len(wanted)} ({','.join(wanted)})")
        if mapping.missing:
            return (f"{what}: no raster band chosen for {', '.join(mapping.missing)} (the raster has {count} "
                    f"band(s), {who} expects {len(wanted)}: {', '.join(wanted)})")
        bad = [b for b in mapping.bands if not 1 <= b <= count]
        if bad:
            return f"{what}: band(s) {bad} do not exist (the raster has {count})"
        return None
    if mapping.complete:
        return None
    if count < len(wanted):   # no band list can help: say what is missing
        l2a = (" A 12-band Sentinel-2 file is usually Level-2A, which has no B10 (cirrus): this model needs "
               "Level-1C (top-of-atmosphere) data with all 13 bands." if count == 12 and "B10" in wanted else "")
        return (f"{what} has {count} band(s) but {who} expects {len(wanted)} ({','.join(wanted)}); its band "
                f"descriptions do not name {', '.join(mapping.missing)}.{l2a}")
    return (f"{what} has {count} band(s) but {who} expects {len(wanted)} ({','.join(wanted)}), and its "
            f"band descriptions do not name {', '.join(mapping.missing)}. Choose {len(wanted)} bands "
            f"explicitly (a band list like {','.join(str(i) for i in range(1, len(wanted) + 1))})."
            + _list_hint(wanted, count))


def resolve_file_bands(path: str, wanted: Sequence[str], label: str,
                       explicit: Optional[Sequence[int]] = None, model_name: str = "") -> List[int]:
    """The 1-based bands of ``path`` that feed ``wanted``; InputError naming the file if none fit."""
    from .raster_io import describe_raster

    info = describe_raster(path)
    mapping = map_bands(wanted, info["descriptions"], info["count"], explicit)
    problem = mapping_problem(label, mapping, model_name, os.path.basename(path))
    if problem:
        raise InputError(problem)
    if mapping.rule in ("grey", "position"):
        log.info("%s: %s bands %s", label, os.path.basename(path), mapping.text())
    return [int(b) for b in mapping.bands]


# ---------------------------------------------------------------------------------------
# value range

MISMATCH_FRACTION = 0.5    # warn when more values than this fall outside the clip range
FLAT_FRACTION = 0.95       # refuse (without a value_scale) when this many do: a flat output
SAMPLE_PERCENTILES = (1.0, 99.0)
UNIT_RANGE = (-0.2, 1.5)   # reflectance as a fraction: L2A offsets reach -0.1, bright cloud exceeds 1
UNIT_SHARE = 0.95          # ... when this share of the sampled values lies there (fill values aside)
S2_QUANTIFICATION = 10000.0   # Sentinel-2 DN per unit of reflectance


@dataclass(frozen=True)
class ValueScale:
    """Raster value ``v`` is fed to the model as ``gain * v + bias``."""

    gain: float
    bias: float = 0.0

    def __post_init__(self):
        if not (math.isfinite(self.gain) and math.isfinite(self.bias)) or self.gain <= 0:
            raise InputError(f"value scaling needs a positive finite gain, got gain {self.gain}, bias {self.bias}")

    @property
    def identity(self) -> bool:
        return self.gain == 1.0 and self.bias == 0.0

    def text(self) -> str:
        out = f"×{self.gain:.6g}"
        if self.bias:
            out += f" {'+' if self.bias > 0 else '-'} {abs(self.bias):.6g}"
        return out

    def parameter(self) -> str:
        """The SCALE parameter text that gives this scaling."""
        return f"{self.gain:.6g}" + (f",{self.bias:.6g}" if self.bias else "")


@dataclass(frozen=True)
class RangeCheck:
    """How the sampled values of one input sit against the card's clip range."""

    label: str
    clip: Tuple[float, float]
    fraction_outside: float
    fraction_above: float
    fraction_below: float
    sample_low: float
    sample_high: float
    samples: int
    suggested: Optional[ValueScale]
    role: str = "optical"
    # "range": judged by the share outside the clip range; "unit": fractional optical values in 0–1
    # for a model made for DN or 8-bit values (inside its range, but a sliver of it); "linear_sar":
    # fractional SAR values mostly above a dB range's top (linear backscatter: no SCALE can fix it)
    kind: str = "range"

    @property
    def mismatch(self) -> bool:
        return self.samples > 0 and (self.kind != "range" or self.fraction_outside > MISMATCH_FRACTION)

    @property
    def flat(self) -> bool:
        """Nearly every value is clipped: the output would be flat."""
        return self.samples > 0 and self.kind == "range" and self.fraction_outside >= FLAT_FRACTION

    @property
    def refused(self) -> bool:
        """A run would be meaningless as the values are: refuse it unless the user scales them."""
        return self.flat or (self.samples > 0 and self.kind != "range")

    def problem(self) -> str:
        """What is wrong with the values, without the fix (the dialog and headless runs word that differently)."""
        values = f"the sampled values run {self.sample_low:g}–{self.sample_high:g}"
        if self.kind == "unit":
            return (f"{values}, a sliver of the model's range ({self.clip[0]:g}–{self.clip[1]:g}): they look "
                    "scaled to 0–1 (e.g. reflectance as a fraction), and the result would be meaningless")
        if self.kind == "linear_sar":
            return (f"{values}, mostly above the model's range in dB ({self.clip[0]:g}–{self.clip[1]:g}): this "
                    "looks like linear backscatter. " + DB_CONVERSION)
        side = ("above" if self.fraction_above >= self.fraction_below else "below")
        return (f"{100 * self.fraction_outside:.0f} % of the sampled values lie outside the model's range "
                f"({self.clip[0]:g}–{self.clip[1]:g}; mostly {side}; {values}), so they are clipped"
                + (" and the result would be flat" if self.flat else ""))

    def message(self, model_name: str) -> str:
        text = f"{self.label} (model '{model_name}'): {self.problem()}."
        if self.kind == "unit":
            gain = self.suggested.parameter()
            return text + f" Fix: SCALE=auto (here ×{gain}) or SCALE={gain}; SCALE=none runs them as they are."
        if self.kind == "linear_sar":
            return text + " SCALE cannot do that."
        if self.role == "sar" and self.clip[1] <= 0 and self.kind == "range":
            text += " If these are linear backscatter values, convert them to dB instead."
        if self.suggested is not None:
            same = (f"; SCALE={self.suggested.parameter()} gives the same" if self.role == "optical" else "")
            text += (f" Fix: scale the values to the model's range (SCALE=auto, here {self.suggested.text()}"
                     f"{same}), or use a model made for this product.")
        return text


DB_CONVERSION = ("Convert it to dB first: 10·log10(v) for power or intensity (σ⁰, γ⁰), 20·log10(v) for amplitude, "
                 "with 0 set as nodata (QGIS Raster calculator or gdal_calc.py)")


def _sample_windows(height: int, width: int, windows: int, size: int):
    from rasterio.windows import Window

    h, w = min(size, height), min(size, width)
    rows = sorted({int(round(r)) for r in np.linspace(0, height - h, windows)})
    cols = sorted({int(round(c)) for c in np.linspace(0, width - w, windows)})
    return [Window(c, r, w, h) for r in rows for c in cols]


def sample_source(source, windows: int = 3, size: int = 256) -> np.ndarray:
    """(C, N) float64 valid, finite values of an open ``RasterSource`` from ``windows`` x
    ``windows`` evenly spread blocks of at most ``size``² pixels of its grid."""
    parts = []
    for window in _sample_windows(source.grid.height, source.grid.width, windows, size):
        data, valid = source.read(window)
        values = data[:, valid].astype(np.float64)
        parts.append(values[:, np.isfinite(values).all(axis=0)])
    return np.concatenate(parts, axis=1) if parts else np.zeros((source.count, 0))


def sample_values(path: str, bands: Sequence[int], extent=None, windows: int = 3, size: int = 256) -> np.ndarray:
    """(C, N) valid values of ``bands`` of ``path`` (within ``extent`` in its CRS when given)."""
    from .raster_io import RasterSource, subgrid

    with RasterSource(path, bands, "raster") as whole:
        grid = subgrid(whole.grid, extent) if extent is not None else None
    with RasterSource(path, bands, "raster", grid=grid) as source:
        return sample_source(source, windows, size)


def _clip_arrays(spec: TensorSpec, count: int):
    lo = np.array([b.clip[0] if b.clip else -np.inf for b in spec.bands[:count]])[:, None]
    hi = np.array([b.clip[1] if b.clip else np.inf for b in spec.bands[:count]])[:, None]
    return lo, hi


def suggest_scale(low: float, high: float, clip: Tuple[float, float]) -> Optional[ValueScale]:
    """The linear scaling that puts the sampled range [low, high] onto ``clip``: a pure gain
    (zero stays zero, so band ratios and colours are kept) when the values and the clip range
    start at 0 or above, else the affine map of [low, high] onto the clip range."""
    lo, hi = clip
    if not (math.isfinite(lo) and math.isfinite(hi)) or high <= low:
        return None
    if low >= 0 and lo >= 0 and high > 0:
        return ValueScale(hi / high)
    gain = (hi - lo) / (high - low)
    return ValueScale(gain, lo - gain * low)


def range_check(values: np.ndarray, spec: TensorSpec, label: str, units: bool = True) -> Optional[RangeCheck]:
    """Judge sampled ``values`` (C, N) against ``spec``'s clip ranges; None without clips or values.
    ``units``: also look for values in the wrong unit (0–1 optical, linear SAR); off once the user
    scaled the input."""
    clipped = [b.clip for b in spec.bands if b.clip]
    if not clipped or values.size == 0:
        return None
    lo, hi = _clip_arrays(spec, values.shape[0])
    above, below = values > hi, values < lo
    n = values.size
    low, high = (float(v) for v in np.percentile(values, SAMPLE_PERCENTILES))
    clip = (min(c[0] for c in clipped), max(c[1] for c in clipped))
    check = RangeCheck(label, clip, float((above | below).sum()) / n, float(above.sum()) / n,
                       float(below.sum()) / n, low, high, values.shape[1], None, spec.role)
    fractional = units and bool(np.any(values != np.round(values)))   # integer files are DN, not units
    if fractional and spec.role == "optical" and clip[1] >= 100 and np.mean(
            (values >= UNIT_RANGE[0]) & (values <= UNIT_RANGE[1])) >= UNIT_SHARE:
        # 1.0 is 255 for an 8-bit model, 10 000 DN for a Sentinel-2 one whatever its clip
        return replace(check, kind="unit", suggested=ValueScale(clip[1] if clip[1] <= 255 else S2_QUANTIFICATION))
    if fractional and spec.role == "sar" and clip[1] <= 0 and check.fraction_above > MISMATCH_FRACTION:
        return replace(check, kind="linear_sar")
    if check.mismatch:
        check = replace(check, suggested=suggest_scale(low, high, clip))
    return check


def check_value_range(path: str, bands: Sequence[int], spec: TensorSpec, label: str,
                      extent=None) -> Optional[RangeCheck]:
    """Sample ``path`` (cheap: a few windows) and judge it against ``spec``; for the dialog."""
    return range_check(sample_values(path, bands, extent), spec, label)


def dtype_range_problem(label: str, model_name: str, clip_high: Optional[float], dtype: str) -> Optional[str]:
    """An instant warning (no reading) when the raster type clearly does not fit the card:
    an 8-bit model on 16-bit Sentinel-2 DN, or the other way round."""
    if not dtype or clip_high is None:
        return None
    if clip_high <= 255 and dtype in ("uint16", "int16", "uint32", "int32"):
        return (f"Model '{model_name}' expects 8-bit {label} values (0–{clip_high:g}) but the raster is {dtype}: "
                "values above are clipped. Use an 8-bit image, scale the values (SCALE=auto), or a model "
                "made for this product.")
    if clip_high >= 1000 and dtype == "uint8":
        return (f"Model '{model_name}' expects {label} values up to {clip_high:g} (e.g. Sentinel-2 DN) but the "
                "raster is 8-bit: the result will be very dark. Use a model made for 8-bit images.")
    return None


def parse_band_list(value) -> Optional[List[int]]:
    """"4,3,2" (or a sequence) -> [4, 3, 2]; empty -> None (automatic). ValueError saying what is wrong."""
    if value is None:
        return None
    parts = [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value).replace(";", ",").split(",")
    try:
        numbers = [float(part) for part in parts if part.strip()]
    except ValueError:
        numbers = [math.nan]
    if not all(math.isfinite(n) and n == int(n) for n in numbers):
        raise ValueError(f"expected a comma-separated band list like 4,3,2, got {value!r}")
    bands = [int(n) for n in numbers]
    if any(b < 1 for b in bands):
        raise ValueError(f"band numbers start at 1, got {value!r}")
    return bands or None


ScaleArg = Union[None, str, float, int, ValueScale]


def parse_scale(value: ScaleArg) -> Union[None, str, ValueScale]:
    """None/"" -> None (check only); "auto" -> "auto"; a number or "gain,bias" -> ValueScale;
    "none"/"1" -> ValueScale(1) (as they are: no refusal)."""
    if value is None or isinstance(value, ValueScale):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return ValueScale(float(value))
    text = str(value).strip().lower()
    if not text:
        return None
    if text == "auto":
        return "auto"
    if text in ("none", "off", "as is"):
        return ValueScale(1.0)
    try:
        parts = [float(p) for p in text.replace(";", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise InputError(f"SCALE: expected empty (check only), 'auto', a factor like 0.0255 or 'gain,bias' "
                         f"like 0.1,12, got {value!r}")
    return ValueScale(*parts)


def _scaled_bands(bands, scale: ValueScale):
    """Band specs that take raw values v and behave as the original ones on gain * v + bias."""
    a, b = scale.gain, scale.bias
    return [replace(band, clip=[(band.clip[0] - b) / a, (band.clip[1] - b) / a] if band.clip else None,
                    scale=band.scale / a, offset=(band.offset - b) / a) for band in bands]


def _raw_band(band) -> Dict:
    out = {"name": band.name, "scale": band.scale, "offset": band.offset}
    if band.meaning:
        out["meaning"] = band.meaning
    if band.clip:
        out["clip"] = list(band.clip)
    return out


def scaled_card(card: ModelCard, input_name: str, scale: ValueScale) -> ModelCard:
    """``card`` with ``scale`` folded into input ``input_name``'s band transforms; optical
    outputs with as many bands as that input then return values in the input's units and
    dtype (the inverse scaling), so the result lands where the user's data lives."""
    from .model_card import parse_card

    raw = card.to_dict()
    spec = card.input(input_name)
    for i, entry in enumerate(card.inputs):
        if entry.name == input_name:
            raw["inputs"][i]["bands"] = [_raw_band(b) for b in _scaled_bands(entry.bands, scale)]
    if spec.role == "optical":
        for i, out in enumerate(card.outputs):
            if out.role == "optical" and len(out.bands) == len(spec.bands):
                raw["outputs"][i]["bands"] = [_raw_band(b) for b in _scaled_bands(out.bands, scale)]
                raw["outputs"][i]["dtype"] = None
    return parse_card(raw)


def apply_value_range(card: ModelCard, sources: Dict, value_scale: ScaleArg = None,
                      labels: Optional[Dict[str, str]] = None,
                      warn: Optional[Callable[[str], None]] = None) -> Tuple[ModelCard, Dict[str, str]]:
    """The value-range check of every run: sample each input, warn, refuse or scale.

    ``value_scale`` None: warn (log + ``warn``) when most values are outside the clip range,
    raise InputError with the fix when nearly all are (the output would be flat) or when optical
    values are 0–1 for a DN/8-bit model. "auto": scale every mismatched input by its suggested
    scaling (linear SAR has none: still refused). A ``ValueScale`` (or a number): scale the optical
    inputs by it; the identity (SCALE=none) runs every input as it is, refusing nothing. Returns
    the card to run and provenance tags.
    """
    scale = parse_scale(value_scale)
    labels = labels or {}
    tags: Dict[str, str] = {}
    applied: Dict[str, str] = {}

    def say(text: str) -> None:
        log.warning(text)
        if warn is not None:
            warn(text)

    def scale_input(name: str, label: str, chosen: ValueScale) -> None:
        nonlocal card
        card = scaled_card(card, name, chosen)
        applied[name] = chosen.parameter()
        text = f"{label}: values scaled {chosen.text()} to fit model '{card.name}'"
        if card.input(name).role == "optical":
            text += " (outputs are scaled back to the input's units)"
        log.warning(text)
        if warn is not None:
            warn(text)

    for spec in list(card.inputs):
        source = sources.get(spec.name)
        if source is None:
            continue
        label = labels.get(spec.name, spec.role.upper())
        if isinstance(scale, ValueScale) and spec.role == "optical" and not scale.identity:
            scale_input(spec.name, label, scale)
            spec = card.input(spec.name)
        check = range_check(sample_source(source), spec, label, units=spec.name not in applied)
        if check is None or not check.mismatch:
            if scale is None and source.dtype == "uint8":
                # 8-bit values lie inside a 0–10000 range, so the sample alone does not catch them
                highs = [b.clip[1] for b in spec.bands if b.clip]
                problem = dtype_range_problem(label, card.name, max(highs) if highs else None, source.dtype)
                if problem:
                    say(problem)
            continue
        if scale == "auto" and check.suggested is not None:
            scale_input(spec.name, label, check.suggested)
        elif check.refused and not (isinstance(scale, ValueScale) and (scale.identity or spec.name in applied)):
            # refused unless the user scaled this input or asked for it as it is (SCALE=none)
            raise InputError(check.message(card.name))
        else:
            say(check.message(card.name))
    if applied:
        import json

        tags["SKYCLEAR_INPUT_SCALE"] = json.dumps(applied)
    return card, tags
