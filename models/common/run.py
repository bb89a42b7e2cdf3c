"""Run folders: config, metrics log, checkpoints and resume, shared by every trainer.

A run folder holds ``config.json`` (with the trainer ``kind``), ``metrics.jsonl`` (one
JSON line per logged step), ``checkpoints/step_<N>.pt`` and ``checkpoints/last.pt``.
"""
from __future__ import annotations

import json
import os
import random
import time
from typing import Any, Dict, Iterable, Optional

import numpy as np
import torch


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"device {name!r} asked for, but torch sees no CUDA device")
    return torch.device(name)


def load_config(path: str, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    with open(path) as f:
        config = json.load(f)
    config.update(overrides or {})
    return config


class RunDir:
    """One training run on disk."""

    def __init__(self, path: str):
        self.path = path
        self.checkpoint_dir = os.path.join(path, "checkpoints")
        os.makedirs(self.checkpoint_dir, exist_ok=True)
        self._started = time.time()

    @property
    def config_path(self) -> str:
        return os.path.join(self.path, "config.json")

    def save_config(self, config: Dict[str, Any]) -> None:
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)

    def config(self) -> Dict[str, Any]:
        with open(self.config_path) as f:
            return json.load(f)

    def log(self, step: int, **values: float) -> None:
        entry = {"step": step, "elapsed_s": round(time.time() - self._started, 2)}
        entry.update({k: float(v) for k, v in values.items()})
        with open(os.path.join(self.path, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(entry) + "\n")

    def metrics(self) -> Iterable[Dict[str, Any]]:
        path = os.path.join(self.path, "metrics.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def save_checkpoint(self, step: int, state: Dict[str, Any], keep_every: int = 0) -> str:
        """Write ``last.pt`` atomically; also keep ``step_<N>.pt`` every ``keep_every`` steps."""
        state = dict(state, step=step, rng=_rng_state())
        last = os.path.join(self.checkpoint_dir, "last.pt")
        torch.save(state, last + ".tmp")
        os.replace(last + ".tmp", last)
        if keep_every and step % keep_every == 0:
            torch.save(state, os.path.join(self.checkpoint_dir, f"step_{step}.pt"))
        return last

    def load_checkpoint(self, map_location="cpu") -> Optional[Dict[str, Any]]:
        last = os.path.join(self.checkpoint_dir, "last.pt")
        if not os.path.exists(last):
            return None
        state = torch.load(last, map_location=map_location, weights_only=False)
        if "rng" in state:
            _set_rng_state(state["rng"])
        return state


def _rng_state() -> Dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


class EMA:
    """Exponential moving average of a module's parameters (used for sampling/export)."""

    def __init__(self, module: torch.nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        for key, value in module.state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[key].mul_(self.decay).add_(value.detach(), alpha=1 - self.decay)
            else:
                self.shadow[key].copy_(value)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        self.shadow = {k: v.clone() for k, v in state.items()}
