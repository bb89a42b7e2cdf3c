"""The three tools end to end through qgis_process on real data with the bundled models."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from skyclear.plugin.core.evaluation import evaluate_restoration
from skyclear.plugin.core.zoo import bundled_models

pytestmark = pytest.mark.slow


def run(algorithm, **params):
    wrapper = Path(sys.prefix) / "bin" / "skyclear-process"
    if not wrapper.exists():
        pytest.skip("skyclear-process is not installed (run `make setup`)")
    proc = subprocess.run([str(wrapper), "--json", "run", algorithm, "--"] + [f"{k}={v}" for k, v in params.items()],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(proc.stdout[proc.stdout.index("{"):])["results"]


def same_grid(a, b):
    with rasterio.open(a) as x, rasterio.open(b) as y:
        return x.crs == y.crs and x.transform == y.transform and x.shape == y.shape


def test_sar_cloud_removal_on_a_held_out_triplet(tmp_path, data_dir):
    triplet = data_dir / "sen12mscr" / "oriolac_5278"  # held out from training (models/ibhfn/splits.py)
    out, prob = tmp_path / "clear.tif", tmp_path / "cloud.tif"
    result = run("skyclear:remove_clouds_sar", OPTICAL=triplet / "s2_cloudy.tif", SAR=triplet / "s1.tif",
                 OUTPUT=out, CLOUD_PROBABILITY=prob)
    assert result["PROVIDER"] == "CPUExecutionProvider"
    assert same_grid(out, triplet / "s2_cloudy.tif") and same_grid(prob, triplet / "s2_cloudy.tif")
    with rasterio.open(out) as ds, rasterio.open(prob) as pr:
        assert ds.count == 13 and ds.dtypes[0] == "uint16" and ds.tags()["SKYCLEAR_MODEL"] == "ibhfn-small"
        p = pr.read(1)
        assert pr.dtypes[0] == "float32" and 0 <= p.min() and p.max() <= 1
    restored = evaluate_restoration(str(out), str(triplet / "s2_cloudfree.tif"))[-1]
    cloudy = evaluate_restoration(str(triplet / "s2_cloudy.tif"), str(triplet / "s2_cloudfree.tif"))[-1]
    assert restored["psnr"] > cloudy["psnr"] + 5


def test_sar_cloud_removal_aligns_sar_on_another_grid(tmp_path, data_dir):
    site = data_dir / "ssl4eo" / "0000200"  # S1 and S2 grids differ by ~4 px and <1 % scale
    out = tmp_path / "clear.tif"
    run("skyclear:remove_clouds_sar", OPTICAL=site / "s2l1c_20200823.tif", SAR=site / "s1_20200903.tif",
        OUTPUT=out, CLOUD_PROBABILITY=tmp_path / "p.tif", KEEP_CLEAR=True, TILE_SIZE=128, OVERLAP=32)
    assert same_grid(out, site / "s2l1c_20200823.tif")
    with rasterio.open(out) as ds:
        data = ds.read()
        assert ds.count == 13 and data.dtype == np.uint16 and ds.crs.to_epsg() == 4326
        assert (ds.dataset_mask() > 0).mean() > 0.95  # SAR covers (almost) the whole optical grid


def test_optical_cloud_removal_keeps_grid_and_dtype(tmp_path, data_dir):
    cloudy = data_dir / "rice1" / "32_cloudy.png"  # held out (models/diffusion/splits.py)
    out = tmp_path / "clear.tif"
    result = run("skyclear:remove_clouds_optical", INPUT=cloudy, OUTPUT=out, STEPS=3, SEED=1)
    with rasterio.open(out) as ds, rasterio.open(cloudy) as src:
        assert ds.dtypes[0] == "uint8" and ds.count == 3 and ds.shape == src.shape
        assert ds.crs is None and ds.tags()["SKYCLEAR_STEPS"] == "3"
        # no ETA given: the value chosen on validation and stored in the step model's card
        step_card = dict((c.task, c) for _, c in bundled_models())["optical_cloud_removal_diffusion_step"]
        assert ds.tags()["SKYCLEAR_ETA"] == str(float(step_card.extra["eta"]))
        assert ds.tags()["SKYCLEAR_SAMPLES"] == str(step_card.extra.get("samples_default", 1))
    again = tmp_path / "again.tif"
    run("skyclear:remove_clouds_optical", INPUT=cloudy, OUTPUT=again, STEPS=3, SEED=1)
    with rasterio.open(out) as a, rasterio.open(again) as b:
        np.testing.assert_array_equal(a.read(), b.read())  # fixed seed: same input, same output
    assert result["PROVIDER"] == "CPUExecutionProvider"
    averaged = tmp_path / "averaged.tif"
    run("skyclear:remove_clouds_optical", INPUT=cloudy, OUTPUT=averaged, STEPS=1, SAMPLES=2, SEED=1)
    with rasterio.open(averaged) as ds:
        assert ds.tags()["SKYCLEAR_STEPS"] == "1" and ds.tags()["SKYCLEAR_SAMPLES"] == "2"


def test_fusion_network_on_a_real_pair(tmp_path, data_dir):
    pair = data_dir / "sar_optical"
    out = tmp_path / "fused.tif"
    run("skyclear:fuse_sar_optical", SAR=pair / "cfog_stest3_sar.tif", OPTICAL=pair / "cfog_stest3_optical.tif",
        METHOD=0, OUTPUT=out)
    assert same_grid(out, pair / "cfog_stest3_optical.tif")
    with rasterio.open(out) as ds:
        assert ds.count == 3 and ds.dtypes[0] == "uint8" and ds.tags()["SKYCLEAR_FUSION_METHOD"] == "network"
    metrics = run("skyclear:evaluate_fusion", FUSED=out, SAR=pair / "cfog_stest3_sar.tif",
                  OPTICAL=pair / "cfog_stest3_optical.tif", OUTPUT=tmp_path / "m.csv")
    assert 0 < metrics["QABF"] < 1 and metrics["EN"] > 5


def test_optical_cloud_removal_keeps_georeference_and_nodata(tmp_path, data_dir):
    scene = data_dir / "scenes" / "rasterio_RGB.byte.tif"  # EPSG:32618, uint8, nodata 0 collar
    out = tmp_path / "clear.tif"
    run("skyclear:remove_clouds_optical", INPUT=scene, OUTPUT=out, MODE=1)  # reference network only
    assert same_grid(out, scene)
    with rasterio.open(out) as ds, rasterio.open(scene) as src:
        # the collar is marked by a mask band: nodata 0 would also hide valid black pixels
        assert ds.dtypes[0] == "uint8" and src.nodata == 0 and ds.nodata is None
        assert ((ds.dataset_mask() == 0) == (src.dataset_mask() == 0)).all()
        assert ds.tags()["SKYCLEAR_MODE"] == "reference"
