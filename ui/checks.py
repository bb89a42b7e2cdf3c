"""What is wrong with a dialog ``Form``, said as messages (no Qt, no QGIS). Every check is
the core's own: the band mapper and value-range check (``core/bands.py``), the card/slot fit
(``core/tools.py``), the engine's grid alignment and tiling (``jobs.check_grids``,
``engine.resolve_tiling``), the writer's output checks (``jobs.output_problems``) and the
runtime's device check. Only their wording for the dialog is decided here."""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set, Tuple

from ..plugin.core import bands as core_bands
from ..plugin.core import tools
from ..plugin.core.errors import SkyClearError
from ..plugin.core.pipelines.optical_cloud_removal import card_steps_problem
from ..plugin.core.words import article, plural, sentence
from . import controller, logic
from .controller import Form

ERROR, WARNING, INFO = "error", "warning", "info"
Message = Tuple[str, str]
_GPU_NAME: Optional[str] = None


@dataclass
class Context:
    """What only the view knows: the project's other layers and the running tasks."""
    open_layers: Dict[str, str] = field(default_factory=dict)   # absolute path -> layer name
    busy_outputs: Set[str] = field(default_factory=set)          # absolute paths being written
    windows: bool = os.name == "nt"


@dataclass
class Verdict:
    messages: List[Message]
    device_text: str = ""
    device_ok: bool = True
    range_flagged: bool = False        # a value range the user may opt in to scale
    notes: Dict[str, str] = field(default_factory=dict)    # further output keyword -> "Also writes …"

    @property
    def errors(self) -> List[str]:
        return [text for level, text in self.messages if level == ERROR]


class Checker:
    """``validate(form, context)``; keeps the sampled value ranges and grid checks per file."""

    def __init__(self):
        self._ranges: Dict[tuple, object] = {}
        self._grids: Dict[tuple, object] = {}

    def validate(self, form: Form, context: Optional[Context] = None) -> Verdict:
        context = context or Context()
        verdict = Verdict([])
        msgs = verdict.messages
        tool = form.tool
        optical, sar = form.layer("optical"), form.layer("sar")
        if optical is None:
            msgs.append((ERROR, "Choose an optical raster layer (add one to the project first)."))
        if tool.input("sar") is not None and tool.input("sar").required and sar is None:
            msgs.append((ERROR, "Choose a SAR raster layer."))
        msgs += self.model_messages(form)
        card = controller.model_card(form)
        for role, info in (("optical", optical), ("sar", sar)):
            if info is None:
                continue
            if not info.is_file or not os.path.isfile(info.path):
                msgs.append((ERROR, f"{role.capitalize()} layer '{info.name}' is not a raster file; SkyClear "
                                    "reads rasters from files: export it as GeoTIFF first (right-click › Export)."))
                continue
            wanted = [n for n, _ in controller.wanted_bands(form, role)]
            problem = band_problem(role, info, wanted, form.bands.get(role), card) if wanted else None
            if problem:
                msgs.append((ERROR, problem))
            elif card is not None:
                msgs += self.range_messages(form, role, info, card, verdict)
        if optical is not None and optical.is_file:
            taken = sar is not None and sar.is_file and controller.sar_taken(form)   # an ignored SAR is not aligned
            msgs += self.grid_messages(optical, sar if taken else None, form.extent)
        run_card = controller.run_card(form)
        if run_card is not None:
            from ..plugin.core.engine import resolve_tiling

            try:
                resolve_tiling(run_card, form.values.get("tile_size"), form.values.get("overlap"))
            except SkyClearError as exc:
                msgs.append((ERROR, sentence(str(exc)) + "."))
            else:
                msgs += memory_messages(form)
        verdict.device_text, verdict.device_ok = device_text(form.values.get("device", "auto"))
        if not verdict.device_ok:
            msgs.append((ERROR, verdict.device_text))
        msgs += output_messages(form, context)
        out = form.output or "skyclear.tif"
        verdict.notes = {o.keyword: f"Also writes {o.note}: {os.path.basename(tools.sibling_path(out, o.sibling))}"
                         for o in tool.outputs[1:] if o.note}
        return verdict

    # -- models ------------------------------------------------------------------------------
    def model_messages(self, form: Form) -> List[Message]:
        msgs = []
        for index, slot in enumerate(controller.slots_in_use(form)):
            path = form.models.get(slot.keyword)
            problem = slot_problem(form.tool, slot, path)
            if problem:
                if path is None and slot.when:
                    problem += " " + _alternative(form.tool, slot)
                msgs.append((ERROR, problem))
            if form.refusals.get(slot.keyword):
                msgs.append((ERROR, form.refusals[slot.keyword]))
            steps = form.values.get("steps")
            if slot.keyword == "step_model" and path and isinstance(steps, int) and steps >= 1:
                step_card = logic.load_card(path)[0]
                problem = card_steps_problem(step_card.extra, steps) if step_card is not None else None
                if problem:
                    msgs.append((ERROR, sentence(problem.replace("STEPS: steps", "Diffusion steps")) + "."))
        card = controller.model_card(form)
        sar_input = form.tool.input("sar")
        if card is not None and sar_input is not None and not sar_input.required:
            if card.inputs_with_role("sar") and form.layer("sar") is None:
                msgs.append((ERROR, f"Model '{card.name}' needs a SAR raster."))
            if form.layer("sar") is not None and not card.inputs_with_role("sar"):
                msgs.append((WARNING, f"Model '{card.name}' takes no SAR input; the SAR layer is ignored."))
        return msgs

    # -- value ranges --------------------------------------------------------------------------
    def range_check(self, info: logic.LayerInfo, role: str, card, bands: Optional[List[int]] = None):
        """The core value-range check of a layer against the card's input for ``role``
        (sampled, cached by file, mtime and bands); None when it does not apply."""
        specs = card.inputs_with_role(role) if card is not None else []
        if info is None or not specs or not any(b.clip for b in specs[0].bands):
            return None
        spec = specs[0]
        if not bands or not all(bands):
            mapping = core_bands.map_bands(spec.band_names, info.descriptions, info.band_count)
            if not mapping.complete:
                return None
            bands = mapping.bands
        if len(bands) != len(spec.bands) or max(bands) > info.band_count:
            return None
        try:
            key = (info.path, os.path.getmtime(info.path), tuple(bands),
                   repr([[b.name, b.clip, b.scale, b.offset] for b in spec.bands]))
        except OSError:
            return None
        if key not in self._ranges:
            try:
                self._ranges[key] = core_bands.check_value_range(info.path, list(bands), spec, role.upper())
            except Exception:
                self._ranges[key] = None
        return self._ranges[key]

    def range_messages(self, form: Form, role: str, info, card, verdict: Verdict) -> List[Message]:
        """A value range the model was not made for is an error (the result would be noise or
        flat), unless the user opts in to scaling the values to the model's range."""
        highs = [b.clip[1] for spec in card.inputs_with_role(role) for b in spec.bands if b.clip]
        if not highs:
            return []
        check = self.range_check(info, role, card, form.bands.get(role))
        who = "SAR" if role == "sar" else role.capitalize()
        if check is not None:
            if not check.mismatch:
                return []
            if check.kind == "range":
                problem = (f"{who} values of '{info.name}' run {check.sample_low:g}–{check.sample_high:g} "
                           f"({info.dtype}), but model '{card.name}' was made for {check.clip[0]:g}–{check.clip[1]:g}: "
                           f"{100 * check.fraction_outside:.0f} % of them would be clipped and the result would be "
                           + ("flat" if check.flat else "meaningless") + ".")
            else:   # values in another unit (0–1 optical, linear SAR): the core says which
                problem = f"{who} values of '{info.name}' ({info.dtype}) do not fit model '{card.name}': {check.problem()}."
            if check.kind != "linear_sar":
                problem += " Choose the product the model was made for or another model."
        else:
            problem = core_bands.dtype_range_problem(role, card.name, max(highs), info.dtype)
            if not problem:
                return []
        verdict.range_flagged = True
        if role == "optical" and form.rescale:
            scale = check.suggested.text() if check is not None and check.suggested is not None else "automatic"
            return [(INFO, f"Optical values are scaled to the range of model '{card.name}' ({scale}).")]
        if role == "sar":
            return [(ERROR, problem)]
        return [(ERROR, problem + " Or tick “Scale the input values to the model's range” to run anyway.")]

    # -- grids -----------------------------------------------------------------------------------
    def grid_messages(self, optical, sar, extent) -> List[Message]:
        """The engine's alignment of the SAR onto the optical grid (and the extent's fit)."""
        from ..plugin.core.jobs import SAR_COVERAGE_WARN, check_grids

        try:
            key = (optical.path, os.path.getmtime(optical.path), sar.path if sar else "",
                   os.path.getmtime(sar.path) if sar else 0, extent)
        except OSError:
            return []
        if key not in self._grids:
            try:
                self._grids[key] = check_grids(optical=optical.path, sar=sar.path if sar else None, extent=extent)
            except SkyClearError as exc:
                self._grids[key] = exc
        found = self._grids[key]
        if isinstance(found, SkyClearError):
            msgs = [(ERROR, sentence(str(found)) + ".")]
            if sar is not None and sar.crs and optical.crs and sar.crs != optical.crs:
                msgs.append((INFO, f"SAR is in {sar.crs}; it would be reprojected to the optical grid "
                                   f"({optical.crs})."))
            return msgs
        if sar is None:
            return []
        msgs = []
        if not found.sar_crs and not found.optical_crs:
            msgs.append((INFO, "No CRS on the rasters: they are assumed to share the same pixel grid."))
        if found.reprojected:
            msgs.append((INFO, f"SAR is in {found.sar_crs}; it will be reprojected to the optical grid "
                               f"({found.optical_crs})."))
        if found.coverage < SAR_COVERAGE_WARN:
            msgs.append((WARNING, f"The SAR covers only {100 * found.coverage:.0f}% of the "
                                  + ("chosen extent" if extent else "optical raster")
                                  + "; the rest of the output will be nodata."))
        if found.resampled and not found.reprojected:
            msgs.append((INFO, "SAR and optical pixel grids differ; the SAR will be resampled to the optical grid."))
        return msgs


# ---------------------------------------------------------------------------------------


def slot_problem(tool: tools.ToolSpec, slot: tools.ModelSlot, path: Optional[str]) -> Optional[str]:
    """Why no usable model is in the slot (None when one is)."""
    if path is None:
        what = "model" if slot.keyword == "model" else slot.title[:1].lower() + slot.title[1:]
        labels = " or ".join(tools.CARD_TASK_LABELS.get(t, t) for t in slot.card_tasks)
        kind = "any model with a SkyClear card" if tool.generic else f"{article(labels)} {labels} model"
        return f"No {what} is available for this task yet: add {kind} (.onnx) with “Add .onnx…”."
    card, error = logic.load_card(path)
    return error if card is None else tools.card_problem(tool, card, slot.keyword)


def _alternative(tool: tools.ToolSpec, slot: tools.ModelSlot) -> str:
    """"Or set Mode to “…”." for a slot that only some option values use."""
    keyword, allowed = slot.when[0]
    option = tool.option(keyword)
    other = next((label for value, label in (option.choices or {}).items() if value not in allowed), None)
    return f"Or set {option.title or option.label} to “{other}”." if other else ""


def band_problem(role: str, info, wanted: List[str], chosen: Optional[List[Optional[int]]], card) -> Optional[str]:
    """The core mapper's verdict on the band table, or "wrong product" when the raster has
    fewer bands than the model needs and none of them are named like the model's."""
    model = card.name if card is not None else ""
    by_description = core_bands.map_bands(wanted, info.descriptions, info.band_count)
    if info.band_count < len(wanted) and not by_description.complete and by_description.rule != "grey":
        product = product_name(wanted)
        return (f"{role.capitalize()} layer '{info.name}' has {plural(info.band_count, 'band')} "
                f"({info.dtype or 'unknown type'}): it is not the product "
                + (f"model '{model}'" if model else "this task") + f" works on ({product}). "
                f"Choose {product} as the {role} layer" + (", or a model made for this product." if model else "."))
    mapping = core_bands.map_bands(wanted, info.descriptions, info.band_count,
                                   explicit=chosen if chosen and any(chosen) else None)
    problem = core_bands.mapping_problem(role.capitalize(), mapping, model)
    return problem.replace("a band list like", "in the band table, e.g.") if problem else None


def product_name(wanted: List[str]) -> str:
    """What a model's band list means in words, for "wrong product" messages."""
    upper = [w.upper() for w in wanted]
    if len(upper) >= 12 and {"B2", "B3", "B4", "B8"} <= set(upper):
        return (f"a {len(upper)}-band Sentinel-2 " + ("L1C" if "B10" in upper else "L2A") + " scene "
                f"({upper[0]}…{upper[-1]})")
    if set(upper) <= {"VV", "VH", "HH", "HV"}:
        return "a Sentinel-1 scene (" + ", ".join(wanted) + " in dB)"
    if core_bands.is_rgb(wanted):
        return "an RGB image"
    return f"a {len(wanted)}-band raster ({', '.join(wanted)})"


def memory_messages(form: Form) -> List[Message]:
    """A warning when the tiles chosen would need more than half of this computer's memory."""
    ram_mb = physical_memory_mb()
    estimate, _ = controller.Estimator().estimate(form)
    if ram_mb is None or estimate.memory_mb <= ram_mb / 2:
        return []
    return [(WARNING, f"Tiles of this size need about {estimate.memory_mb / 1024:.1f} GB, more than half of this "
                      f"computer's {ram_mb / 1024:.0f} GB: choose a smaller tile size.")]


def physical_memory_mb() -> Optional[float]:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 20
    except (AttributeError, ValueError, OSError):   # not POSIX (Windows): no warning
        return None


def output_messages(form: Form, context: Context) -> List[Message]:
    out = form.output
    if not out:
        return [(ERROR, "Choose an output GeoTIFF file.")]
    from ..plugin.core.jobs import output_problems

    files = [("Output", out)] + [(f"Output '{k}'", p) for k, p in controller.further_outputs(form).items()]
    inputs = [(role, info.path) for role in ("optical", "sar") for info in [form.layer(role)] if info is not None]
    msgs = [(ERROR, sentence(p) + ("" if p.endswith(".") else ".")) for p in output_problems(files, inputs)]
    if not msgs and os.path.exists(out):
        msgs.append((WARNING, f"{os.path.basename(out)} exists and will be overwritten."))
    shown = context.open_layers.get(os.path.abspath(out))
    if shown and not any(level == ERROR for level, _ in msgs):   # a refused output replaces nothing
        if context.windows:
            msgs.append((ERROR, f"Layer '{shown}' has {os.path.basename(out)} open: remove it from the project "
                                "or choose another output."))
        else:
            msgs.append((WARNING, f"Layer '{shown}' shows {os.path.basename(out)}; it will be replaced by the "
                                  "new result."))
    if os.path.abspath(out) in context.busy_outputs:
        msgs.append((ERROR, f"A running task is writing {os.path.basename(out)}: choose another output."))
    return msgs


def gpu_name() -> str:
    """CUDA device name from nvidia-smi (cached), '' when unknown."""
    global _GPU_NAME
    if _GPU_NAME is None:
        _GPU_NAME = ""
        exe = shutil.which("nvidia-smi")
        if exe:
            try:
                out = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"],
                                     capture_output=True, text=True, timeout=3)
                _GPU_NAME = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
            except Exception:
                _GPU_NAME = ""
    return _GPU_NAME


def device_text(device: str) -> Tuple[str, bool]:
    """(indicator text, ok) for the chosen device: the runtime's own GPU check."""
    try:
        from ..plugin.core.runtime import gpu_status

        available, reason = gpu_status()
    except Exception as exc:  # onnxruntime broken
        return f"No runtime: {exc}", False
    if available and device in ("auto", "gpu"):
        name = gpu_name()
        return f"Runs on GPU: CUDAExecutionProvider{' — ' + name if name else ''}", True
    if device == "gpu":
        return f"GPU requested but not available: {reason}", False
    why = "" if device == "cpu" and available else f" (GPU not available: {reason})"
    return f"Runs on CPU: CPUExecutionProvider{why}", True
