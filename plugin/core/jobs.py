"""The user-facing jobs, one function per tool of the registry (``tools.TOOLS``), shared by
Processing, the dialog's QgsTask, the batch runner and scripts. All arguments are
keyword-only; each returns the engine's ``RunReport``. Option defaults and ranges come
from the registry (``tools.with_defaults``), not from these signatures.

``progress(fraction, message)`` and ``is_cancelled()`` are polled once per tile batch;
``extent`` is (xmin, ymin, xmax, ymax) in the optical raster's CRS, or None for all of it;
``compression`` is the output GeoTIFFs' (deflate, zstd or none); ``value_scale`` is None
(check the value range: warn, or refuse when the output would be flat),
"auto" or a gain (see ``bands.apply_value_range``).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .bands import apply_value_range
from .engine import RunReport, grid_input, open_sources, run_tiled
from .errors import Cancelled, InputError, ModelCardError
from .model_card import parse_card
from .pipelines import generic
from .raster_io import describe_raster, output_format_problem
from .tools import require_card, sibling_path, tool, with_defaults
from .zoo import default_model

log = logging.getLogger("skyclear")

SAR_COVERAGE_WARN = 0.99   # below this share of the optical grid covered by the SAR, runs and the dialog warn

Bands = Optional[Sequence[int]]


def _run(card, paths, processor, outputs, *, provider, tile_size, overlap, band_lists, labels,
         extent, progress, is_cancelled, block_hook=None, tags=None, value_scale=None,
         compression="deflate", s2_zero_nodata=False) -> RunReport:
    sources = open_sources(card, paths, band_lists, labels, extent, s2_zero_nodata=s2_zero_nodata)
    try:
        card, scale_tags = apply_value_range(card, sources, value_scale, labels)
        grid = sources[grid_input(card).name].grid
        for spec in card.inputs_with_role("sar"):
            covered = sar_coverage(sources[spec.name], grid)
            if covered < SAR_COVERAGE_WARN:
                log.warning(f"SAR: {os.path.basename(paths[spec.name])} covers only {100 * covered:.0f} % of the "
                            + ("chosen extent" if extent is not None else "optical raster")
                            + "; the rest of the output will be nodata")
        if hasattr(processor, "bind_grid"):  # processors that must know where the image ends
            processor.bind_grid(grid.height, grid.width)
        return run_tiled(card, sources, processor, outputs, tile_size, overlap, provider=provider,
                         progress=progress, is_cancelled=is_cancelled, block_hook=block_hook,
                         extra_tags=dict(tags or {}, **scale_tags), compression=compression)
    finally:
        for source in sources.values():
            source.close()


def _model_tags(path: str) -> Dict[str, str]:
    return {"SKYCLEAR_MODEL_FILE": os.path.basename(path)}


# ---------------------------------------------------------------------------------------


@with_defaults
def run_model(*, model: str, optical: str, output: str, sar: Optional[str] = None, tile_size, overlap, device,
              optical_bands: Bands = None, sar_bands: Bands = None, extent, progress=None, is_cancelled=None,
              value_scale, compression) -> RunReport:
    """Any carded model; extra model outputs go beside ``output`` as ``<stem>_<name>.tif``."""
    session, card, provider = generic.load_model(model, device)
    paths = generic.inputs_by_role(card, optical, sar)
    outputs = {card.outputs[0].name: output}
    outputs.update({spec.name: sibling_path(output, spec.name) for spec in card.outputs[1:]})
    return _run(card, paths, generic.OnnxProcessor(session, card), outputs, provider=provider,
                tile_size=tile_size, overlap=overlap,
                band_lists=_band_lists(card, optical_bands, sar_bands), labels=_labels(card),
                extent=extent, progress=progress, is_cancelled=is_cancelled, tags=_model_tags(model),
                value_scale=value_scale, compression=compression)


def _band_lists(card, optical_bands: Bands, sar_bands: Bands) -> Dict[str, Sequence[int]]:
    chosen = {"optical": optical_bands, "sar": sar_bands}
    return {spec.name: chosen[spec.role] for spec in card.inputs if chosen.get(spec.role)}


def _labels(card) -> Dict[str, str]:
    return {spec.name: spec.role.upper() for spec in card.inputs}


# ---------------------------------------------------------------------------------------
# SAR-assisted cloud removal


def _with_cloud_probability(card):
    """The card plus a ``cloud_probability`` output (1 - clear-sky probability, 0-1 float)."""
    raw = card.to_dict()
    raw["outputs"] = raw["outputs"] + [{
        "name": "cloud_probability", "dtype": "float32",
        "bands": [{"name": "cloud_probability", "meaning": "probability that the pixel is cloudy",
                   "clip": [0.0, 1.0], "scale": 1.0, "offset": 0.0}]}]
    return parse_card(raw)


@with_defaults
def remove_clouds_sar(*, optical: str, sar: str, output: str, cloud_probability: Optional[str] = None,
                      model: Optional[str] = None, keep_snow: bool, keep_clear: bool, clear_threshold: float,
                      tile_size, overlap,
                      device, optical_bands: Bands = None, sar_bands: Bands = None, extent, progress=None,
                      is_cancelled=None, value_scale, compression) -> RunReport:
    """Cloud-free optical image in the input's units plus a cloud-probability map.

    With ``keep_snow``, snow and ice (the Sentinel-2 snow test, ``snow_weight``) keep the input
    value and count as clear; with ``keep_clear``, pixels whose cloud probability is below
    ``clear_threshold`` keep the input value unchanged.
    """
    from .engine import preprocess
    from .pipelines.sar_cloud_removal import (SNOW_TEST_BANDS, SarCloudRemovalProcessor, keep_clear_pixels,
                                              keep_snow as blend_snow, snow_test_possible, snow_weight)
    from .pipelines.sar_cloud_removal import cloud_probability as to_cloud

    spec = tool("remove_clouds_sar")
    model = model or default_model(spec.slot("model").default_task)
    session, card, provider = generic.load_model(model, device)
    require_card(spec, "model", card, model)
    if len(card.outputs) < 2:
        raise ModelCardError(f"{model}: a SAR cloud-removal model has two outputs (the restored image, then the "
                             f"clear-sky probability), but its card lists {len(card.outputs)} "
                             f"({', '.join(o.name for o in card.outputs)}). Fix: list both outputs in the card")
    if not sar:
        raise InputError("SAR: a Sentinel-1 raster (VV, VH in dB) is required for SAR-assisted cloud removal")
    full_card = _with_cloud_probability(card)
    restored_name, clear_name = card.outputs[0].name, card.outputs[1].name
    model_processor = SarCloudRemovalProcessor(session, card)

    def processor(inputs, origins):
        result = model_processor(inputs, origins)
        return {restored_name: result[restored_name], "cloud_probability": to_cloud(result[clear_name])}

    optical_spec = card.inputs_with_role("optical")[0]
    snow_state = "on" if keep_snow else "off"
    if keep_snow and not snow_test_possible(optical_spec.band_names):
        keep_snow, snow_state = False, "skipped: the model's optical input has no B3, B8 and B11"

    # the snow test's bands only, as reflectance (the card's scaling)
    snow_bands = [i for i, b in enumerate(optical_spec.bands) if b.name.upper() in SNOW_TEST_BANDS]
    snow_spec = replace(optical_spec, bands=[optical_spec.bands[i] for i in snow_bands])

    def block_hook(raw, inputs_raw, valid):
        optical_raw = inputs_raw[optical_spec.name]
        if keep_snow:
            weight = snow_weight(preprocess(optical_raw[snow_bands], snow_spec), snow_spec.band_names) * valid
            raw[restored_name], raw["cloud_probability"] = blend_snow(
                raw[restored_name], optical_raw, weight, raw["cloud_probability"])
        if keep_clear:
            raw[restored_name] = keep_clear_pixels(raw[restored_name], optical_raw, raw["cloud_probability"][0],
                                                   clear_threshold, valid)
        return raw

    outputs = {restored_name: output,
               "cloud_probability": cloud_probability or sibling_path(output, "cloud_probability")}
    paths = generic.inputs_by_role(card, optical, sar)
    return _run(full_card, paths, processor, outputs, provider=provider, tile_size=tile_size,
                overlap=overlap, band_lists=_band_lists(card, optical_bands, sar_bands),
                labels=_labels(card), extent=extent, progress=progress, is_cancelled=is_cancelled,
                value_scale=value_scale, compression=compression, s2_zero_nodata=True,
                block_hook=block_hook if keep_snow or keep_clear else None,
                tags=dict(_model_tags(model), SKYCLEAR_KEEP_SNOW=snow_state, SKYCLEAR_KEEP_CLEAR=str(keep_clear),
                          SKYCLEAR_CLEAR_THRESHOLD=str(clear_threshold)))


# ---------------------------------------------------------------------------------------
# optical-only cloud removal (Diffusion Enhancement)


@with_defaults
def remove_clouds_optical(*, optical: str, output: str, model: Optional[str] = None,
                          step_model: Optional[str] = None, mode: str, steps: Optional[int],
                          samples: Optional[int], eta: Optional[float], seed: int,
                          tile_size, overlap, device, optical_bands: Bands = None, extent, progress=None,
                          is_cancelled=None, value_scale, compression) -> RunReport:
    """Reference model E alone (``mode="reference"``) or E + the DE sampling loop; ``steps``,
    ``samples`` and ``eta`` None = the values stored in the step model's card (chosen on validation
    pairs)."""
    from .pipelines.optical_cloud_removal import (DiffusionProcessor, ReferenceProcessor, default_samples,
                                                  default_steps)

    spec = tool("remove_clouds_optical")
    model = model or default_model(spec.slot("model").default_task)
    session, card, provider = generic.load_model(model, device)
    require_card(spec, "model", card, model)
    tags = dict(_model_tags(model), SKYCLEAR_MODE=mode)
    if mode == "reference":
        processor = ReferenceProcessor(session)
    else:
        step_model = step_model or default_model(spec.slot("step_model").default_task)
        step_session, step_card, _ = generic.load_model(step_model, device)
        require_card(spec, "step_model", step_card, step_model)
        if step_card.inputs_with_role("optical")[0].band_names != card.inputs[0].band_names:
            raise InputError(f"{os.path.basename(step_model)} and {os.path.basename(model)} take different "
                             "bands; choose a matching reference/step pair")
        def on_step(i, total):
            if is_cancelled and is_cancelled():
                raise Cancelled("cancelled by the user; no output was written")

        steps = default_steps(step_session) if steps is None else steps
        samples = default_samples(step_session) if samples is None else samples
        try:
            processor = DiffusionProcessor(session, step_session, steps=steps, eta=eta, seed=seed, on_step=on_step,
                                           samples=samples)
        except ValueError as exc:   # each message names its parameter
            raise InputError(str(exc)) from exc
        tags.update(SKYCLEAR_STEP_MODEL_FILE=os.path.basename(step_model), SKYCLEAR_STEPS=str(processor.steps),
                    SKYCLEAR_SAMPLES=str(processor.samples),
                    SKYCLEAR_ETA=str(processor.eta), SKYCLEAR_SEED=str(seed))
    return _run(card, {card.inputs[0].name: optical}, processor, {card.outputs[0].name: output},
                provider=provider, tile_size=tile_size, overlap=overlap,
                band_lists=_band_lists(card, optical_bands, None), labels={card.inputs[0].name: "INPUT"},
                extent=extent, progress=progress, is_cancelled=is_cancelled, tags=tags, value_scale=value_scale,
                compression=compression)


# ---------------------------------------------------------------------------------------
# SAR-optical fusion



def _despeckling(processor, card, despeckle: bool):
    """Wrap ``processor`` so the SAR tile is Lee-filtered (in raster units) before fusion."""
    if not despeckle:
        return processor
    from .despeckle import lee_filter, lee_filter_db
    from .engine import postprocess, preprocess

    sar_spec = card.inputs_with_role("sar")[0]
    in_db = any(b.clip and b.clip[1] <= 0 for b in sar_spec.bands)

    def despeckled(inputs, origins):
        raw = postprocess(inputs[sar_spec.name], sar_spec)
        filt = lee_filter_db if in_db else lee_filter
        raw = np.stack([np.stack([filt(band) for band in tile]) for tile in raw]).astype(np.float32)
        return processor(dict(inputs, **{sar_spec.name: preprocess(raw, sar_spec).astype(np.float32)}), origins)

    return despeckled


@with_defaults
def fuse_sar_optical(*, sar: str, optical: str, output: str, method: str, model: Optional[str] = None,
                     despeckle: bool, tile_size, overlap, device, optical_bands: Bands = None,
                     sar_bands: Bands = None, extent, progress=None, is_cancelled=None, value_scale,
                     compression) -> RunReport:
    """Fused image on the optical grid: the bundled/custom network or a classical method."""
    from .pipelines.fusion_classical import ClassicalFusionProcessor

    spec = tool("fuse_sar_optical")
    if not sar:
        raise InputError("SAR: a SAR raster is required for fusion")
    tags = {"SKYCLEAR_FUSION_METHOD": method, "SKYCLEAR_DESPECKLE": str(despeckle)}
    if spec.models_in_use({"method": method}):
        model = model or default_model(spec.slot("model").default_task)
        session, card, provider = generic.load_model(model, device)
        require_card(spec, "model", card, model)
        processor = _despeckling(generic.OnnxProcessor(session, card), card, despeckle)
        tags.update(_model_tags(model))
    else:
        card_dict = fusion_card({"method": method, "despeckle": despeckle},
                                {"sar": describe_raster(sar)["dtype"], "optical": describe_raster(optical)["dtype"]})
        card = parse_card(card_dict)
        processor, provider = ClassicalFusionProcessor.from_card(card_dict), "numpy"
    paths = generic.inputs_by_role(card, optical, sar)
    return _run(card, paths, processor, {card.outputs[0].name: output}, provider=provider,
                tile_size=tile_size, overlap=overlap, band_lists=_band_lists(card, optical_bands, sar_bands),
                labels=_labels(card), extent=extent, progress=progress, is_cancelled=is_cancelled, tags=tags,
                value_scale=value_scale, compression=compression)


def fusion_card(options: Mapping, dtypes: Mapping[str, str]) -> Dict:
    """The card ``fuse_sar_optical`` runs a classical method with (``options``: method,
    despeckle; ``dtypes``: raster dtype by role): what estimates and plans tile with."""
    from .pipelines.fusion_classical import classical_fusion_card

    return classical_fusion_card(options["method"], sar_dtype=dtypes["sar"], optical_dtype=dtypes["optical"],
                                 despeckle="lee" if options.get("despeckle") else None)


# ---------------------------------------------------------------------------------------
# checks before a run: the engine's own, without reading a tile


@dataclass(frozen=True)
class GridCheck:
    """How the SAR raster lands on the optical grid (``check_grids``)."""
    sar_crs: str                  # "" = no CRS
    optical_crs: str
    reprojected: bool             # another CRS: warped onto the optical grid
    resampled: bool               # not a whole-pixel part of the optical grid: resampled
    coverage: float               # fraction of the optical grid (or extent) the SAR covers


def check_grids(*, optical: str, sar: Optional[str] = None, extent=None) -> GridCheck:
    """Open the rasters as the engine does (``RasterSource`` on the optical grid, cut to
    ``extent``): raises its ``InputError`` when they cannot be aligned or the extent misses
    the optical raster; else says how the SAR will be aligned."""
    from .raster_io import RasterSource, subgrid

    with RasterSource(optical, [1], "OPTICAL") as whole:
        grid = subgrid(whole.grid, extent) if extent is not None else whole.grid
    if not sar:
        crs = "" if grid.crs is None else grid.crs.to_string()
        return GridCheck(crs, crs, False, False, 1.0)
    with RasterSource(sar, [1], "SAR", grid=grid) as source:
        ds = source.dataset

        def name(crs) -> str:
            return "" if crs is None else crs.to_string()

        return GridCheck(name(ds.crs), name(grid.crs), ds.crs != grid.crs and ds.crs is not None,
                         source.aligned, sar_coverage(source, grid))


def sar_coverage(source, grid) -> float:
    """The fraction of ``grid``'s area that the raster behind ``source`` (an open ``RasterSource``
    on that grid) covers; 1.0 when it is not georeferenced (it is then taken pixel for pixel)."""
    from rasterio.warp import transform_bounds

    ds = source.dataset
    if not source.aligned or ds.crs is None or grid.crs is None:
        return 1.0
    box = transform_bounds(ds.crs, grid.crs, *ds.bounds, densify_pts=21)
    gx0, gy0, gx1, gy1 = grid.bounds
    inter = max(0.0, min(box[2], gx1) - max(box[0], gx0)) * max(0.0, min(box[3], gy1) - max(box[1], gy0))
    area = (gx1 - gx0) * (gy1 - gy0)
    return inter / area if area > 0 else 1.0


def output_problems(outputs: Sequence[Tuple[str, str]],
                    inputs: Optional[Sequence[Tuple[str, str]]] = None) -> List[str]:
    """What the writer and ``atomic.check_output_paths`` would refuse, for (label, path)
    outputs and inputs: a missing or read-only folder, a folder as file; with ``inputs``,
    also two outputs at one path and an output that is an input."""
    from .atomic import check_output_paths

    problems = []
    for _, path in outputs:
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            problems.append(f"output {path} is a folder; give a file name such as {path}/result.tif")
        elif not os.path.isdir(folder):
            problems.append(f"output folder does not exist: {folder}")
        elif not os.access(folder, os.W_OK):
            problems.append(f"output folder is not writable: {folder}")
        elif output_format_problem(path):
            problems.append(output_format_problem(path))
    if inputs is not None:
        try:
            check_output_paths(outputs, inputs)
        except InputError as exc:
            problems.append(str(exc))
    return list(dict.fromkeys(problems))   # one line per folder, however many outputs it would hold
