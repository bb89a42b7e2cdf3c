"""onnxruntime sessions: CUDA when present and asked for, CPU otherwise, and why."""
from __future__ import annotations

import logging
import os
from typing import Optional, Tuple

from .choices import DEVICES
from .errors import ModelCardError, SkyClearError

log = logging.getLogger("skyclear")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def gpu_status() -> Tuple[bool, str]:
    """(available, human-readable reason) for the CUDA execution provider."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False, "onnxruntime is not installed (pip install onnxruntime-gpu for GPU support)"
    if CUDA not in ort.get_available_providers():
        return False, (f"onnxruntime {ort.__version__} was built without CUDA "
                       "(install onnxruntime-gpu instead of onnxruntime, not both)")
    try:
        import ctypes

        ctypes.CDLL("libcuda.so.1" if os.name != "nt" else "nvcuda.dll")
    except OSError:
        return False, "onnxruntime-gpu is installed but no NVIDIA driver (libcuda) was found"
    return True, "CUDA execution provider available"


def static_tile(session) -> Optional[int]:
    """The tile size a graph is fixed to (its first input has numeric, equal spatial sizes), else
    None: such a graph takes no other tile size."""
    dims = list(session.get_inputs()[0].shape)[2:4]
    if len(dims) == 2 and all(isinstance(d, int) and d > 0 for d in dims) and dims[0] == dims[1]:
        return dims[0]
    return None


def create_session(model_path: str, device: str = "auto", threads: Optional[int] = None):
    """Return ``(session, provider)`` where ``provider`` is the one actually running the model.

    ``threads`` caps onnxruntime's intra-op threads; when None, the environment variable
    ``SKYCLEAR_THREADS`` does (useful for a QGIS that should keep cores free), else
    onnxruntime uses all cores.
    """
    threads = threads or int(os.environ.get("SKYCLEAR_THREADS", "0") or 0) or None
    if device not in DEVICES:
        raise SkyClearError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # The engine feeds batches of at most one shape (smaller ones: the last batch of a run, and
    # batches whose nodata-only tiles are left out), so the CPU arena grows to the full batch
    # once and is then reused: memory stays flat without paying for an allocation per operator.
    # SKYCLEAR_CPU_ARENA=0 turns it off.
    options.enable_cpu_mem_arena = os.environ.get("SKYCLEAR_CPU_ARENA", "1") != "0"
    if threads:
        options.intra_op_num_threads = int(threads)
    providers = [CPU]
    if device in ("auto", "gpu"):
        available, reason = gpu_status()
        if available:
            providers = [CUDA, CPU]
        elif device == "gpu":
            raise SkyClearError(f"GPU requested but not available: {reason}")
        else:
            log.info("running on CPU: %s", reason)
    if not os.path.isfile(model_path):
        raise ModelCardError(f"model file not found: {model_path}")
    try:
        session = ort.InferenceSession(model_path, options, providers=providers)
    except Exception as exc:
        raise ModelCardError(f"{model_path} is not a loadable ONNX model: {exc}") from exc
    provider = session.get_providers()[0]
    if device == "gpu" and provider != CUDA:
        raise SkyClearError(f"GPU requested but onnxruntime fell back to {provider}")
    log.info("model %s runs on %s", os.path.basename(model_path), provider)
    return session, provider
