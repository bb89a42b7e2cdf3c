"""Shared test setup: headless Qt, the shared data folder, tiny models and rasters."""
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="xdg-"))
# QGIS computes statistics of every raster it loads and GDAL saves them as FILE.aux.xml beside it: run
# as root (CI), that would write into ../shared/data. The tests, and the qgis_process they start, keep none.
os.environ.setdefault("GDAL_PAM_ENABLED", "NO")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return DATA.resolve()


@pytest.fixture()
def provider(qgis_app, qgis_processing):
    """SkyClear's Processing provider, registered for one test."""
    from qgis.core import QgsApplication

    from skyclear.plugin.processing.provider import SkyClearProvider

    registry = QgsApplication.processingRegistry()
    prov = SkyClearProvider()
    registry.addProvider(prov)
    yield prov
    registry.removeProvider(prov)


@pytest.fixture()
def recording_feedback(qgis_app):
    """A Processing feedback that keeps what an algorithm logs (``infos``, ``warnings``)."""
    from qgis.core import QgsProcessingFeedback

    class RecordingFeedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.infos, self.warnings = [], []

        def pushInfo(self, text):  # noqa: N802
            self.infos.append(text)

        def pushWarning(self, text):  # noqa: N802
            self.warnings.append(text)

    return RecordingFeedback()
