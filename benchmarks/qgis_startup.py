"""QGIS start-up with SkyClear installed from its release zip, as *Install from ZIP* would.

    python benchmarks/qgis_startup.py [--runs 5]

Builds the zip (scripts/package.py), unpacks it into a scratch profile, and starts the real
QGIS desktop under Xvfb with a ``--code`` script that records how long QGIS took to be ready
(process start to the script), whether the provider and the toolbar action exist, and which
heavy modules were imported. Prints the median with the plugin enabled and disabled.
The runtime packages come from this venv (PYTHONPATH), as a user's QGIS Python would have them.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("onnxruntime", "torch", "scipy", "skimage")

CHECK = r'''
import json, os, sys, time
from qgis.core import QgsApplication
from qgis.utils import iface, plugins
from qgis.PyQt.QtWidgets import QAction
with open("/proc/self/stat") as f:
    start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
with open("/proc/uptime") as f:
    uptime = float(f.read().split()[0])
ready = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
provider = QgsApplication.processingRegistry().providerById("skyclear")
skyclear = sys.modules.get("skyclear")
out = {
    "seconds_to_ready": ready,
    "plugin_loaded": "skyclear" in plugins,
    "plugin_file": getattr(skyclear, "__file__", None),
    "heavy_modules": [m for m in %(heavy)r if m in sys.modules],
    "toolbar_actions": [a.text() for a in iface.mainWindow().findChildren(QAction) if a.text() == "SkyClear"],
    "algorithms": sorted(a.id() for a in provider.algorithms()) if provider else [],
}
with open(os.environ["SKYCLEAR_CHECK_OUT"], "w") as f:
    json.dump(out, f)
os._exit(0)
''' % {"heavy": HEAVY}


def install_zip(zip_path: Path, profiles: Path, enabled: bool = True) -> Path:
    """Unpack the release zip into a fresh default profile and set the plugin on or off."""
    profile = profiles / "profiles" / "default"
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(plugins)
    (profile / "QGIS").mkdir(parents=True, exist_ok=True)
    (profile / "QGIS" / "QGIS3.ini").write_text(f"[PythonPlugins]\nskyclear={'true' if enabled else 'false'}\n")
    return plugins / "skyclear"


def set_enabled(profiles: Path, enabled: bool) -> None:
    ini = profiles / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.write_text(f"[PythonPlugins]\nskyclear={'true' if enabled else 'false'}\n")


def start_qgis(profiles: Path, timeout: int = 180) -> dict:
    """Start QGIS once on ``profiles`` and return what the check script saw."""
    work = Path(tempfile.mkdtemp(prefix="skyclear-qgis-"))
    script, out = work / "check.py", work / "out.json"
    script.write_text(CHECK)
    env = dict(os.environ, SKYCLEAR_CHECK_OUT=str(out),
               PYTHONPATH=sysconfig.get_paths()["purelib"] + os.pathsep + os.environ.get("PYTHONPATH", ""),
               XDG_RUNTIME_DIR=os.environ.get("XDG_RUNTIME_DIR", str(work)))
    env.pop("QT_QPA_PLATFORM", None)  # the real desktop, on Xvfb
    cmd = ["xvfb-run", "-a", "qgis", "--profiles-path", str(profiles), "--nologo", "--noversioncheck",
           "--code", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if not out.exists():
        raise RuntimeError(f"QGIS did not run the check (exit {proc.returncode}): {proc.stderr[-1500:]}")
    return json.loads(out.read_text())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "scripts"))
    from package import build

    work = Path(tempfile.mkdtemp(prefix="skyclear-startup-"))
    zip_path = build(work / "dist")
    install_zip(zip_path, work)
    rows = {}
    for enabled in (False, True):
        set_enabled(work, enabled)
        start_qgis(work)  # warm the file cache
        runs = [start_qgis(work) for _ in range(args.runs)]
        rows[enabled] = (statistics.median(r["seconds_to_ready"] for r in runs), runs[-1])
    print(f"QGIS start to ready (median of {args.runs}, Xvfb, {os.cpu_count()} cores)\n")
    print("| SkyClear | seconds | heavy modules imported at start | provider algorithms | toolbar action |")
    print("|---|---:|---|---:|---|")
    for enabled, (seconds, last) in rows.items():
        print(f"| {'enabled' if enabled else 'disabled'} | {seconds:.2f} | {', '.join(last['heavy_modules']) or 'none'} "
              f"| {len(last['algorithms'])} | {'yes' if last['toolbar_actions'] else 'no'} |")
    print(f"\nplugin cost: {rows[True][0] - rows[False][0]:+.2f} s")


if __name__ == "__main__":
    main()
