"""The user-facing jobs, one function per tool, shared by Processing, the dialog's QgsTask
and scripts. All arguments are keyword-only; each returns the engine's ``RunReport``.

``progress(fraction, message)`` and ``is_cancelled()`` are polled once per tile batch;
``extent`` is (xmin, ymin, xmax, ymax) in the optical raster's CRS, or None for all of it;
``compression`` is the output GeoTIFFs' (deflate, zstd or none); ``value_scale`` is None
(check the value range: warn, or refuse when the output would be flat),
"auto" or a gain (see ``bands.apply_value_range``).
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .bands import apply_value_range
from .choices import FUSION_METHODS, OPTICAL_MODES
from .engine import RunReport, grid_input, open_sources, run_tiled
from .errors import Cancelled, InputError
from .model_card import parse_card
from .pipelines import generic
from .raster_io import describe_raster
from .zoo import bundled_models, default_model, require_task

Bands = Optional[Sequence[int]]


def _run(card, paths, processor, outputs, *, provider, tile_size, overlap, band_lists, labels,
         extent, progress, is_cancelled, block_hook=None, tags=None, value_scale=None,
         compression="deflate") -> RunReport:
    sources = open_sources(card, paths, band_lists, labels, extent)
    try:
        card, scale_tags = apply_value_range(card, sources, value_scale, labels)
        if hasattr(processor, "bind_grid"):  # processors that must know where the image ends
            grid = sources[grid_input(card).name].grid
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


def run_model(*, model: str, optical: str, output: str, sar: Optional[str] = None, tile_size=None,
              overlap=None, device="auto", optical_bands: Bands = None, sar_bands: Bands = None,
              extent=None, progress=None, is_cancelled=None, value_scale=None,
              compression="deflate") -> RunReport:
    """Any carded model; extra model outputs go beside ``output`` as ``<stem>_<name>.tif``."""
    session, card, provider = generic.load_model(model, device)
    paths = generic.inputs_by_role(card, optical, sar)
    outputs = {card.outputs[0].name: output}
    outputs.update({spec.name: generic.sibling_path(output, spec.name) for spec in card.outputs[1:]})
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


def remove_clouds_sar(*, optical: str, sar: str, output: str, cloud_probability: Optional[str] = None,
                      model: Optional[str] = None, keep_clear: bool = False, clear_threshold: float = 0.5,
                      tile_size=None, overlap=None, device="auto", optical_bands: Bands = None,
                      sar_bands: Bands = None, extent=None, progress=None, is_cancelled=None,
                      value_scale=None, compression="deflate") -> RunReport:
    """Cloud-free optical image in the input's units plus a cloud-probability map.

    With ``keep_clear``, pixels whose cloud probability is below ``clear_threshold`` keep the
    input value unchanged.
    """
    from .pipelines.sar_cloud_removal import SarCloudRemovalProcessor, keep_clear_pixels
    from .pipelines.sar_cloud_removal import cloud_probability as to_cloud

    model = model or default_model("sar_cloud_removal")
    session, card, provider = generic.load_model(model, device)
    require_task(card, "sar_cloud_removal", model)
    if not sar:
        raise InputError("SAR: a Sentinel-1 raster (VV, VH in dB) is required for SAR-assisted cloud removal")
    if not 0.0 <= clear_threshold <= 1.0:
        raise InputError(f"clear threshold must be between 0 and 1, got {clear_threshold}")
    full_card = _with_cloud_probability(card)
    restored_name, clear_name = card.outputs[0].name, card.outputs[1].name
    model_processor = SarCloudRemovalProcessor(session, card)

    def processor(inputs, origins):
        result = model_processor(inputs, origins)
        return {restored_name: result[restored_name], "cloud_probability": to_cloud(result[clear_name])}

    optical_input = card.inputs_with_role("optical")[0].name

    def keep_clear_hook(raw, inputs_raw, valid):
        raw[restored_name] = keep_clear_pixels(raw[restored_name], inputs_raw[optical_input],
                                               raw["cloud_probability"][0], clear_threshold, valid)
        return raw

    outputs = {restored_name: output,
               "cloud_probability": cloud_probability or generic.sibling_path(output, "cloud_probability")}
    paths = generic.inputs_by_role(card, optical, sar)
    return _run(full_card, paths, processor, outputs, provider=provider, tile_size=tile_size,
                overlap=overlap, band_lists=_band_lists(card, optical_bands, sar_bands),
                labels=_labels(card), extent=extent, progress=progress, is_cancelled=is_cancelled,
                value_scale=value_scale, compression=compression, block_hook=keep_clear_hook if keep_clear else None,
                tags=dict(_model_tags(model), SKYCLEAR_KEEP_CLEAR=str(keep_clear),
                          SKYCLEAR_CLEAR_THRESHOLD=str(clear_threshold)))


# ---------------------------------------------------------------------------------------
# optical-only cloud removal (Diffusion Enhancement)


def remove_clouds_optical(*, optical: str, output: str, model: Optional[str] = None,
                          step_model: Optional[str] = None, mode: str = "diffusion", steps: int = 10,
                          eta: float = 0.3, seed: int = 0, tile_size=None, overlap=None, device="auto",
                          optical_bands: Bands = None, extent=None, progress=None,
                          is_cancelled=None, value_scale=None, compression="deflate") -> RunReport:
    """Reference model E alone (``mode="reference"``) or E + the DE sampling loop."""
    from .pipelines.optical_cloud_removal import DiffusionProcessor, ReferenceProcessor

    if mode not in OPTICAL_MODES:
        raise InputError(f"mode must be 'diffusion' or 'reference', got {mode!r}")
    model = model or default_model("optical_cloud_removal_reference")
    session, card, provider = generic.load_model(model, device)
    require_task(card, "optical_cloud_removal_reference", model)
    tags = dict(_model_tags(model), SKYCLEAR_MODE=mode)
    if mode == "reference":
        processor = ReferenceProcessor(session)
    else:
        if steps < 1:
            raise InputError(f"steps must be at least 1, got {steps}")
        if not 0.0 <= eta <= 1.0:
            raise InputError(f"eta must be between 0 and 1, got {eta}")
        step_model = step_model or default_model("optical_cloud_removal_diffusion_step")
        step_session, step_card, _ = generic.load_model(step_model, device)
        require_task(step_card, "optical_cloud_removal_diffusion_step", step_model)
        if step_card.inputs_with_role("optical")[0].band_names != card.inputs[0].band_names:
            raise InputError(f"{os.path.basename(step_model)} and {os.path.basename(model)} take different "
                             "bands; choose a matching reference/step pair")
        def on_step(i, total):
            if is_cancelled and is_cancelled():
                raise Cancelled("cancelled by the user; no output was written")

        try:
            processor = DiffusionProcessor(session, step_session, steps=steps, eta=eta, seed=seed, on_step=on_step)
        except ValueError as exc:
            raise InputError(f"steps: {exc}") from exc
        tags.update(SKYCLEAR_STEP_MODEL_FILE=os.path.basename(step_model), SKYCLEAR_STEPS=str(steps),
                    SKYCLEAR_ETA=str(eta), SKYCLEAR_SEED=str(seed))
    return _run(card, {card.inputs[0].name: optical}, processor, {card.outputs[0].name: output},
                provider=provider, tile_size=tile_size, overlap=overlap,
                band_lists=_band_lists(card, optical_bands, None), labels=_labels(card), extent=extent,
                progress=progress, is_cancelled=is_cancelled, tags=tags, value_scale=value_scale,
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


def fuse_sar_optical(*, sar: str, optical: str, output: str, method: str = "network",
                     model: Optional[str] = None, despeckle: bool = False, tile_size=None, overlap=None,
                     device="auto", optical_bands: Bands = None, sar_bands: Bands = None, extent=None,
                     progress=None, is_cancelled=None, value_scale=None,
                     compression="deflate") -> RunReport:
    """Fused image on the optical grid: the bundled/custom network or a classical method."""
    from .pipelines.fusion_classical import ClassicalFusionProcessor, classical_fusion_card

    if method not in FUSION_METHODS:
        raise InputError(f"unknown fusion method {method!r}; choose one of {', '.join(FUSION_METHODS)}")
    if not sar:
        raise InputError("SAR: a SAR raster is required for fusion")
    tags = {"SKYCLEAR_FUSION_METHOD": method, "SKYCLEAR_DESPECKLE": str(despeckle)}
    if method == "network":
        model = model or default_model("sar_optical_fusion")
        session, card, provider = generic.load_model(model, device)
        require_task(card, "sar_optical_fusion", model)
        processor = _despeckling(generic.OnnxProcessor(session, card), card, despeckle)
        tags.update(_model_tags(model))
    else:
        card_dict = classical_fusion_card(method, sar_dtype=describe_raster(sar)["dtype"],
                                          optical_dtype=describe_raster(optical)["dtype"],
                                          despeckle="lee" if despeckle else None)
        card = parse_card(card_dict)
        processor, provider = ClassicalFusionProcessor.from_card(card_dict), "numpy"
    paths = generic.inputs_by_role(card, optical, sar)
    return _run(card, paths, processor, {card.outputs[0].name: output}, provider=provider,
                tile_size=tile_size, overlap=overlap, band_lists=_band_lists(card, optical_bands, sar_bands),
                labels=_labels(card), extent=extent, progress=progress, is_cancelled=is_cancelled, tags=tags,
                value_scale=value_scale, compression=compression)


# ---------------------------------------------------------------------------------------
# what the dialog offers

TASKS: Dict[str, Dict] = {
    "sar_cloud_removal": {"title": "SAR-assisted cloud removal", "function": remove_clouds_sar,
                          "card_task": "sar_cloud_removal"},
    "optical_cloud_removal": {"title": "Optical cloud removal (diffusion)", "function": remove_clouds_optical,
                              "card_task": "optical_cloud_removal_reference"},
    "fusion": {"title": "SAR–optical fusion", "function": fuse_sar_optical, "card_task": "sar_optical_fusion"},
    "custom": {"title": "Run custom model", "function": run_model, "card_task": None},
}


def available(task_key: str) -> Tuple[bool, str]:
    """Whether a task can run out of the box, and why not."""
    task = TASKS[task_key]
    if task["card_task"] is None or task_key == "fusion":
        return True, "ready"
    if bundled_models(task["card_task"]):
        return True, "bundled model available"
    return False, "no bundled model yet: choose a model file"
