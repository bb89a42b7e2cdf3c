"""The bundled models shipped in ``models/zoo/`` and how a task finds its default."""
from __future__ import annotations

import glob
import os
from typing import List, Tuple

from .errors import ModelCardError
from .model_card import ModelCard, read_card

ZOO_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "models", "zoo"))


def bundled_models(task: str = None) -> List[Tuple[str, ModelCard]]:
    """(path, card) of every valid bundled model, optionally only those of ``task``."""
    found = []
    for path in sorted(glob.glob(os.path.join(ZOO_DIR, "*.onnx"))):
        try:
            card = read_card(path, check_graph=False)
        except ModelCardError:
            continue
        if task is None or card.task == task:
            found.append((path, card))
    return found


def default_model(task: str) -> str:
    """Path of the bundled model for ``task``: the one whose card says
    ``extra.default_for_task``, else the first by file name (baselines ship beside it)."""
    models = bundled_models(task)
    if not models:
        raise ModelCardError(f"no bundled model for task '{task}' in {ZOO_DIR}; choose a model file")
    preferred = [path for path, card in models if card.extra.get("default_for_task")]
    return (preferred or [models[0][0]])[0]
