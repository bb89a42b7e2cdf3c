"""Regressions found by trying to break the tools headless with real and realistic inputs:
each case asserts a clear error naming the file and the problem, no partial or temporary
file left behind, and a previous output at the target path untouched."""
import json
import logging
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from rasterio.transform import from_origin

from factories import (PREVIOUS, base_card, conv_model, identity_model, leftovers, previous_output, random_image,
                       write_raster)
from skyclear.plugin.core import jobs
from skyclear.plugin.core.errors import InputError, ModelCardError
from skyclear.plugin.core.model_card import METADATA_KEY, read_card, write_card
from skyclear.plugin.core.tools import S1_BANDS, S2_BANDS
from skyclear.plugin.core.zoo import default_model



def s2_scene(path, size=64, dtype="uint16", high=4000, nodata=None, seed=0):
    data = random_image((13, size, size), dtype, seed=seed, low=1, high=high)
    return write_raster(str(path), data, nodata=nodata, descriptions=S2_BANDS)


def s1_scene(path, data):
    return write_raster(str(path), np.asarray(data, np.float32), descriptions=S1_BANDS)


# ---------------------------------------------------------------------------------------
# a SIGINT the parent told the process to ignore must not delete the run's temporary files


def test_ignored_sigint_does_not_remove_the_runs_temporary_files(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, time
        from skyclear.plugin.core import atomic
        signal.signal(signal.SIGINT, signal.SIG_IGN)     # as for `cmd &` in a script, or nohup
        tmp = atomic.temp_path({str(tmp_path / "out.tif")!r})
        with atomic.cleanup_on_signals():
            open(tmp, "w").write("half-written tile rows")
            atomic.register(tmp)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            print("alive", os.path.exists(tmp))
        print("restored", signal.getsignal(signal.SIGINT) == signal.SIG_IGN)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # before the fix the handler deleted the file, then re-raised the ignored signal: the run went
    # on and failed at the end with "the written file cannot be read back (is the disk full?)"
    assert "alive True" in proc.stdout
    assert "restored True" in proc.stdout


# ---------------------------------------------------------------------------------------
# inputs without any valid pixel: refused, not an all-nodata output


def test_all_nan_sar_is_refused_naming_the_file(tmp_path):
    optical = s2_scene(tmp_path / "s2.tif")
    sar = s1_scene(tmp_path / "s1_nan.tif", np.full((2, 64, 64), np.nan))
    out = previous_output(tmp_path / "clear.tif")
    with pytest.raises(InputError, match=r"SAR: s1_nan\.tif has no valid pixel.*nothing was written"):
        jobs.remove_clouds_sar(optical=optical, sar=sar, output=str(out))
    assert out.read_bytes() == PREVIOUS
    assert not (tmp_path / "clear_cloud_probability.tif").exists()
    assert leftovers(tmp_path) == []


def test_inputs_whose_valid_areas_never_meet_are_refused(tmp_path):
    """Optical valid on the left only (nodata 0 declared), SAR valid on the right only."""
    optical = random_image((3, 48, 48), "uint8", low=1)
    optical[:, :, 24:] = 0
    opt = write_raster(str(tmp_path / "opt.tif"), optical, nodata=0)
    sar = np.full((1, 48, 48), np.nan, np.float32)
    sar[:, :, 24:] = 1.0
    sar_path = write_raster(str(tmp_path / "sar.tif"), sar)
    model = conv_model(str(tmp_path / "m.onnx"), 3, 3, card=base_card(["R", "G", "B"], ["R", "G", "B"],
                                                                      sar_bands=["S"]), sar_channels=1)
    out = tmp_path / "o.tif"
    with pytest.raises(InputError, match=r"opt\.tif.*sar\.tif.*no valid pixel in common"):
        jobs.run_model(model=model, optical=opt, sar=sar_path, output=str(out))
    assert not out.exists() and leftovers(tmp_path) == []


def test_partly_nodata_inputs_still_run(tmp_path):
    """The refusal is for empty outputs only: a SAR covering half the optical still runs."""
    optical = s2_scene(tmp_path / "s2.tif")
    sar = np.full((2, 64, 64), np.nan, np.float32)
    sar[:, :, :32] = -12.0
    report = jobs.remove_clouds_sar(optical=optical, sar=s1_scene(tmp_path / "s1.tif", sar),
                                    output=str(tmp_path / "clear.tif"))
    assert report.valid_fraction == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------
# model files whose card does not fit


def test_sar_model_whose_card_lists_one_output_is_refused(tmp_path):
    model = tmp_path / "one_output.onnx"
    card = json.loads(onnx.load(default_model("sar_cloud_removal")).metadata_props[0].value)
    card["outputs"] = card["outputs"][:1]
    write_card(default_model("sar_cloud_removal"), card, out_path=str(model))
    out = previous_output(tmp_path / "clear.tif")
    with pytest.raises(ModelCardError, match=r"one_output\.onnx.*two outputs.*lists 1"):
        jobs.remove_clouds_sar(optical=s2_scene(tmp_path / "s2.tif"),
                               sar=s1_scene(tmp_path / "s1.tif", np.full((2, 64, 64), -10.0)), model=str(model),
                               output=str(out))
    assert out.read_bytes() == PREVIOUS and leftovers(tmp_path) == []


def test_invalid_card_value_names_the_model_file(tmp_path):
    path = identity_model(str(tmp_path / "bad_tiling.onnx"), 3)
    model = onnx.load(path)
    card = json.loads(model.metadata_props[0].value)
    card["tiling"]["tile_size"] = -5
    prop = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    prop.value = json.dumps(card)
    onnx.save(model, path)
    with pytest.raises(ModelCardError, match=r"bad_tiling\.onnx.*tiling\.tile_size"):
        read_card(path)


# ---------------------------------------------------------------------------------------
# outputs: GeoTIFF only


@pytest.mark.parametrize("name", ["fused.png", "fused.jpg", "fused.img"])
def test_output_named_for_another_format_is_refused(tmp_path, name):
    opt = write_raster(str(tmp_path / "opt.tif"), random_image((3, 40, 40), "uint8"))
    sar = write_raster(str(tmp_path / "sar.tif"), random_image((1, 40, 40), "uint8", seed=1))
    out = tmp_path / name
    with pytest.raises(InputError, match=rf"{name}.*GeoTIFF.*\.tif"):
        jobs.fuse_sar_optical(sar=sar, optical=opt, output=str(out), method="average")
    assert not out.exists() and leftovers(tmp_path) == []
    assert any("GeoTIFF" in p for p in jobs.output_problems([("Output", str(out))]))


@pytest.mark.parametrize("name", ["fused.tif", "fused.TIFF", "fused"])
def test_geotiff_output_names_are_accepted(tmp_path, name):
    opt = write_raster(str(tmp_path / "opt.tif"), random_image((3, 40, 40), "uint8"))
    sar = write_raster(str(tmp_path / "sar.tif"), random_image((1, 40, 40), "uint8", seed=1))
    jobs.fuse_sar_optical(sar=sar, optical=opt, output=str(tmp_path / name), method="average")
    assert (tmp_path / name).read_bytes()[:2] in (b"II", b"MM")


# ---------------------------------------------------------------------------------------
# value ranges and grids


def test_8bit_optical_into_the_sentinel2_dn_model_warns_headless(tmp_path, caplog):
    """uint8 values lie inside 0–10000, so the sampled range check alone stayed silent."""
    optical = s2_scene(tmp_path / "s2_u8.tif", dtype="uint8", high=255)
    sar = s1_scene(tmp_path / "s1.tif", np.full((2, 64, 64), -10.0))
    with caplog.at_level(logging.WARNING, logger="skyclear"):
        jobs.remove_clouds_sar(optical=optical, sar=sar, output=str(tmp_path / "clear.tif"))
    assert "8-bit" in caplog.text and "ibhfn" in caplog.text


def test_uint16_optical_does_not_get_the_8bit_warning(tmp_path, caplog):
    optical = s2_scene(tmp_path / "s2.tif")
    sar = s1_scene(tmp_path / "s1.tif", np.full((2, 64, 64), -10.0))
    with caplog.at_level(logging.WARNING, logger="skyclear"):
        jobs.remove_clouds_sar(optical=optical, sar=sar, output=str(tmp_path / "clear.tif"))
    assert "8-bit" not in caplog.text


def test_same_size_grids_without_crs_say_the_geotransforms_differ(tmp_path):
    opt = write_raster(str(tmp_path / "opt.tif"), random_image((3, 32, 32), "uint8"), crs=None)
    sar = write_raster(str(tmp_path / "sar.tif"), random_image((1, 32, 32), "uint8"),
                       transform=from_origin(500000, 4600000, 10, 10))
    with pytest.raises(InputError, match="different geotransforms") as err:
        jobs.check_grids(optical=opt, sar=sar)
    assert "32x32 vs 32x32" not in str(err.value)


# ---------------------------------------------------------------------------------------
# real data: a real S1 scene with its VV/VH replaced by NaN, on the real S2 grid


def test_real_cloudy_scene_with_an_all_nan_sar_is_refused(tmp_path, data_dir):
    import rasterio

    folder = data_dir / "sen12mscr_s1_cloudy" / "ROIs1868_summer_19_p30"
    with rasterio.open(folder / "s1.tif") as src:
        profile = src.profile
    with rasterio.open(tmp_path / "s1_nan.tif", "w", **profile) as dst:
        dst.write(np.full((2, profile["height"], profile["width"]), np.nan, np.float32))
    out = previous_output(tmp_path / "clear.tif")
    with pytest.raises(InputError, match=r"s1_nan\.tif has no valid pixel"):
        jobs.remove_clouds_sar(optical=str(folder / "s2_cloudy.tif"), sar=str(tmp_path / "s1_nan.tif"),
                               output=str(out))
    assert out.read_bytes() == PREVIOUS and leftovers(tmp_path) == []


def test_processing_offers_only_geotiff_outputs(qgis_app):
    from skyclear.plugin.processing.provider import SkyClearProvider

    provider = SkyClearProvider()
    assert provider.supportedOutputRasterLayerExtensions() == ["tif", "tiff"]
    assert provider.defaultRasterFileExtension() == "tif"
