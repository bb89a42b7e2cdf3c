"""Gaps a tester found as a user: the cloud-probability output's default in Processing, Ctrl-C
during a batch, and a Sentinel-2 border of zeros that declares no nodata."""
import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from factories import write_raster

ZERO_BORDER = 20


def _scene(data_dir):
    return data_dir / "sen12mscr_s1_cloudy" / "ROIs1868_summer_19_p30"


# ---------------------------------------------------------------------------------------
# 1. CLOUD_PROBABILITY is optional: empty = <OUTPUT stem>_cloud_probability.tif (the registry's default)


@pytest.mark.slow
def test_qgis_process_writes_the_cloud_probability_beside_output_when_not_given(tmp_path, data_dir):
    wrapper = Path(sys.prefix) / "bin" / "skyclear-process"
    if not wrapper.exists():
        pytest.skip("skyclear-process is not installed (run `make setup`)")
    scene = _scene(data_dir)
    proc = subprocess.run([str(wrapper), "--json", "run", "skyclear:remove_clouds_sar", "--",
                           f"OPTICAL={scene / 's2_cloudy.tif'}", f"SAR={scene / 's1.tif'}",
                           f"OUTPUT={tmp_path / 'clear.tif'}"],
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, GDAL_PAM_ENABLED="NO"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads(proc.stdout[proc.stdout.index("{"):])["results"]
    beside = tmp_path / "clear_cloud_probability.tif"
    assert results["CLOUD_PROBABILITY"] == str(beside)
    assert sorted(os.listdir(tmp_path)) == ["clear.tif", "clear_cloud_probability.tif"]
    with rasterio.open(beside) as ds, rasterio.open(scene / "s2_cloudy.tif") as src:
        assert ds.dtypes[0] == "float32" and ds.transform == src.transform and ds.shape == src.shape


def test_processing_cloud_probability_default_and_dialog_value(provider, tmp_path, data_dir):
    """Scripts (processing.run) may leave it out; the Processing dialog still offers a
    temporary file (an optional destination created by default), and OUTPUT stays mandatory."""
    import processing
    from qgis.core import QgsProcessing, QgsProcessingParameterDefinition

    algorithm = provider.algorithm("remove_clouds_sar")
    definitions = {d.name(): d for d in algorithm.parameterDefinitions()}
    optional = QgsProcessingParameterDefinition.FlagOptional
    assert definitions["CLOUD_PROBABILITY"].flags() & optional and definitions["CLOUD_PROBABILITY"].createByDefault()
    assert not definitions["OUTPUT"].flags() & optional
    scene = _scene(data_dir)
    inputs = {"OPTICAL": str(scene / "s2_cloudy.tif"), "SAR": str(scene / "s1.tif"), "DEVICE": 1}
    result = processing.run("skyclear:remove_clouds_sar", dict(inputs, OUTPUT=str(tmp_path / "a.tif")))
    assert result["CLOUD_PROBABILITY"] == str(tmp_path / "a_cloud_probability.tif")
    assert (tmp_path / "a_cloud_probability.tif").exists()
    result = processing.run("skyclear:remove_clouds_sar", dict(inputs, OUTPUT=str(tmp_path / "b.tif"),
                                                               CLOUD_PROBABILITY=QgsProcessing.TEMPORARY_OUTPUT))
    assert os.path.dirname(result["CLOUD_PROBABILITY"]) != str(tmp_path)   # the dialog's default: a temporary file
    assert os.path.exists(result["CLOUD_PROBABILITY"]) and not (tmp_path / "b_cloud_probability.tif").exists()


# ---------------------------------------------------------------------------------------
# 2. Ctrl-C during a batch: a report of what finished, the rest "cancelled", exit 130, no traceback


def _start_batch(manifest: Path, workers: int) -> subprocess.Popen:
    """The CLI in its own process group with SIGINT at its default, as in a terminal."""
    return subprocess.Popen([sys.executable, "-m", "skyclear.batch", str(manifest), "--workers", str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1", GDAL_PAM_ENABLED="NO"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(condition, process, seconds=180.0):
    end = time.time() + seconds
    while not condition():
        if process.poll() is not None or time.time() > end:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"the batch ended or stalled before the interrupt: {out[-1500:]} {err[-1500:]}")
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])   # in this process, and a LocalCluster worker
def test_ctrl_c_reports_finished_jobs_and_cancels_the_rest(tmp_path, data_dir, workers):
    from skyclear.batch import write_manifest

    rice = data_dir / "rice1"
    out = tmp_path / "out"
    out.mkdir()
    rows = [{"tool": "remove_clouds_optical", "JOB": name, "INPUT": str(rice / f"{image}_cloudy.png"),
             "STEPS": steps, "SEED": 1, "OUTPUT": str(out / f"{name}.tif")}
            for name, image, steps in (("quick", 105, 1), ("long", 107, 300), ("queued", 10, 1))]
    manifest = Path(write_manifest(rows, str(tmp_path / "jobs.csv")))
    process = _start_batch(manifest, workers)
    try:
        # "quick" is written and "long" has its temporary file open: interrupt "long" mid-run
        _wait_for(lambda: (out / "quick.tif").exists() and any(n.startswith(".long.tif.") for n in os.listdir(out)),
                  process)
        os.killpg(process.pid, signal.SIGINT)     # Ctrl-C reaches the whole foreground group
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr + stdout, stderr[-3000:]
    messages = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert len(messages) == 1 and "report:" in messages[0], stderr[-3000:]
    with open(tmp_path / "jobs_report.csv", newline="") as f:
        status = {row["job"]: row["status"] for row in csv.DictReader(f)}
    assert status["quick"] == "done" and status["long"] == "cancelled"
    assert status["queued"] in ("cancelled", "done")   # on a worker it may have run before "long"
    assert sorted(os.listdir(out)) == sorted(f"{job}.tif" for job, s in status.items() if s == "done")  # nothing hidden


# ---------------------------------------------------------------------------------------
# 3. Sentinel-2 zeros without a declared nodata are nodata for the Sentinel-2 tools


def _zero_border(path: Path, src: Path, nodata=None) -> str:
    with rasterio.open(src) as ds:
        profile, data = ds.profile, ds.read()
    assert profile["nodata"] is None and data.any(axis=0).all()    # the real scene: no zero pixel, no nodata
    b = ZERO_BORDER
    data[:, :b], data[:, -b:], data[:, :, :b], data[:, :, -b:] = 0, 0, 0, 0
    profile.update(nodata=nodata)
    with rasterio.open(path, "w", **profile) as out:
        out.write(data)
    return str(path)


def _border_valid(path) -> float:
    with rasterio.open(path) as ds:
        mask = ds.dataset_mask() > 0
    inner = mask[ZERO_BORDER:-ZERO_BORDER, ZERO_BORDER:-ZERO_BORDER]
    assert inner.all()
    return (mask.sum() - inner.sum()) / (mask.size - inner.size)


def test_sar_cloud_removal_takes_an_undeclared_zero_border_as_nodata(tmp_path, data_dir, caplog):
    from skyclear.plugin.core import jobs

    scene = _scene(data_dir)
    undeclared = _zero_border(tmp_path / "s2_zero.tif", scene / "s2_cloudy.tif")
    declared = _zero_border(tmp_path / "s2_nodata0.tif", scene / "s2_cloudy.tif", nodata=0)
    with caplog.at_level(logging.WARNING, logger="skyclear"):
        jobs.remove_clouds_sar(optical=undeclared, sar=str(scene / "s1.tif"), output=str(tmp_path / "u.tif"),
                               device="cpu", tile_size=128, overlap=32)
    jobs.remove_clouds_sar(optical=declared, sar=str(scene / "s1.tif"), output=str(tmp_path / "d.tif"),
                           device="cpu", tile_size=128, overlap=32)
    for name in ("u.tif", "u_cloud_probability.tif"):     # as if nodata = 0 had been declared
        assert _border_valid(tmp_path / name) == 0.0, name
        with rasterio.open(tmp_path / name) as a, rasterio.open(tmp_path / name.replace("u", "d", 1)) as b:
            np.testing.assert_array_equal(a.read(), b.read())
            np.testing.assert_array_equal(a.dataset_mask(), b.dataset_mask())
    said = [r for r in caplog.records if "declares no nodata" in r.getMessage()]
    assert len(said) == 1 and "s2_zero.tif" in said[0].getMessage()       # once, though every edge tile has zeros


def test_zero_pixels_stay_data_for_the_generic_runner_and_declared_files(tmp_path, data_dir, caplog):
    """run_model runs what the card says; a file declaring nodata (here 65535) says itself
    that 0 is data; an RGB model is no Sentinel-2 model."""
    from skyclear.plugin.core import engine, jobs
    from skyclear.plugin.core.zoo import bundled_models, default_model

    scene = _scene(data_dir)
    undeclared = _zero_border(tmp_path / "s2_zero.tif", scene / "s2_cloudy.tif")
    with caplog.at_level(logging.WARNING, logger="skyclear"):
        jobs.run_model(model=default_model("sar_cloud_removal"), optical=undeclared, sar=str(scene / "s1.tif"),
                       output=str(tmp_path / "generic.tif"), device="cpu", tile_size=128, overlap=32)
    assert _border_valid(tmp_path / "generic.tif") == 1.0
    assert "declares no nodata" not in caplog.text

    cards = {card.task: card for _, card in bundled_models()}
    s2_card, rgb_card = cards["sar_cloud_removal"], cards["sar_optical_fusion"]
    sar = str(scene / "s1.tif")
    declared = _zero_border(tmp_path / "s2_nodata.tif", scene / "s2_cloudy.tif", nodata=65535)
    rgb = np.full((3, 32, 32), 200, np.uint8)
    rgb[:, :4] = 0
    rgb_path = write_raster(str(tmp_path / "rgb.tif"), rgb)
    grey = write_raster(str(tmp_path / "sar.tif"), np.full((1, 32, 32), 100, np.uint8))
    window = rasterio.windows.Window(0, 0, 32, 32)
    for card, paths, expected in ((s2_card, {"optical": undeclared, "sar": sar}, False),
                                  (s2_card, {"optical": declared, "sar": sar}, True),
                                  (rgb_card, {"optical": rgb_path, "sar": grey}, True)):
        sources = engine.open_sources(card, paths, s2_zero_nodata=True)
        try:
            _, valid = sources["optical"].read(window)
        finally:
            for source in sources.values():
                source.close()
        assert bool(valid[0, 0]) is expected and valid[-1, -1], paths["optical"]
