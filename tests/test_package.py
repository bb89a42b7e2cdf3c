"""`make package`: the release zip installs into a fresh QGIS profile and works there."""
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "benchmarks"))

from package import build, read_metadata  # noqa: E402


@pytest.fixture(scope="module")
def release_zip(tmp_path_factory):
    return build(tmp_path_factory.mktemp("dist"))


def test_zip_has_the_plugin_and_nothing_of_the_development_tree(release_zip):
    meta = read_metadata()
    assert release_zip.name == f"skyclear-{meta['version']}.zip"
    with zipfile.ZipFile(release_zip) as zf:
        names = zf.namelist()
    assert all(n.startswith("skyclear/") for n in names)
    for needed in ("skyclear/__init__.py", "skyclear/metadata.txt", "skyclear/LICENSE",
                   "skyclear/plugin/qgis_plugin.py", "skyclear/plugin/core/engine.py", "skyclear/icons/skyclear.svg"):
        assert needed in names
    assert {n for n in names if n.endswith(".onnx")} == {
        "skyclear/models/zoo/" + p.name for p in (REPO / "models" / "zoo").glob("*.onnx")}
    for dev in ("tests/", "benchmarks/", ".venv/", "models/ibhfn/", "models/configs/", "__pycache__", ".git/"):
        assert not any(dev in n for n in names), dev
    assert read_metadata()["changelog"].strip().startswith(meta["version"])


@pytest.mark.slow
def test_installed_zip_loads_in_a_fresh_qgis(release_zip, tmp_path):
    if not shutil.which("xvfb-run") or not shutil.which("qgis"):
        pytest.skip("needs the QGIS desktop and xvfb-run")
    from qgis_startup import install_zip, start_qgis

    install_zip(release_zip, tmp_path)
    seen = start_qgis(tmp_path)
    assert seen["plugin_loaded"]
    assert seen["plugin_file"].startswith(str(tmp_path))  # the zip's copy, not this checkout
    assert "skyclear:remove_clouds_sar" in seen["algorithms"] and len(seen["algorithms"]) >= 6
    assert seen["toolbar_actions"] == ["SkyClear"]
    assert seen["heavy_modules"] == [], "QGIS start-up must not import " + ", ".join(seen["heavy_modules"])
