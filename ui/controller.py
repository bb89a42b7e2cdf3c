"""The dialog's decisions, without a widget (no Qt, no QGIS): which card a run uses, its
tiling and time estimate, and the job call, all from the tool registry
(``plugin/core/tools.py``) and the engine. The widgets fill a ``Form`` with what the user
chose; ``checks.validate`` says what is wrong with it; this module builds the job's keywords
and times one tile through the job itself (the engine's own sessions and tiling)."""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..plugin.core import tools
from ..plugin.core.errors import SkyClearError
from . import layer_choice, logic

BATCH = 4            # tiles per batch (the engine's default): what the memory estimate counts


@dataclass
class Form:
    """What the user chose, as plain values. ``values`` holds the options by job keyword
    (the tool's own and tile_size, overlap, device), already in the job's terms."""
    tool: tools.ToolSpec
    layers: Dict[str, Optional[logic.LayerInfo]] = field(default_factory=dict)    # role -> layer
    bands: Dict[str, List[Optional[int]]] = field(default_factory=dict)           # role -> band table
    models: Dict[str, Optional[str]] = field(default_factory=dict)                # slot keyword -> path
    refusals: Dict[str, Optional[str]] = field(default_factory=dict)              # slot -> refused model
    values: Dict[str, Any] = field(default_factory=dict)
    extent: Optional[Tuple[float, float, float, float]] = None                    # in the optical CRS
    output: str = ""
    rescale: bool = False             # the user opted in to scaling values to the model's range

    def layer(self, role: str) -> Optional[logic.LayerInfo]:
        """The layer of ``role`` when the tool reads that role."""
        return self.layers.get(role) if self.tool.input(role) is not None else None

    @property
    def option_values(self) -> Dict[str, Any]:
        return {**self.tool.defaults(), **self.values}


# ---------------------------------------------------------------------------------------
# models and cards


def slots_in_use(form: Form) -> List[tools.ModelSlot]:
    return form.tool.models_in_use(form.option_values)


def model_card(form: Form):
    """The card of the first model slot in use (None: no model chosen, or none used)."""
    slots = slots_in_use(form)
    path = form.models.get(slots[0].keyword) if slots else None
    return logic.load_card(path)[0] if path else None


def run_card(form: Form):
    """The card the run tiles with: the model's, or the one the tool builds without a model
    (a classical fusion: ``tools.ToolSpec.modelless_card``); None when not known yet."""
    if not form.tool.modelless(form.option_values):
        return model_card(form)
    layers = {i.role: form.layer(i.role) for i in form.tool.inputs}
    if any(info is None or not info.dtype for info in layers.values()):
        return None
    from ..plugin.core import jobs
    from ..plugin.core.model_card import parse_card

    try:
        return parse_card(getattr(jobs, form.tool.modelless_card)(
            form.option_values, {role: info.dtype for role, info in layers.items()}))
    except SkyClearError:
        return None


def wanted_bands(form: Form, role: str) -> List[Tuple[str, str]]:
    """[(name, meaning)] the model expects for ``role``; from its card, else the tool's."""
    card = model_card(form)
    if card is not None:
        return [(b.name, b.meaning) for spec in card.inputs_with_role(role) for b in spec.bands]
    item = form.tool.input(role)
    return [(name, "") for name in (item.bands if item else ())]


def expectation(form: Form, role: str) -> Optional[layer_choice.Expectation]:
    """What the chosen model (or, without one, the tool) expects for ``role``: what layers are
    ranked by when the dialog preselects them."""
    card = model_card(form)
    if card is not None:
        return layer_choice.expectation_from_card(card, role)
    names = tuple(n for n, _ in wanted_bands(form, role))
    return layer_choice.Expectation(role, names) if names else None


def band_roles(form: Form) -> List[str]:
    """The roles with a row in the band table, optical first."""
    return sorted((i.role for i in form.tool.inputs if i.bands_param), key=lambda role: role != "optical")


def sar_taken(form: Form) -> bool:
    """False when an optional SAR layer is chosen but the model takes no SAR input."""
    item = form.tool.input("sar")
    if item is None or item.required:
        return item is not None
    card = model_card(form)
    return card is None or bool(card.inputs_with_role("sar"))


# ---------------------------------------------------------------------------------------
# the job call


def output_path(text: str) -> str:
    """The output the user typed; a name without an extension becomes a .tif (another extension,
    e.g. .png, is refused by validation, as in headless runs)."""
    path = (text or "").strip()
    if path and not os.path.splitext(os.path.basename(path))[1]:
        path += ".tif"
    return path


def further_outputs(form: Form) -> Dict[str, str]:
    """keyword -> path of the outputs written beside the main one (the cloud-probability map)."""
    main = form.output or "skyclear.tif"
    return {out.keyword: tools.sibling_path(main, out.sibling) for out in form.tool.outputs[1:]}


def job_kwargs(form: Form) -> Dict[str, Any]:
    """The keywords of ``jobs.<tool.name>`` for this form, as the registry declares them."""
    tool, values = form.tool, form.option_values
    optical = form.layer("optical")
    kwargs: Dict[str, Any] = {"optical": optical.path if optical else "", "output": form.output}
    for key in ("tile_size", "overlap", "device"):
        kwargs[key] = values.get(key)
    kwargs["extent"] = form.extent
    sar_input, sar = tool.input("sar"), form.layer("sar")
    if sar is not None and not sar_taken(form):
        sar = None                    # validation says it is ignored: do not hand it to the job
    if sar_input is not None and (sar_input.required or sar is not None):
        kwargs["sar"] = sar.path if sar is not None else None
    for item in tool.inputs:
        if item.bands_param and (item.role == "optical" or sar is not None):
            kwargs[item.bands_keyword] = form.bands.get(item.role) or None
    if form.rescale:
        kwargs["value_scale"] = "auto"
    for slot in tool.models_in_use(values):
        kwargs[slot.keyword] = form.models.get(slot.keyword)
    kwargs.update(further_outputs(form))
    kwargs.update({o.keyword: values.get(o.keyword) for o in tool.options if tools.holds(o.when, values)})
    return kwargs


def suggested_output(form: Form, folder: str) -> str:
    """<folder>/<optical stem>_<tool suffix>.tif"""
    optical = form.layer("optical")
    stem = os.path.splitext(os.path.basename(optical.path))[0] if optical and optical.path else "skyclear"
    return os.path.join(folder, f"{stem}_{form.tool.output_suffix}.tif")


# ---------------------------------------------------------------------------------------
# tiles, time and memory


def pixels(form: Form) -> Tuple[int, int]:
    """Width and height of the area to process."""
    info = form.layer("optical")
    if info is None:
        return 0, 0
    if form.extent is None or info.extent is None:
        return info.width, info.height
    e, o = form.extent, info.extent
    xres, yres = info.res[0] or 1, info.res[1] or 1
    w = (min(e[2], o[2]) - max(e[0], o[0])) / xres
    h = (min(e[3], o[3]) - max(e[1], o[1])) / yres
    return max(0, int(round(w))), max(0, int(round(h)))


def tiling(form: Form, card) -> Tuple[int, int]:
    """(tile, overlap) the engine will use (``engine.resolve_tiling``, then one tile no larger than
    a small image needs); the chosen values as they are when the engine refuses them (validation
    says why)."""
    tile, overlap = form.values.get("tile_size"), form.values.get("overlap")
    if card is None:
        tile = tile or 512
        return tile, tile // 8 if overlap is None else overlap
    from ..plugin.core.engine import resolve_tiling
    from ..plugin.core.tiling import fit_to_image

    try:
        tile, overlap = resolve_tiling(card, tile, overlap)
    except SkyClearError:
        tile = tile or card.tile_size
        return tile, card.default_overlap if overlap is None else overlap
    width, height = pixels(form)
    return fit_to_image(tile, overlap, height, width, card.size_multiple) if width and height else (tile, overlap)


def measure_key(form: Form) -> Optional[tuple]:
    """What the time per tile depends on: the job and its settings, not the area or files."""
    try:
        kwargs = job_kwargs(form)
    except Exception:
        return None
    skip = {"extent"} | {o.keyword for o in form.tool.outputs} | {i.keyword for i in form.tool.inputs}
    return (form.tool.name,) + tuple(sorted((k, repr(v)) for k, v in kwargs.items() if k not in skip))


class Estimator:
    """Tile count and memory at once; the time of one real tile, measured in a background
    thread by the job itself on a one-tile cut of the area (``start``, then ``poll``)."""

    def __init__(self, job_for: Callable[[str], Callable] = None):
        self.measured: Dict[tuple, float] = {}
        self.error: Optional[str] = None
        self.generation = 0
        self.state: Optional[dict] = None
        self.thread: Optional[threading.Thread] = None
        self._job_for = job_for or (lambda name: tools.tool(name).job())

    def estimate(self, form: Form, valid: bool = True) -> Tuple[logic.Estimate, str]:
        """The estimate and its one-line text."""
        card = run_card(form)
        width, height = pixels(form)
        tile, overlap = tiling(form, card)
        per_tile = self.measured.get(measure_key(form))
        cin = sum(len(s.bands) for s in card.inputs) if card else 4
        cout = sum(len(s.bands) for s in card.outputs) if card else 3
        path = form.models.get(slots_in_use(form)[0].keyword) if card is not None and slots_in_use(form) else None
        model_mb = os.path.getsize(path) / 2 ** 20 if path and os.path.isfile(path) else 0.0
        est = logic.estimate(width, height, tile, overlap, cin, cout, per_tile, model_mb, batch=BATCH)
        text = f"Estimate for {width}×{height} px at tile {tile}, overlap {overlap}: {est.text()}"
        if per_tile is None and self.error:
            text += f" — could not time a tile: {self.error}"
        elif per_tile is None and not valid:
            text = text.replace("time: measuring one tile…", "time: once the inputs are valid")
        return est, text

    def timing_kwargs(self, form: Form, folder: str) -> Optional[Dict[str, Any]]:
        """The run's own job keywords cut down to one tile at the centre of the area, writing
        into ``folder``: the same processors, band mapping, reprojection and value range."""
        info = form.layer("optical")
        if info is None:
            return None
        kwargs = job_kwargs(form)
        tile, _ = tiling(form, run_card(form))
        width, height = pixels(form)
        box = form.extent or info.extent
        if info.crs and box is not None:
            xres, yres = info.res[0] or 1.0, info.res[1] or 1.0
            half_w = (min(tile, width) - 2) / 2.0 * xres       # a little less than a tile: one tile
            half_h = (min(tile, height) - 2) / 2.0 * yres
            cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
            if half_w > 0 and half_h > 0:
                kwargs["extent"] = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
        else:   # no CRS, so no extent to crop to: run on a one-tile copy of the inputs' centre
            for item in form.tool.inputs:
                if kwargs.get(item.keyword):
                    kwargs[item.keyword] = centre_crop(kwargs[item.keyword], min(tile, width) - 2,
                                                       min(tile, height) - 2, os.path.join(folder, f"{item.role}.tif"))
        kwargs["output"] = os.path.join(folder, "tile.tif")
        kwargs.update({k: tools.sibling_path(kwargs["output"], k) for k in further_outputs(form)})
        return kwargs

    def start(self, form: Form) -> bool:
        """Time one tile in a background thread; an older timing still running is cancelled."""
        key = measure_key(form)
        if key is None or form.layer("optical") is None:
            return False
        folder = tempfile.mkdtemp(prefix="skyclear-estimate-")
        try:
            kwargs = self.timing_kwargs(form, folder)
            job = self._job_for(form.tool.name)
        except Exception as exc:
            shutil.rmtree(folder, ignore_errors=True)
            self.error = str(exc)
            return False
        if kwargs is None:
            shutil.rmtree(folder, ignore_errors=True)
            return False
        self.generation += 1
        generation = self.generation
        state = {"generation": generation, "key": key, "done": False, "seconds": None, "error": None}

        def cancelled() -> bool:
            return generation != self.generation

        def work():
            from ..plugin.core.errors import Cancelled

            try:
                report = job(**kwargs, is_cancelled=cancelled)
                if report.seconds < 3.0 and not cancelled():
                    # the first run pays for the runtime's warm-up: time a second one when cheap
                    report = job(**kwargs, is_cancelled=cancelled)
                state["seconds"] = report.processor_seconds / max(1, report.tiles)
            except Cancelled:
                pass
            except Exception as exc:  # shown in the estimate line, never raised into Qt
                state["error"] = str(exc) or type(exc).__name__
            finally:
                shutil.rmtree(folder, ignore_errors=True)
                state["done"] = True

        self.state, self.error = state, None
        self.thread = threading.Thread(target=work, name="skyclear-estimate", daemon=True)
        self.thread.start()
        return True

    @property
    def running(self) -> bool:
        return self.state is not None

    def poll(self) -> bool:
        """True once the timing ended (its result, if still current, is in ``measured``)."""
        state = self.state
        if state is None or not state["done"]:
            return False
        self.state = None
        if state["generation"] == self.generation:
            if state["seconds"] is not None:
                self.measured[state["key"]] = state["seconds"]
                self.error = None
            elif state["error"]:
                self.error = state["error"]
        return True

    def stop(self, wait: float = 15.0) -> None:
        """Cancel a running timing (at its next tile batch) and wait for it, bounded."""
        self.generation += 1
        if self.thread is not None and self.thread.is_alive():
            self.thread.join(wait)       # never leave a model running behind an unloaded plugin


def centre_crop(path: str, width: int, height: int, target: str) -> str:
    """A GeoTIFF copy of the centre ``width`` × ``height`` pixels of ``path`` (bands, band
    descriptions and nodata kept), for timing a tile of a raster without a CRS."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        w, h = max(1, min(width, src.width)), max(1, min(height, src.height))
        window = Window((src.width - w) // 2, (src.height - h) // 2, w, h)
        profile = src.profile.copy()
        profile.update(driver="GTiff", width=w, height=h, transform=src.window_transform(window))
        for key in ("blockxsize", "blockysize", "tiled", "compress"):
            profile.pop(key, None)
        with rasterio.open(target, "w", **profile) as dst:
            dst.write(src.read(window=window))
            dst.descriptions = src.descriptions
    return target
