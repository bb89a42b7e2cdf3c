"""Which runtime packages the Python running QGIS can import, whether they actually work
together, and the exact command that installs the tested versions into *that* Python.

QGIS-free on purpose: the plugin calls it before importing anything heavy, so a missing or
broken package gives a message with the fix instead of a traceback.
"""
from __future__ import annotations

import importlib
import os
import sys
import sysconfig
from typing import Dict, List, Optional, Tuple

RUNTIME = ("numpy", "rasterio", "onnxruntime")
OPTIONAL = ("scipy", "skimage")
# module -> distribution name(s) on PyPI
DISTRIBUTIONS = {"numpy": ("numpy",), "rasterio": ("rasterio",), "affine": ("affine",),
                 "onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "scipy": ("scipy",),
                 "skimage": ("scikit-image",)}
RUNTIME_FILE = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "requirements", "runtime.txt"))
# the pins of requirements/runtime.txt, for installs without the requirements folder
# (tests check that both agree)
FALLBACK_PINS = ("numpy==1.26.4", "rasterio==1.4.4", "affine==2.4.0", "onnxruntime==1.31.1",
                 "scipy==1.17.1", "scikit-image==0.26.0")
PIN_NOTE = ("numpy<2 because QGIS's GDAL bindings are built for numpy 1; affine<3 because affine 3 "
            "breaks rasterio 1.4 on Python 3.11")


def runtime_pins(path: str = RUNTIME_FILE) -> List[str]:
    """The requirement lines of requirements/runtime.txt (the tested versions)."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line.split("#", 1)[0].strip() for line in handle]
    except OSError:
        return list(FALLBACK_PINS)
    pins = [line for line in lines if line and not line.startswith("-")]
    return pins or list(FALLBACK_PINS)


# the pins need Python >= 3.11 (scipy 1.17, scikit-image 0.26); older QGIS Pythons (3.9 in
# QGIS 3.22-3.34 for Windows and macOS) get the same constraints as ranges
PINNED_PYTHON = (3, 11)
RANGES = ("numpy<2", "affine<3", "rasterio>=1.3,<1.5", "onnxruntime>=1.16", "scipy", "scikit-image")


def pip_spec(python_version=None) -> str:
    """The pins (or, for a Python older than 3.11, the ranges) quoted for sh, PowerShell and cmd."""
    version = tuple(python_version or sys.version_info[:2])
    specs = runtime_pins() if version >= PINNED_PYTHON else list(RANGES)
    return " ".join(f'"{spec}"' for spec in specs)


# ---------------------------------------------------------------------------------------
# what is there


def module_version(name: str) -> Optional[str]:
    try:
        module = importlib.import_module(name)
    except Exception:  # broken installs raise more than ImportError
        return None
    return getattr(module, "__version__", "installed")


def status() -> Dict[str, Optional[str]]:
    return {name: module_version(name) for name in RUNTIME + OPTIONAL}


def missing(deep: bool = True) -> List[str]:
    """Packages that cannot be imported. ``deep=False`` only looks for them on the path (no
    import): for QGIS start-up, which must stay fast."""
    if not deep:
        import importlib.util

        def found(name):
            try:
                return importlib.util.find_spec(name) is not None
            except Exception:
                return False
        return [name for name in RUNTIME + OPTIONAL if sys.modules.get(name, 0) is None or not found(name)]
    return [name for name, version in status().items() if version is None]


def installed_version(module: str) -> Optional[str]:
    """Version of the distribution on disk now (may differ from the one QGIS loaded)."""
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    importlib.invalidate_caches()
    for dist in DISTRIBUTIONS.get(module, (module,)):
        try:
            return metadata.version(dist)
        except Exception:
            continue
    return None


def restart_needed() -> List[str]:
    """Packages whose version on disk differs from the one already loaded in this QGIS:
    Python cannot reload them, so QGIS must be restarted."""
    notes = []
    for module in ("numpy", "rasterio", "affine", "onnxruntime", "scipy", "skimage"):
        loaded = sys.modules.get(module)
        if loaded is None:
            continue
        running = getattr(loaded, "__version__", None)
        on_disk = installed_version(module)
        if running and on_disk and running != on_disk:
            notes.append(f"{DISTRIBUTIONS[module][0]} {on_disk} is installed but QGIS is still running {running}")
    return notes


_HEALTH: Optional[List[str]] = None


def health(refresh: bool = False) -> List[str]:
    """Known bad combinations, found by exercising the packages rather than by their names:
    rasterio writing and reading a georeferenced GeoTIFF (fails with affine 3 on Python 3.11),
    QGIS's GDAL numpy bindings (fail with numpy 2 when GDAL was built for numpy 1) and
    onnxruntime listing its providers. Cached per process; ``refresh`` runs the checks again."""
    global _HEALTH
    if _HEALTH is not None and not refresh:
        return list(_HEALTH)
    problems = []
    versions = {name: module_version(name) for name in ("numpy", "rasterio", "affine", "onnxruntime")}
    if versions["rasterio"] and versions["numpy"]:
        try:
            _exercise_rasterio()
        except Exception as exc:
            affine = versions["affine"] or "?"
            if affine.split(".")[0].isdigit() and int(affine.split(".")[0]) >= 3:
                problems.append(f"rasterio {versions['rasterio']} fails with affine {affine} ({exc}); every run "
                                f"would fail. Install \"affine==2.4.0\" with the command below, then restart QGIS.")
            else:
                problems.append(f"rasterio {versions['rasterio']} does not work ({type(exc).__name__}: {exc}). "
                                "Reinstall it with the command below, then restart QGIS.")
    gdal_problem = _exercise_gdal_numpy(versions["numpy"])
    if gdal_problem:
        problems.append(gdal_problem)
    if versions["onnxruntime"]:
        try:
            import onnxruntime

            if not onnxruntime.get_available_providers():
                raise RuntimeError("no execution provider")
        except Exception as exc:
            problems.append(f"onnxruntime {versions['onnxruntime']} does not work ({type(exc).__name__}: {exc}).")
    _HEALTH = problems
    return list(problems)


def _exercise_rasterio() -> None:
    import numpy as np
    from rasterio.io import MemoryFile
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    with MemoryFile() as memory:
        with memory.open(driver="GTiff", width=4, height=4, count=1, dtype="uint16", crs="EPSG:4326",
                         transform=from_origin(10.0, 50.0, 0.5, 0.5)) as dataset:
            dataset.write(np.arange(16, dtype=np.uint16).reshape(1, 4, 4))
        with memory.open() as dataset:
            if dataset.read(1, window=Window(1, 1, 2, 2)).sum() != 5 + 6 + 9 + 10:
                raise RuntimeError("read back wrong values")
            dataset.window_transform(Window(1, 1, 2, 2))


def _exercise_gdal_numpy(numpy_version: Optional[str]) -> Optional[str]:
    """None when QGIS's own GDAL Python bindings (osgeo) work with this numpy, or are absent."""
    try:
        import osgeo  # noqa: F401
    except Exception:
        return None
    try:
        import numpy as np
        from osgeo import gdal_array

        dataset = gdal_array.OpenArray(np.zeros((2, 2), np.uint8))
        if dataset is None or dataset.RasterXSize != 2:
            raise RuntimeError("GDAL could not wrap a numpy array")
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return (f"numpy {numpy_version} does not work with QGIS's GDAL bindings ({text}): they were built "
                "for numpy 1. Install \"numpy==1.26.4\" with the command below, then restart QGIS.")
    return None


def warnings() -> List[str]:
    """Known bad combinations that still run: both onnxruntime packages installed."""
    notes = []
    try:
        from importlib import metadata

        names = {(d.metadata["Name"] or "").lower() for d in metadata.distributions()}
        if {"onnxruntime", "onnxruntime-gpu"} <= names:
            notes.append("both onnxruntime and onnxruntime-gpu are installed; uninstall both, then install one")
    except Exception:
        pass
    return notes


# ---------------------------------------------------------------------------------------
# how to install


def current_platform() -> str:
    if sys.platform.startswith("win"):
        return "windows"
    if sys.platform == "darwin":
        return "macos"
    return "linux"


def in_virtualenv() -> bool:
    return sys.prefix != getattr(sys, "base_prefix", sys.prefix)


def externally_managed() -> bool:
    """PEP 668: Debian 12 / Ubuntu 23.04+ mark the system Python; pip then refuses to install
    into it (even with --user) unless given --break-system-packages."""
    if in_virtualenv():
        return False
    try:
        return os.path.exists(os.path.join(sysconfig.get_paths()["stdlib"], "EXTERNALLY-MANAGED"))
    except Exception:
        return False


def qgis_python() -> str:
    """The interpreter that runs this QGIS. Inside QGIS ``sys.executable`` is often the QGIS
    binary itself (qgis-bin.exe, QGIS.app/Contents/MacOS/QGIS), and ``python3`` on the PATH
    may be another Python (a pyenv shim, a conda env): use this exact version's binary."""
    exe = sys.executable or ""
    is_python = os.path.basename(exe).lower().startswith("python")
    if in_virtualenv() and is_python:
        return exe
    major, minor = sys.version_info[:2]
    if current_platform() == "windows":
        candidates = [os.path.join(sys.base_exec_prefix, "python.exe"), os.path.join(sys.base_exec_prefix, "python3.exe")]
    else:
        candidates = [os.path.join(sys.base_exec_prefix, "bin", f"python{major}.{minor}"),
                      os.path.join(sys.base_exec_prefix, "bin", "python3")]
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    if is_python:
        return exe
    return "python" if current_platform() == "windows" else "python3"


def _quoted(path: str) -> str:
    return f'"{path}"' if " " in path else path


def pip_command(python: Optional[str] = None, platform: Optional[str] = None,
                externally: Optional[bool] = None, virtualenv: Optional[bool] = None,
                python_version=None) -> str:
    """The install command for the Python that runs QGIS, with the tested pins.
    Linux/macOS: ``--user`` (outside a virtualenv); Linux with a PEP 668 system Python:
    ``--break-system-packages`` too. Windows (OSGeo4W Shell as administrator): no flags."""
    platform = platform or current_platform()
    python = python or qgis_python()
    virtualenv = in_virtualenv() if virtualenv is None else virtualenv
    externally = externally_managed() if externally is None else externally
    flags = []
    if platform != "windows" and not virtualenv:
        flags.append("--user")
        if externally:
            flags.append("--break-system-packages")
    return " ".join([_quoted(python), "-m", "pip", "install"] + flags + [pip_spec(python_version)])


GPU_COMMAND = ("{python} -m pip uninstall -y onnxruntime onnxruntime-gpu && "
               "{python} -m pip install \"onnxruntime-gpu[cuda,cudnn]==1.31.1\"")


def platform_commands() -> List[Tuple[str, str]]:
    """(platform, command) for the usual QGIS installs; the README shows the same lines."""
    return [
        ("Linux, Debian 12 / Ubuntu 23.04 or newer (system QGIS)",
         pip_command("/usr/bin/python3", "linux", externally=True, virtualenv=False, python_version=PINNED_PYTHON)),
        ("Linux, older distributions (pip without PEP 668)",
         pip_command("/usr/bin/python3", "linux", externally=False, virtualenv=False,
                     python_version=PINNED_PYTHON)),
        ("Windows (OSGeo4W Shell, run as administrator)",
         pip_command("python", "windows", virtualenv=False, python_version=PINNED_PYTHON)),
        ("macOS (QGIS.app)",
         pip_command("/Applications/QGIS.app/Contents/MacOS/bin/python3", "macos", externally=False,
                     virtualenv=False, python_version=PINNED_PYTHON)),
        ("Any platform, QGIS with a Python older than 3.11 (same constraints as ranges)",
         pip_command("python3", "linux", externally=False, virtualenv=False, python_version=(3, 9))),
        ("GPU (any platform, replaces onnxruntime)", GPU_COMMAND.format(python=_quoted(qgis_python()))),
    ]


def problem_message(deep: bool = True) -> Optional[str]:
    """What stops SkyClear from running in this QGIS, with the command that fixes it.
    ``deep=False`` (QGIS start-up): only whether the packages are there, without importing them."""
    gone = missing(deep)
    broken = health() if deep else []
    if not gone and not broken:
        return None
    parts = []
    if gone:
        parts.append(f"SkyClear needs {', '.join(gone)}, which the Python running QGIS cannot import.")
    parts.extend(broken)
    parts.append(f"Install the tested versions with: {pip_command()} ({PIN_NOTE}); then restart QGIS.")
    return " ".join(parts)
