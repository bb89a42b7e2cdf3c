"""What the dialog shows, without any widget: model cards, plausible layers, band mapping,
tile counts and estimates. QGIS-free so it is easy to test. The tools themselves (titles,
inputs, options, which models fit) are the registry's: ``plugin/core/tools.py``."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..plugin.core import bands as core_bands
from ..plugin.core import tools
from ..plugin.core.words import format_seconds, format_tile_time, plural

S2_BANDS, S1_BANDS, RGB_BANDS = tools.S2_BANDS, tools.S1_BANDS, tools.RGB_BANDS
# model band name -> raster band descriptions that mean the same: the core's one table
BAND_ALIASES = core_bands.BAND_ALIASES
CARD_TASK_LABELS = tools.CARD_TASK_LABELS
TASKS = tools.TOOLS                       # the dialog offers the registry's tools, in its order
TASKS_BY_KEY = tools.TOOLS_BY_KEY


def slot_keyword(step: bool) -> str:
    return "step_model" if step else "model"


def task_title_for_card_task(card_task: str) -> str:
    return tools.title_for_card_task(card_task)


def check_card_for_task(card, task_key: str, step: bool = False) -> Optional[str]:
    """None when ``card`` fits the task (main or diffusion-step picker), else a clear refusal."""
    return tools.card_problem(tools.tool(task_key), card, slot_keyword(step))


# folder names of ../shared/data and the data sets they hold, for model cards
DATASET_NAMES = {"rice1": "RICE1", "rice2": "RICE2", "sen12mscr": "SEN12MS-CR", "sen12mscrts": "SEN12MS-CR-TS",
                 "sen12ms_cr": "SEN12MS-CR", "sen12ms_cr_ts": "SEN12MS-CR-TS", "sar_optical": "CFOG",
                 "cfog": "CFOG", "ssl4eo": "SSL4EO-S12", "majortom": "Major-TOM", "major_tom": "Major-TOM",
                 "thin_cloud": "thin-cloud samples"}


def dataset_names(data) -> str:
    """A card's training data as data set names: development paths such as
    "../shared/data/rice1,../shared/data/rice2" become "RICE1, RICE2"."""
    items = data if isinstance(data, (list, tuple)) else str(data).split(",")
    names = []
    for item in items:
        item = str(item).strip().rstrip("/\\")
        if not item:
            continue
        base = item.replace("\\", "/").split("/")[-1]
        name = DATASET_NAMES.get(base.lower(), base if ("/" in item or "\\" in item) else item)
        if name not in names:
            names.append(name)
    return ", ".join(names)


# ---------------------------------------------------------------------------------------
# model zoo


def zoo_models(zoo_dir: Optional[str] = None) -> List[str]:
    if zoo_dir is None:
        from ..plugin.core.zoo import ZOO_DIR

        zoo_dir = ZOO_DIR
    return sorted(glob.glob(os.path.join(zoo_dir, "*.onnx")))


_CARD_CACHE: Dict[Tuple[str, float], object] = {}


def load_card(path: str):
    """(card, None) or (None, error message); cached by path and mtime."""
    from ..plugin.core.errors import SkyClearError
    from ..plugin.core.model_card import read_card

    try:
        key = (os.path.abspath(path), os.path.getmtime(path))
    except OSError:
        return None, f"model file not found: {path}"
    if key in _CARD_CACHE:
        return _CARD_CACHE[key], None
    try:
        card = read_card(path)
    except SkyClearError as exc:
        return None, str(exc)
    except Exception as exc:  # a broken file must not break the dialog
        return None, f"{os.path.basename(path)}: {exc}"
    _CARD_CACHE[key] = card
    return card, None


def zoo_for_task(task_key: str, step: bool = False, zoo_dir: Optional[str] = None,
                 slot: Optional[str] = None) -> List[Tuple[str, object]]:
    """Bundled models whose card fits the tool's model slot: [(path, card)], the default
    (card ``extra.default_for_task``) first, then by file name."""
    spec, slot = tools.tool(task_key), slot or slot_keyword(step)
    if spec.slot(slot) is None:
        return []
    out = []
    for path in zoo_models(zoo_dir):
        card, _ = load_card(path)
        if card is not None and tools.card_problem(spec, card, slot) is None:
            out.append((path, card))
    out.sort(key=lambda item: not item[1].extra.get("default_for_task", False))
    return out


def card_summary_html(card, path: str = "") -> str:
    """Task, bands, training data, metrics and license, as compact HTML."""
    def esc(text) -> str:
        return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))

    rows = [f"<b>{esc(card.name)}</b> v{esc(card.version)} — {esc(CARD_TASK_LABELS.get(card.task, card.task))}"]
    if card.description:
        rows.append(f"<i>{esc(card.description)}</i>")
    for spec in card.inputs:
        rows.append(f"Input <b>{esc(spec.name)}</b> ({esc(spec.role)}): {esc(', '.join(spec.band_names))}")
    for spec in card.outputs:
        rows.append(f"Output <b>{esc(spec.name)}</b>: {esc(', '.join(spec.band_names))}"
                    + (f" ({esc(spec.dtype)})" if spec.dtype else ""))
    rows.append(f"Tiles: {card.tile_size} px (multiple of {card.size_multiple}), overlap {card.default_overlap} px")
    training = card.training or {}
    if training.get("data"):
        rows.append(f"Training data: {esc(dataset_names(training['data']))}")
    extent = [f"{k} {training[k]}" for k in ("steps", "epochs") if training.get(k) is not None]
    if extent:
        rows.append("Training: " + esc(", ".join(extent)))
    metrics = training.get("metrics") or {}
    if isinstance(metrics, dict) and metrics:
        rows.append("Held-out metrics: " + esc(", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())))
    elif metrics:
        rows.append("Held-out metrics: " + esc(_fmt(metrics)))
    else:
        rows.append("Held-out metrics: none reported")
    rows.append(f"License: {esc(card.license or 'not stated')}")
    if path:
        rows.append(f"<span style='color:gray'>{esc(path)}</span>")
    return "<br>".join(rows)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} {_fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


# ---------------------------------------------------------------------------------------
# layers and bands


@dataclass
class LayerInfo:
    """What the dialog knows about a raster layer, extracted on the main thread."""
    name: str
    path: str
    band_count: int
    is_float: bool
    descriptions: List[str] = field(default_factory=list)
    crs: str = ""                 # authid, "" = no CRS
    extent: Optional[Tuple[float, float, float, float]] = None   # in the layer CRS
    width: int = 0
    height: int = 0
    dtype: str = ""
    res: Tuple[float, float] = (1.0, 1.0)   # pixel size in layer units
    is_file: bool = True          # a GDAL raster file SkyClear can read


def layer_info_from_file(path: str, name: str = "") -> LayerInfo:
    """What the dialog knows of a raster, read with rasterio (scripts and tests without QGIS;
    the dialog reads CRS and extent from the QGIS layer instead)."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            b = ds.bounds
            return LayerInfo(name or os.path.basename(path), path, ds.count, ds.dtypes[0].startswith("float"),
                             [d or "" for d in ds.descriptions], ds.crs.to_string() if ds.crs else "",
                             (b.left, min(b.bottom, b.top), b.right, max(b.bottom, b.top)), ds.width, ds.height,
                             ds.dtypes[0], (abs(ds.transform.a), abs(ds.transform.e)))


def value_range_problem(label: str, model_name: str, clip_high: float, dtype: str) -> Optional[str]:
    """A warning when the raster's value range clearly does not match the model's card
    (an 8-bit model on 16-bit Sentinel-2 DN, or the other way round): the core's check."""
    return core_bands.dtype_range_problem(label, model_name, clip_high, dtype)


def plausibility(info: LayerInfo, role: str, wanted: Sequence[str] = ()) -> float:
    """Higher = more likely the layer the user wants for ``role`` ('optical' or 'sar')."""
    names = {d.upper() for d in info.descriptions if d}
    score = 0.0
    if wanted and info.band_count == len(wanted):
        score += 3
    if wanted and names and set(w.upper() for w in wanted) <= names:
        score += 3
    if role == "sar":
        if info.band_count == 2 and info.is_float:
            score += 4
        if {"VV", "VH"} & names:
            score += 3
        if info.band_count == 1:
            score += 1
        if "sar" in info.name.lower() or "s1" in info.name.lower():
            score += 1
    else:
        if info.band_count in (12, 13) and not info.is_float:
            score += 4
        if {"B2", "B3", "B4"} <= names:
            score += 2
        if info.band_count >= 3:
            score += 1
        if info.is_float and info.band_count <= 2:
            score -= 3
        if "s2" in info.name.lower() or "optical" in info.name.lower() or "cloudy" in info.name.lower():
            score += 1
    return score


def default_band_mapping(wanted: Sequence[str], descriptions: Sequence[str], band_count: int) -> List[Optional[int]]:
    """1-based raster band for each wanted model band (None = the user must choose), by the
    core's one mapper: descriptions and aliases, grey R=G=B, then position."""
    return core_bands.map_bands(wanted, descriptions, band_count).bands


def band_problem(label: str, wanted: Sequence[str], mapping: Sequence[Optional[int]], band_count: int) -> Optional[str]:
    chosen = core_bands.BandMapping([b or None for b in mapping], "explicit", list(wanted), band_count)
    problem = core_bands.mapping_problem(label, chosen)
    return problem + "; choose one in the band table" if problem and chosen.missing else problem


# ---------------------------------------------------------------------------------------
# tiles and estimates


def tile_count(width: int, height: int, tile: int, overlap: int) -> int:
    """The engine's tile count, with the overlap clamped the way the spin boxes allow."""
    if tile <= 0 or width <= 0 or height <= 0:
        return 0
    from ..plugin.core.tiling import TileGrid

    return len(TileGrid(height, width, tile, max(0, min(overlap, tile - 1))))


@dataclass
class Estimate:
    tiles: int
    seconds_per_tile: Optional[float]
    total_seconds: Optional[float]
    memory_mb: float

    def text(self) -> str:
        time_text = ("time: measuring one tile…" if self.total_seconds is None
                     else f"≈ {format_seconds(self.total_seconds)} ({format_tile_time(self.seconds_per_tile)} per tile)")
        return f"{plural(self.tiles, 'tile')}; {time_text}; memory ≈ {self.memory_mb:.0f} MB"


def estimate(width: int, height: int, tile: int, overlap: int, channels_in: int, channels_out: int,
             seconds_per_tile: Optional[float], model_mb: float = 0.0, batch: int = 4,
             repeats: int = 1) -> Estimate:
    """Time = tiles × measured tile time × repeats (diffusion steps); memory = model (×3 for
    the runtime's arena) + a batch of tiles in and out (×6 for activations) + overlap strips."""
    n = tile_count(width, height, tile, overlap)
    per_tile = None if seconds_per_tile is None else seconds_per_tile * max(1, repeats)
    total = None if per_tile is None else n * per_tile
    tile_bytes = batch * tile * tile * 4 * (channels_in + channels_out)
    strips = (overlap * width + tile * overlap) * 4 * (channels_out + 1)
    memory = (3 * model_mb * 2 ** 20 + 6 * tile_bytes + strips) / 2 ** 20 + 150   # + interpreter/GDAL cache
    return Estimate(n, per_tile, total, memory)
