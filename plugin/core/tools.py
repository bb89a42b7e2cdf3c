"""The tool registry: every tool SkyClear offers, declared once.

A ``ToolSpec`` says what a tool takes and gives: its inputs by role (with the bands and
units it expects), its model slots (which model-card tasks fit, which bundled model is the
default), its options (type, default, range, help), its outputs, and the ``jobs.*`` function
that runs it. The front ends are driven by it: the Processing algorithms
(``processing/base.py::ToolAlgorithm``), the dialog (``ui/controller.py`` and its widgets),
the batch manifest (``batch/manifest.py``) and ``make demo``; ``jobs.with_defaults`` takes
the option defaults and ranges from here too.

Adding a tool = one ``ToolSpec`` in ``TOOLS`` + one keyword-only function of that name in
``jobs.py`` returning the engine's ``RunReport``.

Light on purpose (no numpy, rasterio or onnxruntime): the Processing provider reads it when
QGIS starts; job functions are looked up by name when a tool runs.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from .choices import COMPRESSIONS, DEVICES, FUSION_METHODS, OPTICAL_MODES
from .words import article

# option kinds; each front end knows how to show and convert each kind
BOOL, INT, FLOAT, CHOICE = "bool", "int", "float", "choice"
TILE, OVERLAP, EXTENT, SCALE = "tile", "overlap", "extent", "scale"   # the shared run options

# ((option keyword, (values it must have, ...)), ...): all must hold
Conditions = Tuple[Tuple[str, Tuple[Any, ...]], ...]

S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
S1_BANDS = ("VV", "VH")
RGB_BANDS = ("R", "G", "B")

# what each model-card task is, in words
CARD_TASK_LABELS = {
    "generic": "generic",
    "sar_cloud_removal": "SAR-assisted cloud removal",
    "optical_cloud_removal_reference": "optical cloud removal (reference network)",
    "optical_cloud_removal_diffusion_step": "optical cloud removal (diffusion step)",
    "sar_optical_fusion": "SAR–optical fusion",
}


def holds(conditions: Conditions, values: Mapping[str, Any]) -> bool:
    return all(values.get(keyword) in allowed for keyword, allowed in conditions)


@dataclass(frozen=True)
class Input:
    """A raster the tool reads; ``role`` "optical" defines the output grid, "sar" is
    reprojected onto it. The job keywords are ``<role>`` and ``<role>_bands``."""
    role: str
    param: str                                 # Processing / manifest parameter name
    label: str                                 # Processing label
    help: str                                  # what to give, in which units
    hint: str = ""                             # the dialog's one-line "expects: …"
    bands: Tuple[str, ...] = ()                # model bands expected when no model card says
    required: bool = True
    bands_param: str = ""                      # its 1-based band-list parameter
    bands_label: str = ""
    default_bands: Optional[Tuple[int, ...]] = None   # band list given to the job when none is chosen

    @property
    def keyword(self) -> str:
        return self.role

    @property
    def bands_keyword(self) -> str:
        return f"{self.role}_bands"


@dataclass(frozen=True)
class ModelSlot:
    """A model file the tool runs; empty = the bundled model of ``default_task``."""
    keyword: str                               # job keyword: "model", "step_model"
    param: str
    label: str                                 # Processing label
    title: str                                 # dialog label
    card_tasks: Tuple[str, ...]                # model-card tasks that fit
    help: str = ""
    default_task: Optional[str] = None         # None: no bundled default, the user must choose
    when: Conditions = ()                      # used only when these options hold

    @property
    def required(self) -> bool:
        return self.default_task is None


@dataclass(frozen=True)
class Option:
    """A value the job takes. ``title`` is the dialog's wording (a checkbox's text for
    BOOL); ``when``: shown and passed only then; ``enabled_when``: shown always, editable
    only then; ``section``: the dialog box it sits in ("options" or "model")."""
    keyword: str
    param: str
    kind: str
    label: str
    help: str = ""
    default: Any = None
    title: str = ""
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    step: Optional[float] = None
    choices: Optional[Mapping[str, str]] = None
    when: Conditions = ()
    enabled_when: Conditions = ()
    section: str = "options"
    dialog_default: Any = None                 # the dialog's first choice where it differs from default
    advanced: bool = False                     # Processing: under "Advanced parameters"
    from_model: bool = False                   # default None = the model card's value (-1 in forms)
    in_dialog: bool = True                     # False: the dialog has its own widget for it, or none

    @property
    def first_choice(self) -> Any:
        return self.default if self.dialog_default is None else self.dialog_default

    def problem(self, value) -> Optional[str]:
        """Why ``value`` is not allowed (None when it is)."""
        if self.kind == CHOICE and value not in (self.choices or {}):
            return f"{self.keyword} must be one of {', '.join(self.choices or {})}, got {value!r}"
        if self.kind in (INT, FLOAT) and value is not None:
            low, high = self.minimum, self.maximum
            if (low is not None and value < low) or (high is not None and value > high):
                if high is None:
                    return f"{self.keyword} must be at least {low:g}, got {value}"
                return f"{self.keyword} must be between {low:g} and {high:g}, got {value}"
        return None


@dataclass(frozen=True)
class Output:
    """A file the tool writes; the first is the main output, the others default to
    ``<main stem>_<sibling>.tif`` beside it."""
    keyword: str
    param: str
    label: str
    help: str = ""
    sibling: str = ""
    note: str = ""                             # the dialog's words for it ("the cloud-probability map …")
    layer_name: str = "result"                 # what the Layers panel calls it: "<input> — <layer_name>"


# ---------------------------------------------------------------------------------------
# options every tool shares (processed by the engine, not by the tool)

COMMON: Tuple[Option, ...] = (
    Option("extent", "EXTENT", EXTENT, "Process only this extent (any CRS; empty = the whole optical raster)",
           "process only this area; any CRS (it is reprojected to the optical raster's CRS). On the command "
           "line: EXTENT='xmin,xmax,ymin,ymax [EPSG:code]'.", in_dialog=False),
    Option("value_scale", "SCALE", SCALE,
           "Value scaling (empty = check only, auto, a factor like 0.0255, gain,bias, none)",
           "the input values are checked against the model's value range; when most lie outside it the "
           "run warns, and refuses when the result would be flat. 'auto' scales them to fit (e.g. uint16 "
           "Sentinel-2 DN for an 8-bit model; outputs return in the input's units), a number multiplies "
           "them (e.g. 0.0255), 'gain,bias' applies gain·v + bias, 'none' runs them as they are.",
           in_dialog=False),
    Option("tile_size", "TILE_SIZE", TILE, "Tile size in pixels (0 = the model's native size)",
           "pixels per tile side (0 = the model's native tile).", title="Tile size", minimum=0, maximum=8192,
           step=64),
    Option("overlap", "OVERLAP", OVERLAP, "Tile overlap in pixels (-1 = the model's default)",
           "pixels shared by neighbouring tiles and blended smoothly (-1 = the model's default).",
           title="Overlap", minimum=-1, maximum=4096, step=8),
    Option("device", "DEVICE", CHOICE, "Device",
           "Auto uses the GPU when onnxruntime-gpu and an NVIDIA driver are present, else the CPU.",
           default="auto", choices=DEVICES),
    Option("compression", "COMPRESSION", CHOICE, "Output compression",
           "DEFLATE (default: every GIS reads it), ZSTD (less CPU, same size) or none.",
           default="deflate", choices=COMPRESSIONS, advanced=True, in_dialog=False),
)

BANDS_HELP = ("1-based band lists (e.g. 4,3,2) when the rasters hold other bands or another order; empty = "
              "the bands named like the model's (B4, VV, …) in the band descriptions, else the file order.")


@dataclass(frozen=True)
class ToolSpec:
    key: str                                   # the dialog's key (also kept in the settings)
    name: str                                  # jobs.* function, Processing algorithm, manifest tool
    title: str                                 # Processing display name = the dialog's task title
    description: str                           # the dialog's paragraph
    summary: str                               # the Processing help's first paragraph
    inputs: Tuple[Input, ...]
    models: Tuple[ModelSlot, ...]
    options: Tuple[Option, ...]
    outputs: Tuple[Output, ...]
    output_suffix: str                         # suggested output: <optical stem>_<suffix>.tif
    generic: bool = False                      # runs any carded model (its inputs by role)
    card_outputs_beside: bool = False          # further card outputs go beside OUTPUT as <stem>_<name>.tif
    modelless_card: str = ""                   # jobs.* function giving the card when no model is in use

    # -- lookups ---------------------------------------------------------------------------
    def job(self) -> Callable:
        from . import jobs

        return getattr(jobs, self.name)

    def input(self, role: str) -> Optional[Input]:
        return next((i for i in self.inputs if i.role == role), None)

    def slot(self, keyword: str) -> Optional[ModelSlot]:
        return next((m for m in self.models if m.keyword == keyword), None)

    def all_options(self) -> Tuple[Option, ...]:
        return self.options + COMMON

    def option(self, keyword: str) -> Optional[Option]:
        return next((o for o in self.all_options() if o.keyword == keyword), None)

    def defaults(self) -> Dict[str, Any]:
        return {o.keyword: o.default for o in self.all_options()}

    # -- what a set of option values means -------------------------------------------------
    def models_in_use(self, values: Mapping[str, Any]) -> List[ModelSlot]:
        values = {**self.defaults(), **values}
        return [m for m in self.models if holds(m.when, values)]

    def modelless(self, values: Mapping[str, Any]) -> bool:
        """True when these values run without any model (a classical fusion method)."""
        return bool(self.modelless_card) and not self.models_in_use(values)

    def problems(self, values: Mapping[str, Any]) -> List[str]:
        """Option values out of range or not among the choices (options in use only)."""
        merged = {**self.defaults(), **values}
        return [p for o in self.all_options() if o.keyword in values and holds(o.when, merged)
                for p in [o.problem(values[o.keyword])] if p]

    def default_models(self, kwargs: Mapping[str, Any]) -> List[Tuple[str, str]]:
        """(keyword, card task) of the bundled models the job picks for its empty model slots."""
        return [(m.keyword, m.default_task) for m in self.models_in_use(kwargs)
                if m.default_task and not kwargs.get(m.keyword)]

    def output_files(self, kwargs: Mapping[str, Any], card) -> Dict[str, str]:
        """Every file the job writes, by the name its ``RunReport.outputs`` uses."""
        main = os.path.abspath(kwargs["output"])
        files = {card.outputs[0].name: main}
        for out in self.outputs[1:]:
            files[out.keyword] = os.path.abspath(kwargs.get(out.keyword) or sibling_path(main, out.sibling))
        if self.card_outputs_beside:
            files.update({spec.name: sibling_path(main, spec.name) for spec in card.outputs[1:]})
        return files

    def layer_names(self, report_outputs: Mapping[str, str]) -> Dict[str, str]:
        """Layers-panel names of a run's outputs (by the report's output names): the
        registry's for its outputs, the card's own name for further card outputs."""
        names = list(report_outputs)
        return {name: (self.outputs[i].layer_name if i < len(self.outputs) else name.replace("_", " "))
                for i, name in enumerate(names)}

    def help_text(self) -> str:
        """The Processing help: the summary, then one line per parameter."""
        lines = [self.summary, ""]
        lines += [f"{i.param}: {i.help}" for i in self.inputs]
        band_params = [i.bands_param for i in self.inputs if i.bands_param]
        if band_params:
            defaults = "".join(f" {i.bands_param} empty = band{'s' * (len(i.default_bands) > 1)} "
                               f"{','.join(map(str, i.default_bands))}." for i in self.inputs if i.default_bands)
            lines.append(f"{' / '.join(band_params)}: {BANDS_HELP}{defaults}")
        lines += [f"{m.param}: {m.help}" for m in self.models]
        lines += [f"{o.param}: {o.help}" for o in self.all_options() if o.help]
        lines.append(" ".join(f"{o.param}: {o.help}" for o in self.outputs))
        return "\n".join(lines)


def sibling_path(output: str, suffix: str) -> str:
    """Where a further output of ``output`` goes: ``<stem>_<suffix>.tif`` beside it."""
    stem, ext = os.path.splitext(output)
    return f"{stem}_{suffix}{ext or '.tif'}"


# ---------------------------------------------------------------------------------------
# the tools, in the order the dialog offers them

TOOLS: Tuple[ToolSpec, ...] = (
    ToolSpec(
        key="sar_cloud_removal", name="remove_clouds_sar", title="Remove clouds (SAR-assisted)",
        description="Removes clouds from a cloudy Sentinel-2 scene (13 bands, L1C) using a Sentinel-1 scene "
                    "(VV, VH in dB) of about the same date (IB-HFN). Writes the cloud-free scene and a "
                    "cloud-probability map.",
        summary="IB-HFN: restores a cloudy Sentinel-2 image with the help of a Sentinel-1 image of the same area.",
        inputs=(
            Input("optical", "OPTICAL", "Cloudy Sentinel-2 (13 bands)",
                  "cloudy Sentinel-2 L1C, 13 bands in the order B1,B2,B3,B4,B5,B6,B7,B8,B8A,B9,B10,B11,B12, uint16 "
                  "DN (reflectance × 10000). It defines the output grid.",
                  hint="cloudy Sentinel-2, 13 bands", bands=S2_BANDS,
                  bands_param="OPTICAL_BANDS", bands_label="Optical bands (empty = automatic)"),
            Input("sar", "SAR", "Sentinel-1 (VV, VH in dB)",
                  "Sentinel-1 GRD backscatter σ⁰ in dB, bands VV, VH. Another CRS, resolution or extent is fine: "
                  "it is reprojected onto the optical grid on the fly.",
                  hint="Sentinel-1, 2 bands VV,VH (dB)", bands=S1_BANDS,
                  bands_param="SAR_BANDS", bands_label="SAR bands (empty = automatic)"),
        ),
        models=(ModelSlot("model", "MODEL", "Model (empty = bundled IB-HFN)", "Model", ("sar_cloud_removal",),
                          "a SkyClear SAR cloud-removal ONNX model; empty = the bundled IB-HFN.",
                          default_task="sar_cloud_removal"),),
        options=(
            Option("keep_snow", "KEEP_SNOW", BOOL, "Keep snow and ice unchanged",
                   "where the Sentinel-2 snow test (NDSI > 0.4 with bright green and NIR, no cirrus in B10) finds "
                   "snow or ice, copy the input pixel and report it as clear: the network would take it for cloud.",
                   default=True, title="Keep snow and ice unchanged (snow test)"),
            Option("keep_clear", "KEEP_CLEAR", BOOL, "Keep clear pixels unchanged",
                   "where the predicted cloud probability is below CLEAR_THRESHOLD, copy the input pixel unchanged.",
                   default=False, title="Keep clear input pixels unchanged"),
            Option("clear_threshold", "CLEAR_THRESHOLD", FLOAT, "Cloud probability below which a pixel counts as clear",
                   "cloud probability (0–1) below which KEEP_CLEAR keeps a pixel.", default=0.5,
                   title="Clear-sky threshold", minimum=0.0, maximum=1.0, step=0.05,
                   enabled_when=(("keep_clear", (True,)),)),
        ),
        outputs=(
            Output("output", "OUTPUT", "Cloud-free image",
                   "13-band cloud-free GeoTIFF in the input's units (uint16 DN).", layer_name="cloud-free"),
            Output("cloud_probability", "CLOUD_PROBABILITY", "Cloud probability",
                   "float GeoTIFF, 0 = clear, 1 = cloud; by default <OUTPUT name>_cloud_probability.tif "
                   "beside OUTPUT.", sibling="cloud_probability",
                   note="the cloud-probability map (0 = clear, 1 = cloud)", layer_name="cloud probability"),
        ),
        output_suffix="cloudfree_sar"),
    ToolSpec(
        key="optical_cloud_removal", name="remove_clouds_optical", title="Remove clouds (diffusion)",
        description="Removes thin clouds and haze from an optical image alone with Diffusion Enhancement: a "
                    "reference network gives a first clear estimate and a few diffusion steps add detail.",
        summary="Diffusion Enhancement: removes clouds from an RGB (or RGB+NIR) image without SAR. A reference "
                "network gives a first estimate; a diffusion model refines its texture.",
        inputs=(Input("optical", "INPUT", "Cloudy image (RGB)",
                      "cloudy image, bands R,G,B (8-bit for the bundled models). It defines the output grid.",
                      hint="cloudy optical image", bands=RGB_BANDS,
                      bands_param="INPUT_BANDS", bands_label="Bands (empty = automatic)"),),
        models=(
            ModelSlot("model", "MODEL", "Reference model (empty = bundled)", "Model",
                      ("optical_cloud_removal_reference",),
                      "the reference-network ONNX model; empty = bundled (trained on RICE).",
                      default_task="optical_cloud_removal_reference"),
            ModelSlot("step_model", "STEP_MODEL", "Diffusion step model (empty = bundled)", "Diffusion step model",
                      ("optical_cloud_removal_diffusion_step",),
                      "the per-step diffusion ONNX model matching MODEL; empty = bundled.",
                      default_task="optical_cloud_removal_diffusion_step", when=(("mode", ("diffusion",)),)),
        ),
        options=(
            Option("mode", "MODE", CHOICE, "Mode",
                   "diffusion (reference + sampling) or reference (fast, reference network only).",
                   default="diffusion", choices=OPTICAL_MODES, section="model"),
            Option("steps", "STEPS", INT, "Sampling steps (-1 = the step model's validated count)",
                   "number of DDIM steps of each sampling run (the step model runs steps × samples times per "
                   "tile): more is slower; -1 = the count stored in the step model's card.", default=None, from_model=True,
                   title="Diffusion steps", minimum=1, maximum=1000, when=(("mode", ("diffusion",)),)),
            Option("samples", "SAMPLES", INT, "Samples averaged (-1 = the step model's validated count)",
                   "number of sampling runs from independent noise whose mean is the output; the step "
                   "model runs steps × samples times per tile; -1 = the count stored in the step model's "
                   "card (chosen with the steps on validation pairs).", default=None, from_model=True,
                   title="Samples averaged", minimum=1, maximum=100, when=(("mode", ("diffusion",)),)),
            Option("eta", "ETA", FLOAT, "η, minimum reference weight (-1 = the step model's validated value)",
                   "η, the lower clamp of the weight given to the reference network (0–1; paper: 0.3; "
                   "1 = the reference network alone); -1 = the value chosen on validation pairs and "
                   "stored in the step model's card.", default=None, from_model=True,
                   title="η (reference weight floor)", minimum=0.0, maximum=1.0, step=0.05,
                   when=(("mode", ("diffusion",)),)),
            Option("seed", "SEED", INT, "Random seed",
                   "noise seed; the same seed and input give the same output.", default=0, title="Seed",
                   minimum=0, maximum=2 ** 31 - 1, when=(("mode", ("diffusion",)),)),
        ),
        outputs=(Output("output", "OUTPUT", "Cloud-free image", "GeoTIFF in the input's dtype on the input's grid.",
                        layer_name="cloud-free"),),
        output_suffix="cloudfree"),
    ToolSpec(
        key="fusion", name="fuse_sar_optical", title="Fuse SAR and optical",
        description="Fuses a SAR image into an optical image (hierarchical fusion): the optical colours are kept "
                    "and SAR structure is added. Classical methods need no model.",
        summary="Fuses a SAR image into an optical image: the result keeps the optical colours and adds SAR "
                "structure (the luminance is fused, colour is recomposed from the optical Cb, Cr).",
        inputs=(
            Input("sar", "SAR", "SAR image",
                  "one band (8-bit display values, or σ⁰ in dB for float rasters); reprojected onto the optical "
                  "grid on the fly.", hint="SAR, 1 band", bands=("SAR",),
                  bands_param="SAR_BANDS", bands_label="SAR band (empty = band 1)", default_bands=(1,)),
            Input("optical", "OPTICAL", "Optical image (RGB)",
                  "RGB (a grey 1-band image is used as R = G = B); it defines the output grid.",
                  hint="optical RGB", bands=RGB_BANDS,
                  bands_param="OPTICAL_BANDS", bands_label="Optical bands (empty = automatic)"),
        ),
        models=(ModelSlot("model", "MODEL", "Fusion model (network method; empty = bundled)", "Model",
                          ("sar_optical_fusion",), "the fusion network for METHOD network; empty = bundled.",
                          default_task="sar_optical_fusion", when=(("method", ("network",)),)),),
        options=(
            Option("method", "METHOD", CHOICE, "Method",
                   "network (the bundled hierarchical fusion network or MODEL), laplacian (Laplacian pyramid, "
                   "max-abs detail), guided (guided-filter base/detail weighting), average, optical (optical "
                   "only, a baseline).", default="network", choices=FUSION_METHODS, title="Fusion method",
                   # the network is not yet above both classical methods (models/zoo card): the dialog
                   # suggests the best classical one first
                   dialog_default="laplacian"),
            Option("despeckle", "DESPECKLE", BOOL, "Despeckle SAR (Lee filter)",
                   "Lee-filter the SAR before fusion.", default=False, title="Despeckle the SAR first (Lee filter)"),
        ),
        outputs=(Output("output", "OUTPUT", "Fused image", "fused RGB GeoTIFF in the optical dtype.",
                        layer_name="fused"),),
        output_suffix="fused", modelless_card="fusion_card"),
    ToolSpec(
        key="custom", name="run_model", title="Run custom model",
        description="Runs any ONNX model carrying a SkyClear model card over an optical raster (and a SAR raster "
                    "when the model takes one).",
        summary="Runs any ONNX model that carries a SkyClear model card over a raster, tile by tile; its card "
                "says which bands it takes and how values are scaled.",
        inputs=(
            Input("optical", "OPTICAL", "Optical raster (defines the grid)",
                  "the raster that defines the output grid (CRS, pixel size, extent).",
                  hint="any raster the model card accepts",
                  bands_param="OPTICAL_BANDS", bands_label="Optical bands (e.g. 4,3,2; empty = automatic)"),
            Input("sar", "SAR", "SAR raster",
                  "optional second raster for models with a SAR input; it is reprojected and resampled onto the "
                  "optical grid on the fly, so it may use another CRS or resolution.", required=False,
                  bands_param="SAR_BANDS", bands_label="SAR bands (e.g. 1,2; empty = automatic)"),
        ),
        models=(ModelSlot("model", "MODEL", "Model (.onnx with a SkyClear card)", "Model",
                          ("generic", "sar_cloud_removal", "optical_cloud_removal_reference", "sar_optical_fusion"),
                          "the .onnx file; its card says which bands it takes and how values are scaled."),),
        options=(),
        outputs=(Output("output", "OUTPUT", "Output",
                        "GeoTIFF on the optical grid; further model outputs are written beside it as "
                        "<name>_<output>.tif. Nodata pixels of the inputs stay nodata."),),
        output_suffix="model", generic=True, card_outputs_beside=True),
)
TOOLS_BY_KEY: Dict[str, ToolSpec] = {t.key: t for t in TOOLS}
TOOLS_BY_NAME: Dict[str, ToolSpec] = {t.name: t for t in TOOLS}


def tool(key_or_name: str) -> ToolSpec:
    """The spec by dialog key ("fusion") or job name ("fuse_sar_optical")."""
    found = TOOLS_BY_KEY.get(key_or_name) or TOOLS_BY_NAME.get(key_or_name)
    if found is None:
        raise KeyError(f"no SkyClear tool {key_or_name!r}; tools: {', '.join(TOOLS_BY_NAME)}")
    return found


def with_defaults(function: Callable) -> Callable:
    """Make ``jobs.<name>`` take its option defaults from the registry and refuse option
    values out of range before any file is opened (so every front end gets the same)."""
    spec = TOOLS_BY_NAME[function.__name__]
    defaults = spec.defaults()

    @functools.wraps(function)
    def call(**kwargs):
        problems = spec.problems(kwargs)
        if problems:
            from .errors import InputError

            raise InputError("; ".join(problems))
        return function(**{**defaults, **kwargs})

    return call


# ---------------------------------------------------------------------------------------
# models and tools


def title_for_card_task(card_task: str) -> str:
    """The tool a model of ``card_task`` is made for (the generic runner when none is)."""
    for spec in TOOLS:
        if not spec.generic and any(card_task in m.card_tasks for m in spec.models):
            return spec.title
    return next(spec.title for spec in TOOLS if spec.generic)


def card_problem(spec: ToolSpec, card, slot: str = "model") -> Optional[str]:
    """None when ``card`` fits the tool's model slot, else a refusal that says where it fits."""
    wanted = spec.slot(slot).card_tasks
    if card.task in wanted:
        fillable = {i.role for i in spec.inputs}
        if spec.generic and any(t.role not in fillable for t in card.inputs):
            odd = next(t.role for t in card.inputs if t.role not in fillable)
            return (f"Model '{card.name}' has {article(odd)} {odd} input, which the custom runner cannot fill. "
                    f"Use the task it was made for.")
        return None
    have = CARD_TASK_LABELS.get(card.task, card.task)
    need = " or ".join(CARD_TASK_LABELS.get(t, t) for t in wanted)
    return (f"Model '{card.name}' is {article(have)} {have} model (card task '{card.task}'), but this slot needs "
            f"{article(need)} {need} model. Choose it under “{title_for_card_task(card.task)}” instead, or pick "
            "another model.")


def require_card(spec: ToolSpec, slot: str, card, path: str) -> None:
    """Refuse a model whose card task does not fit the slot (what a run and a batch plan check)."""
    wanted = spec.slot(slot).card_tasks
    if card.task not in wanted:
        from .errors import ModelCardError

        need = " or ".join(f"'{t}'" for t in wanted)
        raise ModelCardError(f"{os.path.basename(path)} is a '{card.task}' model, not a {need} model that "
                             f"{spec.name} needs; choose a model made for this tool")


def available(spec: ToolSpec) -> Tuple[bool, str]:
    """Whether the tool runs out of the box (bundled models present), and why not."""
    if spec.modelless_card or not any(m.default_task for m in spec.models):
        return True, "ready"
    from .zoo import bundled_models

    if bundled_models(spec.models[0].default_task):
        return True, "bundled model available"
    return False, "no bundled model yet: choose a model file"
