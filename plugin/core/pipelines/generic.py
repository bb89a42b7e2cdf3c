"""Pieces for running any carded ONNX model: the session processor and input mapping."""
from __future__ import annotations

import os
import threading
from typing import Dict, Optional, Sequence

import numpy as np

from ..errors import InputError
from ..model_card import ModelCard, card_from_session
from ..runtime import create_session, static_tile


class OnnxProcessor:
    """Tile processor that feeds the batch straight to an onnxruntime session."""

    def __init__(self, session, card: ModelCard, output_names: Optional[Sequence[str]] = None):
        self.session = session
        self.card = card
        self.output_names = list(output_names or [o.name for o in card.outputs])
        batch_dim = session.get_inputs()[0].shape[0]
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) else None
        self.static_tile = static_tile(session)

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
    """(session, card, provider) for a carded ONNX file; reused when ``keep_sessions`` is on."""
    if _sessions is None:
        session, provider = create_session(model_path, device, threads)
        return session, card_from_session(session, model_path), provider
    stat = os.stat(model_path) if os.path.isfile(model_path) else None
    key = (os.path.realpath(model_path), stat and (stat.st_size, stat.st_mtime_ns), device,
           threads or os.environ.get("SKYCLEAR_THREADS"))
    with _sessions_lock:
        if key not in _sessions:
            session, provider = create_session(model_path, device, threads)
            _sessions[key] = (session, card_from_session(session, model_path), provider)
        return _sessions[key]


_sessions: Optional[dict] = None
_sessions_lock = threading.Lock()


def keep_sessions() -> dict:
    """From now on, load each model once per process (key: file, its size and mtime, device,
    threads) and reuse the session: batch workers run many jobs with the same few models.
    Off by default, so an interactive run always picks up a model file just rewritten.
    Returns the cache, for inspection."""
    global _sessions
    with _sessions_lock:
        if _sessions is None:
            _sessions = {}
        return _sessions


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
