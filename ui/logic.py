"""What the dialog decides, without any widget: tasks, band mapping, plausible layers,
model compatibility, tile counts and estimates. QGIS-free so it is easy to test."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..plugin.core import bands as core_bands
from ..plugin.core import choices

S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
S1_BANDS = ("VV", "VH")
RGB_BANDS = ("R", "G", "B")
# model band name -> raster band descriptions that mean the same: the core's one table
BAND_ALIASES = core_bands.BAND_ALIASES
FUSION_METHODS = tuple(choices.FUSION_METHODS.items())
OPTICAL_MODES = tuple(choices.OPTICAL_MODES.items())
DEVICES = tuple(choices.DEVICES.items())

CARD_TASK_LABELS = {
    "generic": "generic",
    "sar_cloud_removal": "SAR-assisted cloud removal",
    "optical_cloud_removal_reference": "optical cloud removal (reference network)",
    "optical_cloud_removal_diffusion_step": "optical cloud removal (diffusion step)",
    "sar_optical_fusion": "SAR–optical fusion",
}


@dataclass(frozen=True)
class TaskSpec:
    key: str                      # UI key, also stored in settings
    title: str
    function: str                 # name of the jobs.* function
    description: str
    needs_sar: bool               # True: required, False: not used, None handled by sar_optional
    sar_optional: bool = False
    card_tasks: Tuple[str, ...] = ()          # card tasks accepted by the main model picker
    step_card_tasks: Tuple[str, ...] = ()     # second picker (diffusion step model)
    default_optical: Tuple[str, ...] = ()     # band names when no model card is known
    default_sar: Tuple[str, ...] = ()
    optical_hint: str = ""
    sar_hint: str = ""


TASKS: Tuple[TaskSpec, ...] = (
    # titles = the Processing algorithms' display names, so both places say the same
    TaskSpec("sar_cloud_removal", "Remove clouds (SAR-assisted)", "remove_clouds_sar",
             "Removes clouds from a cloudy Sentinel-2 scene (13 bands, L1C) using a Sentinel-1 "
             "scene (VV, VH in dB) of about the same date (IB-HFN). Writes the cloud-free scene "
             "and a cloud-probability map.",
             needs_sar=True, card_tasks=("sar_cloud_removal",),
             default_optical=S2_BANDS, default_sar=S1_BANDS,
             optical_hint="cloudy Sentinel-2, 13 bands", sar_hint="Sentinel-1, 2 bands VV,VH (dB)"),
    TaskSpec("optical_cloud_removal", "Remove clouds (diffusion)", "remove_clouds_optical",
             "Removes thin clouds and haze from an optical image alone with Diffusion Enhancement: "
             "a reference network gives a first clear estimate and a few diffusion steps add detail.",
             needs_sar=False, card_tasks=("optical_cloud_removal_reference",),
             step_card_tasks=("optical_cloud_removal_diffusion_step",),
             default_optical=RGB_BANDS, optical_hint="cloudy optical image"),
    TaskSpec("fusion", "Fuse SAR and optical", "fuse_sar_optical",
             "Fuses a SAR image into an optical image (hierarchical fusion): the optical colours "
             "are kept and SAR structure is added. Classical methods need no model.",
             needs_sar=True, card_tasks=("sar_optical_fusion",),
             default_optical=RGB_BANDS, default_sar=("SAR",),
             optical_hint="optical RGB", sar_hint="SAR, 1 band"),
    TaskSpec("custom", "Run custom model", "run_model",
             "Runs any ONNX model carrying a SkyClear model card over an optical raster (and a SAR "
             "raster when the model takes one).",
             needs_sar=False, sar_optional=True,
             card_tasks=("generic", "sar_cloud_removal", "optical_cloud_removal_reference",
                         "sar_optical_fusion"),
             optical_hint="any raster the model card accepts"),
)
TASKS_BY_KEY = {t.key: t for t in TASKS}


def task_title_for_card_task(card_task: str) -> str:
    for spec in TASKS:
        if card_task in spec.card_tasks + spec.step_card_tasks and spec.key != "custom":
            return spec.title
    return TASKS_BY_KEY["custom"].title


def check_card_for_task(card, task_key: str, step: bool = False) -> Optional[str]:
    """None when ``card`` fits the task (main or diffusion-step picker), else a clear refusal."""
    spec = TASKS_BY_KEY[task_key]
    wanted = spec.step_card_tasks if step else spec.card_tasks
    if card.task in wanted:
        if spec.key == "custom" and any(t.role == "auxiliary" for t in card.inputs):
            return (f"Model '{card.name}' has an auxiliary input, which the custom runner cannot fill. "
                    f"Use the task it was made for.")
        return None
    have = CARD_TASK_LABELS.get(card.task, card.task)
    need = " or ".join(CARD_TASK_LABELS.get(t, t) for t in wanted)
    where = task_title_for_card_task(card.task)
    return (f"Model '{card.name}' is {article(have)} {have} model (card task '{card.task}'), but this slot needs "
            f"{article(need)} {need} model. Choose it under “{where}” instead, or pick another model.")


def article(word: str) -> str:
    """'an' before a vowel: "an optical cloud removal model", "a SAR–optical fusion model"."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


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


def zoo_for_task(task_key: str, step: bool = False, zoo_dir: Optional[str] = None) -> List[Tuple[str, object]]:
    """Bundled models whose card fits the task: [(path, card)], the task's default
    (card ``extra.default_for_task``) first, then by file name."""
    out = []
    for path in zoo_models(zoo_dir):
        card, _ = load_card(path)
        if card is not None and check_card_for_task(card, task_key, step) is None:
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
    problem = core_bands.mapping_problem(f"{label} raster" if chosen.missing else label, chosen)
    return problem + " in the band table" if problem and chosen.missing else problem


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


def format_tile_time(seconds: float) -> str:
    return f"{1000 * seconds:.0f} ms" if seconds < 0.1 else f"{seconds:.2f} s"


def format_seconds(seconds: float) -> str:
    if seconds < 1:
        return "< 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
