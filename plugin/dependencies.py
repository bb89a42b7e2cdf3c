"""Which runtime packages are importable, and the exact command to install what is missing.

QGIS-free on purpose: the plugin calls it before importing anything heavy, so a missing
package gives a message with the fix instead of a traceback.
"""
from __future__ import annotations

import importlib
import os
import shutil
import sys
from typing import Dict, List, Optional

RUNTIME = ("numpy", "rasterio", "onnxruntime")
PIP_SPEC = "\"numpy<2\" rasterio onnxruntime scipy scikit-image"


def module_version(name: str) -> Optional[str]:
    try:
        module = importlib.import_module(name)
    except Exception:  # broken installs raise more than ImportError
        return None
    return getattr(module, "__version__", "installed")


def status() -> Dict[str, Optional[str]]:
    return {name: module_version(name) for name in RUNTIME + ("scipy", "skimage")}


def missing() -> List[str]:
    return [name for name, version in status().items() if version is None]


def qgis_python() -> str:
    """The Python interpreter of this QGIS. Inside QGIS ``sys.executable`` is often the QGIS
    binary itself (qgis, qgis-bin.exe, QGIS.app/Contents/MacOS/QGIS), not a Python."""
    exe = sys.executable or ""
    if os.path.basename(exe).lower().startswith("python"):
        return exe
    if sys.platform == "darwin":
        candidate = os.path.join(os.path.dirname(exe), "bin", "python3")
        if os.path.exists(candidate):
            return candidate
    if sys.platform.startswith("win"):
        return "python"
    for candidate in (os.path.join(sys.exec_prefix, "bin", "python3"), shutil.which("python3") or ""):
        if candidate and os.path.exists(candidate):
            return candidate
    return "python3"


def pip_command(python: Optional[str] = None) -> str:
    """The install command for the Python that runs QGIS (OSGeo4W and macOS bundles differ)."""
    python = python or qgis_python()
    if sys.platform.startswith("win"):
        return f"(OSGeo4W Shell) python -m pip install {PIP_SPEC}"
    return f"\"{python}\" -m pip install --user {PIP_SPEC}"


def platform_commands() -> List[tuple]:
    """(platform, command) for the three kinds of QGIS install, and the GPU variant."""
    linux_python = qgis_python() if sys.platform.startswith("linux") else "/usr/bin/python3"
    return [
        ("Linux (system QGIS)", f"{linux_python} -m pip install --user {PIP_SPEC}"),
        ("Windows (OSGeo4W Shell, as administrator)", f"python -m pip install {PIP_SPEC}"),
        ("macOS (QGIS.app)", f"/Applications/QGIS.app/Contents/MacOS/bin/python3 -m pip install --user {PIP_SPEC}"),
        ("GPU (any platform, instead of onnxruntime)",
         "python -m pip uninstall -y onnxruntime onnxruntime-gpu && "
         "python -m pip install \"onnxruntime-gpu[cuda,cudnn]==1.31.1\""),
    ]


def warnings() -> List[str]:
    """Known bad combinations: both onnxruntime packages, numpy 2 with numpy-1 GDAL bindings."""
    notes = []
    try:
        from importlib import metadata

        names = {d.metadata["Name"].lower() for d in metadata.distributions() if d.metadata["Name"]}
        if {"onnxruntime", "onnxruntime-gpu"} <= names:
            notes.append("both onnxruntime and onnxruntime-gpu are installed; uninstall both, then install one")
    except Exception:
        pass
    numpy_version = module_version("numpy")
    if numpy_version and numpy_version.split(".")[0] >= "2":
        notes.append(f"numpy {numpy_version} may break GDAL's Python bindings built for numpy 1; "
                     "install \"numpy<2\"")
    return notes


def problem_message() -> Optional[str]:
    gone = missing()
    if not gone:
        return None
    return (f"SkyClear needs {', '.join(gone)}, which the Python running QGIS cannot import. "
            f"Install with: {pip_command()}")
