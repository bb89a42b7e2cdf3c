"""GDAL worker threads: on where rasterio's GDAL is alone in the process, off (1) next to QGIS's
own GDAL, where qgis_process deadlocked with them."""
import subprocess
import sys

PROBE = "from skyclear.plugin.core.raster_io import gdal_threads; print(gdal_threads())"


def _probe(prelude: str = "", **env) -> str:
    import os
    proc = subprocess.run([sys.executable, "-c", prelude + PROBE], capture_output=True, text=True, timeout=60,
                          env=dict({k: v for k, v in os.environ.items() if not k.startswith("SKYCLEAR_")}, **env))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_threads_on_without_qgis_and_off_beside_qgis():
    assert _probe("import rasterio; ") == "ALL_CPUS"
    assert _probe("import rasterio; ", SKYCLEAR_THREADS="3") == "3"
    assert _probe("import qgis.core, rasterio; ") == "1"
    assert _probe("import qgis.core, rasterio; ", SKYCLEAR_GDAL_THREADS="2") == "2"   # explicit wins
