"""Run any carded ONNX model over an optical raster (and an optional SAR raster)."""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

import numpy as np

from ..engine import RunReport, open_sources, run_tiled
from ..errors import InputError
from ..model_card import ModelCard, card_from_session
from ..runtime import create_session


class OnnxProcessor:
    """Tile processor that feeds the batch straight to an onnxruntime session."""

    def __init__(self, session, card: ModelCard, output_names: Optional[Sequence[str]] = None):
        self.session = session
        self.card = card
        self.output_names = list(output_names or [o.name for o in card.outputs])
        batch_dim = session.get_inputs()[0].shape[0]
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) else None

    def __call__(self, inputs: Dict[str, np.ndarray], origins) -> Dict[str, np.ndarray]:
        feeds = {spec.name: inputs[spec.name] for spec in self.card.inputs}
        if self.fixed_batch == 1 and len(origins) > 1:
            parts = [self.session.run(self.output_names, {k: v[i:i + 1] for k, v in feeds.items()})
                     for i in range(len(origins))]
            results = [np.concatenate(p) for p in zip(*parts)]
        else:
            results = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, results))


def load_model(model_path: str, device: str = "auto", threads: Optional[int] = None):
    """(session, card, provider) for a carded ONNX file."""
    session, provider = create_session(model_path, device, threads)
    return session, card_from_session(session, model_path), provider


def inputs_by_role(card: ModelCard, optical: str, sar: Optional[str]) -> Dict[str, str]:
    """Map the user's OPTICAL/SAR rasters onto the card's inputs by role."""
    paths = {}
    for spec in card.inputs:
        if spec.role == "optical":
            paths[spec.name] = optical
        elif spec.role == "sar":
            if not sar:
                raise InputError(f"model '{card.name}' needs a SAR raster for input '{spec.name}'")
            paths[spec.name] = sar
        else:
            raise InputError(f"model '{card.name}' has input '{spec.name}' with role '{spec.role}', "
                             "which the generic runner cannot fill")
    if sar and not card.inputs_with_role("sar"):
        raise InputError(f"a SAR raster was given but model '{card.name}' takes no SAR input")
    return paths


def sibling_path(output: str, suffix: str) -> str:
    stem, ext = os.path.splitext(output)
    return f"{stem}_{suffix}{ext or '.tif'}"


def run_model(model_path: str, optical: str, output: str, sar: Optional[str] = None,
              tile_size: Optional[int] = None, overlap: Optional[int] = None, device: str = "auto",
              threads: Optional[int] = None, batch_size: int = 4,
              optical_bands: Optional[Sequence[int]] = None, sar_bands: Optional[Sequence[int]] = None,
              extra_outputs: Optional[Dict[str, str]] = None, progress=None, is_cancelled=None) -> RunReport:
    """Run a carded model. The first card output goes to ``output``; the others to
    ``extra_outputs[name]`` or, by default, ``<output stem>_<name>.tif``."""
    session, card, provider = load_model(model_path, device, threads)
    paths = inputs_by_role(card, optical, sar)
    band_lists = {}
    for spec in card.inputs:
        chosen = optical_bands if spec.role == "optical" else sar_bands
        if chosen:
            band_lists[spec.name] = chosen
    labels = {spec.name: spec.role.upper() for spec in card.inputs}
    outputs = {card.outputs[0].name: output}
    for spec in card.outputs[1:]:
        outputs[spec.name] = (extra_outputs or {}).get(spec.name) or sibling_path(output, spec.name)
    sources = open_sources(card, paths, band_lists, labels)
    try:
        return run_tiled(card, sources, OnnxProcessor(session, card), outputs, tile_size, overlap,
                         batch_size, provider, progress, is_cancelled,
                         extra_tags={"SKYCLEAR_MODEL_FILE": os.path.basename(model_path)})
    finally:
        for source in sources.values():
            source.close()
