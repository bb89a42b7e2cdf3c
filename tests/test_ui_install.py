"""Issue 13 item 1: installing by the README gives a working plugin.

The README's per-platform commands are the ones the plugin generates, with the pins of
requirements/runtime.txt; the Debian line really installs (into a scratch target) and QGIS,
started headless on a fresh profile, runs a tool with those packages; the Dependencies check
finds affine 3 and numpy 2 by using them, and says when QGIS must be restarted.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skyclear.plugin import dependencies

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
QGIS_PYTHON = "/usr/bin/python3"          # QGIS's interpreter on Debian 12


def install_section() -> str:
    text = README.read_text(encoding="utf-8")
    return text[text.index("## Install into QGIS"):text.index("## Using SkyClear in QGIS")]


def readme_commands():
    return [line.strip() for block in re.findall(r"```(?:sh|bat)\n(.*?)```", install_section(), re.S)
            for line in block.splitlines() if line.strip()]


def test_readme_commands_are_the_generated_ones_with_the_runtime_pins():
    pins = [line.split("#")[0].strip() for line in (REPO / "requirements" / "runtime.txt").read_text().splitlines()]
    pins = [p for p in pins if p and not p.startswith("-")]
    assert dependencies.runtime_pins() == pins
    assert list(dependencies.FALLBACK_PINS) == pins          # the copy for installs without requirements/
    assert any(p.startswith("affine==2") for p in pins) and any(p.startswith("numpy==1") for p in pins)
    generated = [command for platform, command in dependencies.platform_commands()
                 if platform.startswith(("Linux", "Windows", "macOS"))]
    assert readme_commands() == generated
    debian = generated[0]
    assert debian.startswith("/usr/bin/python3 -m pip install --user --break-system-packages ")
    assert all(f'"{pin}"' in debian for pin in pins)
    # the line for *this* interpreter names an existing Python of this exact version, not a shim
    here = shlex.split(dependencies.pip_command())
    assert os.path.exists(here[0]) and ".pyenv/shims" not in here[0]
    out = subprocess.run([here[0], "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
    assert out.stdout.strip() == str(tuple(sys.version_info[:2]))
    # PEP 668: --break-system-packages only for an externally managed system Python
    assert "--break-system-packages" in dependencies.pip_command("/usr/bin/python3", "linux", externally=True,
                                                                  virtualenv=False)
    assert "--user" not in dependencies.pip_command("python", "windows", virtualenv=False)
    assert '"affine<3"' in dependencies.pip_command("python3", "linux", python_version=(3, 9))


def _pip_target(target: Path, *specs: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                           *specs], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"pip could not install {specs}: {proc.stderr[-2000:]}")


@pytest.mark.slow
def test_dependencies_check_finds_affine_3_and_numpy_2_and_asks_for_a_restart(tmp_path, qgis_app):
    affine3, numpy2 = tmp_path / "affine3", tmp_path / "numpy2"
    _pip_target(affine3, "affine==3.0.1")
    _pip_target(numpy2, "numpy==2.0.0")
    check = ("import json; from skyclear.plugin import dependencies as d; "
             "print(json.dumps([d.status(), d.health(), d.problem_message()]))")
    for target, needle in ((affine3, "rasterio 1.4.4 fails with affine 3.0.1"),
                           (numpy2, "numpy 2.0.0 does not work with QGIS's GDAL bindings")):
        env = dict(os.environ, PYTHONPATH=str(target))
        proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        status, problems, message = json.loads(proc.stdout.strip().splitlines()[-1])
        assert all(status.values()), status                      # every package imports: names look fine
        assert any(needle in p for p in problems), problems     # ...but using them fails, and says so
        assert "pip install" in message and "restart QGIS" in message
    # a newer affine on disk than the one loaded here: QGIS must be restarted, and the tab says so
    import affine

    from skyclear.ui.dependencies_panel import report_html

    sys.path.insert(0, str(affine3))
    try:
        notes = dependencies.restart_needed()
        assert notes == [f"affine 3.0.1 is installed but QGIS is still running {affine.__version__}"], notes
        assert "Restart QGIS" in report_html()
    finally:
        sys.path.remove(str(affine3))
    assert dependencies.restart_needed() == []


@pytest.mark.slow
def test_readme_install_path_on_a_fresh_profile(tmp_path, data_dir):
    if not os.path.exists(QGIS_PYTHON) or not shutil.which("qgis_process.bin"):
        pytest.skip("needs Debian's QGIS (python3-qgis, qgis_process.bin)")
    debian = readme_commands()[0]
    argv = shlex.split(debian)
    assert argv[:4] == [QGIS_PYTHON, "-m", "pip", "install"]
    site = tmp_path / "site"
    argv = [str(site) if a == "--user" else a for a in argv]
    argv.insert(argv.index(str(site)), "--target")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # a fresh profile with the plugin linked in as the README says, and enabled
    config = tmp_path / "config"
    profile = config / "profiles" / "default"
    proc = subprocess.run(["make", "-s", "install", f"QGIS_PROFILE={profile}"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (profile / "python" / "plugins" / "skyclear").resolve() == REPO
    (profile / "QGIS").mkdir(parents=True, exist_ok=True)
    (profile / "QGIS" / "QGIS3.ini").write_text("[PythonPlugins]\nskyclear=true\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "QT_QPA_PLATFORM": "offscreen",
           "XDG_RUNTIME_DIR": str(tmp_path / "xdg"), "QGIS_CUSTOM_CONFIG_PATH": str(config),
           "PYTHONPATH": str(site), "GDAL_PAM_ENABLED": "NO"}  # no .aux.xml beside the shared data (conftest)
    os.makedirs(env["XDG_RUNTIME_DIR"], mode=0o700)
    # the packages QGIS's Python sees are the ones just installed, and they work together
    probe = ("import json, rasterio, affine, numpy, onnxruntime, scipy, skimage; "
             "from skyclear.plugin import dependencies as d; "
             "print(json.dumps({m.__name__: m.__file__ for m in (rasterio, affine, numpy, onnxruntime, scipy, skimage)}"
             " | {'health': d.health(), 'missing': d.missing()}))")
    probe_env = dict(env, PYTHONPATH=f"{site}:{profile / 'python' / 'plugins'}")
    proc = subprocess.run([QGIS_PYTHON, "-c", probe], capture_output=True, text=True, env=probe_env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found.pop("health") == [] and found.pop("missing") == []
    assert all(path.startswith(str(site)) for path in found.values()), found
    # QGIS headless on that profile runs a tool
    out = tmp_path / "fused.tif"
    sar = data_dir / "sar_optical" / "cfog_stest3_sar.tif"
    optical = data_dir / "sar_optical" / "cfog_stest3_optical.tif"
    proc = subprocess.run(["qgis_process.bin", "--json", "run", "skyclear:fuse_sar_optical", "--", f"SAR={sar}",
                           f"OPTICAL={optical}", "METHOD=1", f"OUTPUT={out}"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert result["results"]["PROVIDER"] == "numpy" and out.exists()
    import rasterio

    with rasterio.open(out) as fused, rasterio.open(optical) as src:
        assert fused.count == 3 and fused.crs == src.crs and fused.transform == src.transform
        assert fused.read().std() > 0
