"""What a hostile-but-realistic user brings: each case asserts the error names the file and
the problem, that no temporary or partial file remains, and that an existing output at the
target path is byte-identical afterwards (issue 9)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from factories import (PREVIOUS, base_card, conv_model, identity_model, leftovers, previous_output, random_image,
                       write_raster)
from skyclear.plugin.core import atomic, jobs
from skyclear.plugin.core.errors import Cancelled, InputError, OutputError
from skyclear.plugin.core.evaluation import evaluate_restoration, write_csv



def assert_untouched(path):
    assert Path(path).read_bytes() == PREVIOUS


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: writes into it run out of space."""
    mount = tmp_path / "small_disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


# ---------------------------------------------------------------------------------------
# 1. disk full


def fill_up(disk, leave: int = 150 * 1024) -> None:
    """Leave ``leave`` bytes free: a smooth result compresses well enough to fit in 1 MiB."""
    st = os.statvfs(disk)
    (disk / "filler").write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))


def test_disk_full_fails_and_keeps_the_previous_output(small_disk, data_dir):
    triplet = data_dir / "sen12mscr" / "oriolac_5278"
    out = previous_output(small_disk / "clear.tif")
    fill_up(small_disk)
    with pytest.raises(OutputError, match=r"clear.tif|cloud_probability.tif") as err:
        jobs.remove_clouds_sar(optical=str(triplet / "s2_cloudy.tif"), sar=str(triplet / "s1.tif"),
                               output=str(out), device="cpu")
    assert "nothing was written" in str(err.value)
    assert_untouched(out)
    assert leftovers(small_disk) == []
    assert sorted(os.listdir(small_disk)) == ["clear.tif", "filler"]


def test_disk_full_csv(small_disk):
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # leave almost no room
        try:
            f.write(b"\0" * (1024 * 1024))
        except OSError:
            pass
    out = small_disk / "m.csv"
    with pytest.raises(OutputError, match="m.csv"):
        write_csv([{"band": f"b{i}", "psnr": 1.0 * i} for i in range(5000)], str(out))
    assert not out.exists()
    assert leftovers(small_disk) == []


def test_disk_full_through_qgis_process(small_disk, data_dir):
    triplet = data_dir / "sen12mscr" / "oriolac_5278"
    out = previous_output(small_disk / "clear.tif")
    fill_up(small_disk)
    proc = qgis_process("skyclear:remove_clouds_sar", OPTICAL=triplet / "s2_cloudy.tif", SAR=triplet / "s1.tif",
                        OUTPUT=out)
    assert proc.returncode != 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "clear.tif" in proc.stdout + proc.stderr
    assert_untouched(out)
    assert leftovers(small_disk) == []
    assert sorted(os.listdir(small_disk)) == ["clear.tif", "filler"]


# ---------------------------------------------------------------------------------------
# 2. the optical input defines the grid, whatever the card order


def test_sar_first_card_writes_on_the_optical_grid(tmp_path):
    card = base_card(["R", "G", "B"], ["R", "G", "B"], sar_bands=["VV"], overlap=4, tile=32)
    card["inputs"] = card["inputs"][::-1]   # sar listed first, as the bundled fusion card does
    model = conv_model(str(tmp_path / "m.onnx"), 3, 3, sar_channels=1, card=card)
    optical = write_raster(str(tmp_path / "opt.tif"), random_image((3, 62, 58), "uint8"), crs="EPSG:32633",
                           transform=from_origin(500000, 4650000, 20, 20))
    # SAR in degrees covering the optical box with a margin, on a coarser grid, float
    from rasterio.warp import transform_bounds

    west, south, east, north = transform_bounds("EPSG:32633", "EPSG:4326", 500000, 4650000 - 62 * 20,
                                                500000 + 58 * 20, 4650000)
    step = 0.0003
    shape = (int((north - south) / step) + 4, int((east - west) / step) + 4)
    sar = write_raster(str(tmp_path / "sar.tif"), np.random.default_rng(1).normal(-12, 3, (1,) + shape).astype("float32"),
                       crs="EPSG:4326", transform=from_origin(west - step, north + step, step, step))
    out = tmp_path / "o.tif"
    jobs.run_model(model=model, optical=optical, sar=sar, output=str(out))
    with rasterio.open(out) as o, rasterio.open(optical) as i:
        assert (o.crs, o.transform, o.shape, o.dtypes[0]) == (i.crs, i.transform, i.shape, "uint8")
    # the extent is taken on the optical grid too
    out2 = tmp_path / "o2.tif"
    jobs.run_model(model=model, optical=optical, sar=sar, output=str(out2),
                   extent=(500000 + 200, 4650000 - 400, 500000 + 600, 4650000 - 200))
    with rasterio.open(out2) as o:
        assert o.crs.to_epsg() == 32633 and o.shape == (10, 20) and o.transform.a == 20


# ---------------------------------------------------------------------------------------
# 3. NaN/inf are nodata, always


def test_non_finite_sar_is_nodata(tmp_path, data_dir):
    triplet = data_dir / "sen12mscr" / "oriolac_5278"
    with rasterio.open(triplet / "s1.tif") as ds:
        s1, profile = ds.read(), ds.profile
    s1[:, :, 100:164] = np.nan
    s1[1, 10, 10] = np.inf
    profile.pop("nodata", None)
    bad_sar = tmp_path / "s1_nan.tif"
    with rasterio.open(bad_sar, "w", **profile) as ds:
        ds.write(s1)
    out = tmp_path / "clear.tif"
    jobs.remove_clouds_sar(optical=str(triplet / "s2_cloudy.tif"), sar=str(bad_sar), output=str(out), device="cpu")
    with rasterio.open(out) as ds:
        data, mask = ds.read(), ds.dataset_mask()
    invalid = np.zeros(mask.shape, bool)
    invalid[:, 100:164] = True
    invalid[10, 10] = True
    np.testing.assert_array_equal(mask == 0, invalid)
    # NaN that reached the network came out as DN 0/1 in every band; valid pixels are real values
    assert not (data[:, ~invalid] <= 1).all(axis=0).any()


# ---------------------------------------------------------------------------------------
# 4. integer outputs: valid zeros stay zeros, nodata only when there is some


def test_valid_zeros_are_kept_and_no_nodata_is_declared(tmp_path, monkeypatch):
    monkeypatch.setenv("GDAL_PAM_ENABLED", "YES")  # as users have it (conftest turns it off): no .aux.xml either
    img = random_image((3, 40, 40), "uint16", seed=3, low=0, high=5)
    assert (img == 0).any()
    src = write_raster(str(tmp_path / "in.tif"), img)
    model = identity_model(str(tmp_path / "id.onnx"), 3, clip=(0, 65535), scale=65535.0, out_dtype="uint16")
    jobs.run_model(model=model, optical=src, output=str(tmp_path / "o.tif"), tile_size=16, overlap=4)
    with rasterio.open(tmp_path / "o.tif") as ds:
        assert ds.nodata is None
        assert ds.descriptions == ("B1", "B2", "B3")
        np.testing.assert_array_equal(ds.read(), img)
    assert sorted(os.listdir(tmp_path)) == ["id.onnx", "in.tif", "o.tif"]  # no .aux.xml beside it


def test_nodata_value_that_cannot_collide(tmp_path):
    img = random_image((3, 40, 40), "uint16", seed=3, low=0, high=5000)
    img[:, :5] = 0
    src = write_raster(str(tmp_path / "in.tif"), img, nodata=0)
    model = identity_model(str(tmp_path / "id.onnx"), 3, clip=(0, 10000), scale=10000.0, out_dtype="uint16")
    jobs.run_model(model=model, optical=src, output=str(tmp_path / "o.tif"), tile_size=16, overlap=4)
    with rasterio.open(tmp_path / "o.tif") as ds:
        out = ds.read()
        assert ds.nodata == 65535  # 0 is a valid result of this model, 65535 is not
    hole = (img == 0).all(axis=0)
    assert (out[:, hole] == 65535).all()
    np.testing.assert_array_equal(out[:, ~hole], img[:, ~hole])


# ---------------------------------------------------------------------------------------
# 5. same path twice; outputs committed as a set


def test_two_outputs_at_one_path_are_refused(tmp_path, data_dir):
    triplet = data_dir / "sen12mscr" / "oriolac_5278"
    out = previous_output(tmp_path / "same.tif")
    with pytest.raises(InputError, match="same file"):
        jobs.remove_clouds_sar(optical=str(triplet / "s2_cloudy.tif"), sar=str(triplet / "s1.tif"),
                               output=str(out), cloud_probability=str(out), device="cpu")
    assert_untouched(out)
    assert leftovers(tmp_path) == []


def test_output_equal_to_an_input_is_refused(tmp_path):
    img = random_image((3, 30, 30), "uint8")
    src = write_raster(str(tmp_path / "in.tif"), img)
    before = Path(src).read_bytes()
    model = identity_model(str(tmp_path / "id.onnx"), 3)
    with pytest.raises(InputError, match="destroy"):
        jobs.run_model(model=model, optical=src, output=src)
    # also through another spelling of the same path
    with pytest.raises(InputError, match="destroy"):
        jobs.run_model(model=model, optical=src, output=str(tmp_path / "." / "in.tif"))
    assert Path(src).read_bytes() == before
    assert leftovers(tmp_path) == []


def test_a_failed_commit_restores_every_previous_output(tmp_path, data_dir, monkeypatch):
    triplet = data_dir / "sen12mscr" / "oriolac_5278"
    out = previous_output(tmp_path / "clear.tif")
    prob = previous_output(tmp_path / "cloud.tif")
    real_replace, calls = os.replace, []

    def flaky_replace(src, dst):
        calls.append((src, dst))
        if ".part" in str(src) and str(dst).endswith("cloud.tif"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", flaky_replace)
    with pytest.raises(OSError):
        jobs.remove_clouds_sar(optical=str(triplet / "s2_cloudy.tif"), sar=str(triplet / "s1.tif"),
                               output=str(out), cloud_probability=str(prob), device="cpu")
    assert any(str(dst).endswith("clear.tif") and ".part" in str(src) for src, dst in calls)  # it got that far
    assert_untouched(out)
    assert_untouched(prob)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------
# 8. SIGTERM, and temp files left by a killed run


def test_sigterm_leaves_no_temporary_file(tmp_path, data_dir):
    wrapper = Path(sys.prefix) / "bin" / "skyclear-process"
    if not wrapper.exists():
        pytest.skip("skyclear-process is not installed (run `make setup`)")
    out = previous_output(tmp_path / "restored.tif")
    scene = data_dir / "scenes" / "rasterio_RGB.byte.tif"  # 791x718: many diffusion tiles
    proc = subprocess.Popen([str(wrapper), "run", "skyclear:remove_clouds_optical", "--", f"INPUT={scene}",
                             f"OUTPUT={out}", "STEPS=10", "TILE_SIZE=256"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and not any(".part" in n for n in os.listdir(tmp_path)):
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        time.sleep(0.2)
    assert any(".part" in n for n in os.listdir(tmp_path)), "the run never started writing"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert leftovers(tmp_path) == []
    assert_untouched(out)


def test_stale_temporary_files_of_dead_processes_are_swept(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".o.tif.skyclear-{atomic.HOST}-{dead.pid}-0123abcd.part.tif"
    stale.write_bytes(b"left by a SIGKILLed run")
    elsewhere = tmp_path / f".o.tif.skyclear-otherhost-{dead.pid}-0123abcd.part.tif"
    elsewhere.write_bytes(b"another machine of a cluster is writing this")
    mine = Path(atomic.temp_path(str(tmp_path / "x.tif")))  # a live run's temp: kept
    mine.write_bytes(b"in progress")
    src = write_raster(str(tmp_path / "in.tif"), random_image((3, 20, 20), "uint8"))
    jobs.run_model(model=identity_model(str(tmp_path / "id.onnx"), 3), optical=src, output=str(tmp_path / "o.tif"))
    assert not stale.exists() and mine.exists() and elsewhere.exists()


# ---------------------------------------------------------------------------------------
# 9. cancel takes effect within a step and never commits


def test_cancel_stops_a_single_tile_diffusion_run_within_steps(tmp_path, data_dir):
    src = data_dir / "rice1" / "32_cloudy.png"
    if not src.exists():
        src = sorted((data_dir / "rice1").glob("*_cloudy.png"))[0]
    out = previous_output(tmp_path / "restored.tif")
    polls = []

    def cancelled():
        polls.append(time.time())
        return len(polls) > 3   # the first poll is before the first tile batch

    started = time.time()
    with pytest.raises(Cancelled):
        jobs.remove_clouds_optical(optical=str(src), output=str(out), steps=50, device="cpu",
                                   is_cancelled=cancelled)
    assert len(polls) == 4        # stopped at the step that saw the cancel, not after 50 steps
    assert time.time() - started < 30
    assert_untouched(out)
    assert leftovers(tmp_path) == []


def test_cancel_after_the_last_tile_commits_nothing(tmp_path):
    src = write_raster(str(tmp_path / "in.tif"), random_image((3, 20, 20), "uint8"))
    out = previous_output(tmp_path / "o.tif")
    state = {"tiles_done": False}

    def progress(fraction, message):
        state["tiles_done"] = fraction >= 1.0

    with pytest.raises(Cancelled):
        jobs.run_model(model=identity_model(str(tmp_path / "id.onnx"), 3), optical=src, output=str(out),
                       progress=progress, is_cancelled=lambda: state["tiles_done"])
    assert_untouched(out)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------
# 12. messages instead of tracebacks


def test_truncated_geotiff_names_the_file(tmp_path, data_dir):
    whole = (data_dir / "sen12mscr" / "oriolac_5278" / "s2_cloudy.tif").read_bytes()
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(whole[: len(whole) // 2])
    model = identity_model(str(tmp_path / "id.onnx"), 13, clip=(0, 10000), scale=10000.0, out_dtype="uint16")
    out = previous_output(tmp_path / "o.tif")
    with pytest.raises(InputError, match=r"truncated.tif.*(damaged or truncated|not a raster GDAL can read)"):
        jobs.run_model(model=model, optical=str(truncated), output=str(out))
    assert_untouched(out)
    assert leftovers(tmp_path) == []


def test_unwritable_outputs_are_named(tmp_path):
    src = write_raster(str(tmp_path / "in.tif"), random_image((3, 20, 20), "uint8"))
    model = identity_model(str(tmp_path / "id.onnx"), 3)
    with pytest.raises(InputError, match="folder does not exist"):
        jobs.run_model(model=model, optical=src, output=str(tmp_path / "missing" / "o.tif"))
    with pytest.raises(InputError, match="is a folder"):
        jobs.run_model(model=model, optical=src, output=str(tmp_path))
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    try:
        if os.access(readonly, os.W_OK):  # root ignores permissions: a read-only mount is not available here
            pytest.skip("running as root: directory permissions are not enforced")
        with pytest.raises(InputError, match="not writable"):
            jobs.run_model(model=model, optical=src, output=str(readonly / "o.tif"))
    finally:
        readonly.chmod(0o755)


def test_steps_out_of_range(tmp_path, data_dir):
    src = sorted((data_dir / "rice1").glob("*_cloudy.png"))[0]
    for steps in (0, 100000):
        with pytest.raises(InputError, match="steps"):
            jobs.remove_clouds_optical(optical=str(src), output=str(tmp_path / "o.tif"), steps=steps)
    assert leftovers(tmp_path) == []


def test_evaluation_of_degenerate_rasters(tmp_path):
    tiny = write_raster(str(tmp_path / "tiny.tif"), random_image((3, 1, 1), "uint8"))
    with pytest.raises(InputError, match=r"tiny.tif is 1x1 pixels"):
        evaluate_restoration(tiny, tiny)
    nan = write_raster(str(tmp_path / "nan.tif"), np.full((3, 20, 20), np.nan, np.float32))
    with pytest.raises(InputError, match="no pixel is valid"):
        evaluate_restoration(nan, nan)


# ---------------------------------------------------------------------------------------
# smaller


def test_degree_grids_that_drift_are_not_treated_as_aligned(tmp_path):
    """Pixel sizes 1e-4 apart (relative) drift by a whole pixel over 10 000 pixels: such an
    input must be resampled onto the optical grid, not read pixel for pixel."""
    step = 0.0000898
    optical = write_raster(str(tmp_path / "opt.tif"), random_image((3, 50, 50), "uint8"), crs="EPSG:4326",
                           transform=from_origin(12.7, 42.1, step, step))
    sar = write_raster(str(tmp_path / "sar.tif"), np.ones((1, 50, 50), np.float32), crs="EPSG:4326",
                       transform=from_origin(12.7, 42.1, step * (1 + 1e-4), step * (1 + 1e-4)))
    from skyclear.plugin.core.raster_io import RasterSource

    with RasterSource(optical, [1], "OPTICAL") as opt, RasterSource(sar, [1], "SAR", grid=opt.grid) as s:
        assert s.offset is None  # warped, not read as if aligned
    same = write_raster(str(tmp_path / "same.tif"), np.ones((1, 50, 50), np.float32), crs="EPSG:4326",
                        transform=from_origin(12.7, 42.1, step, step))
    with RasterSource(optical, [1], "OPTICAL") as opt, RasterSource(same, [1], "SAR", grid=opt.grid) as s:
        assert s.offset == (0, 0)


def qgis_process(algorithm, **params):
    wrapper = Path(sys.prefix) / "bin" / "skyclear-process"
    if not wrapper.exists():
        pytest.skip("skyclear-process is not installed (run `make setup`)")
    return subprocess.run([str(wrapper), "run", algorithm, "--"] + [f"{k}={v}" for k, v in params.items()],
                          capture_output=True, text=True, timeout=600)


def test_unreadable_file_is_not_reported_as_missing(tmp_path):
    bogus = tmp_path / "not_a_raster.tif"
    bogus.write_text("this is not a GeoTIFF")
    model = identity_model(str(tmp_path / "id.onnx"), 3)
    proc = qgis_process("skyclear:run_model", MODEL=model, OPTICAL=bogus, OUTPUT=tmp_path / "o.tif")
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "not_a_raster.tif" in text and "not a raster GDAL can read" in text, text[-2000:]


def test_headless_run_says_why_the_gpu_is_not_used(tmp_path):
    src = write_raster(str(tmp_path / "in.tif"), random_image((3, 20, 20), "uint8"))
    model = identity_model(str(tmp_path / "id.onnx"), 3)
    proc = qgis_process("skyclear:run_model", MODEL=model, OPTICAL=src, OUTPUT=tmp_path / "o.tif", DEVICE=0)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    from skyclear.plugin.core.runtime import gpu_status

    available, reason = gpu_status()
    if available:
        pytest.skip("a GPU is available here")
    assert f"GPU not used: {reason}" in proc.stdout


def test_extent_on_a_raster_without_georeference(tmp_path):
    img = random_image((3, 80, 120), "uint8")
    src = write_raster(str(tmp_path / "plain.tif"), img, crs=None)
    out = tmp_path / "o.tif"
    jobs.run_model(model=identity_model(str(tmp_path / "id.onnx"), 3), optical=src, output=str(out),
                   extent=(10, 10, 110, 60))  # pixel coordinates: columns 10-110, rows 10-60
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(), img[:, 10:60, 10:110])



def test_diffusion_reports_progress_within_a_single_tile(tmp_path, data_dir):
    src = sorted((data_dir / "rice1").glob("*_cloudy.png"))[0]
    seen = []
    jobs.remove_clouds_optical(optical=str(src), output=str(tmp_path / "o.tif"), steps=5, device="cpu",
                               progress=lambda fraction, message: seen.append(fraction))
    assert len(seen) >= 5 and seen == sorted(seen) and seen[-1] == 1.0
    assert 0 < seen[0] < 1  # before the tile was finished


def test_a_missing_folder_is_named_once_for_all_its_outputs(tmp_path):
    folder = tmp_path / "not_there"
    problems = jobs.output_problems([("OUTPUT", str(folder / "clear.tif")),
                                     ("CLOUD_PROBABILITY", str(folder / "clear_cloud_probability.tif"))])
    assert problems == [f"output folder does not exist: {folder}"]


def test_an_image_smaller_than_the_tile_is_not_padded_to_it(tmp_path):
    src = write_raster(str(tmp_path / "tiny.tif"), random_image((3, 23, 37), "uint8"))
    model = identity_model(str(tmp_path / "m.onnx"), 3, tile=64, overlap=8, multiple=4)
    report = jobs.run_model(model=model, optical=src, output=str(tmp_path / "o.tif"), tile_size=4096, device="cpu")
    assert (report.tile_size, report.tiles) == (40, 1)   # 37 rounded up to the model's multiple of 4, not 4096
    with rasterio.open(src) as a, rasterio.open(tmp_path / "o.tif") as b:
        assert (b.width, b.height) == (37, 23) and np.array_equal(a.read(), b.read())


def test_a_graph_with_fixed_tile_size_keeps_it_and_names_it(tmp_path):
    from onnx import TensorProto, helper

    from factories import save_model

    src = write_raster(str(tmp_path / "tiny.tif"), random_image((3, 23, 37), "uint8"))
    fixed = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 3, 64, 64]) for n in ("optical", "restored")]
    model = save_model([helper.make_node("Identity", ["optical"], ["restored"])], fixed[:1], fixed[1:], [],
                       str(tmp_path / "fixed.onnx"), base_card(["B1", "B2", "B3"], ["B1", "B2", "B3"], tile=64, overlap=8))
    report = jobs.run_model(model=model, optical=src, output=str(tmp_path / "o.tif"), device="cpu")
    assert report.tile_size == 64   # the small image is padded to the graph's size, not fitted to itself
    with pytest.raises(InputError, match="takes tiles of exactly 64 px"):
        jobs.run_model(model=model, optical=src, output=str(tmp_path / "p.tif"), tile_size=128, device="cpu")
    assert not (tmp_path / "p.tif").exists()
