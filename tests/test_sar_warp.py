"""SAR on another CRS/resolution is warped onto the optical grid tile by tile without seams:
every tile gets exactly the values a whole-scene (block by block) warp gives, whatever the
tile size, and within the approximate transformer's tolerance of an exact warp."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.vrt import WarpedVRT
from rasterio.warp import calculate_default_transform, reproject
from rasterio.windows import Window

from factories import base_card, conv_model, random_image, write_raster
from skyclear.plugin.core import jobs
from skyclear.plugin.core.engine import GDAL_CACHE_BYTES
from skyclear.plugin.core.raster_io import Grid, RasterSource

SIZE = 700                                           # optical grid, EPSG:32633, 10 m
OPTICAL = Grid(rasterio.crs.CRS.from_epsg(32633), from_origin(300000, 5000000, 10, 10), SIZE, SIZE)


def smooth_sar(n: int) -> np.ndarray:
    """VV, VH in dB: smooth structure (a seam would show), NaN beyond a diagonal swath edge."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) * 10.0
    vv = -12 + 4 * np.sin(xx / 830) * np.cos(yy / 1170) + 2 * np.sin((xx + yy) / 310) + np.cos(xx / 97 - yy / 143)
    sar = np.stack([vv, vv - 7 + 1.5 * np.sin(yy / 410)]).astype(np.float32)
    sar[:, xx / 10 + 0.3 * yy / 10 > 1.05 * n] = np.nan
    return sar


def sar_on_other_grid(path, crs: str, resolution, nodata) -> str:
    """The smooth SAR, reprojected (bilinear) from the optical grid to ``crs``."""
    sar = smooth_sar(SIZE)
    bounds = rasterio.transform.array_bounds(SIZE, SIZE, OPTICAL.transform)
    transform, w, h = calculate_default_transform(OPTICAL.crs, crs, SIZE, SIZE, *bounds, resolution=resolution)
    out = np.full((2, h, w), np.nan, np.float32)
    reproject(sar, out, src_transform=OPTICAL.transform, src_crs=OPTICAL.crs, src_nodata=np.nan,
              dst_transform=transform, dst_crs=crs, dst_nodata=np.nan, resampling=Resampling.bilinear)
    if nodata is not None and not np.isnan(nodata):
        out[np.isnan(out)] = nodata
    return write_raster(str(path), out, crs=crs, transform=transform, nodata=nodata)


CASES = {
    "4326, nodata NaN": ("EPSG:4326", None, float("nan")),
    "32632 20 m, no nodata (alpha band)": ("EPSG:32632", 20.0, None),
    "32632 20 m, nodata -9999": ("EPSG:32632", 20.0, -9999.0),
}


@pytest.fixture(params=list(CASES), scope="module")
def sar_path(request, tmp_path_factory):
    crs, resolution, nodata = CASES[request.param]
    return sar_on_other_grid(tmp_path_factory.mktemp("sar") / "sar.tif", crs, resolution, nodata)


def tile_reads(path: str, tile: int, overlap: int):
    """RasterSource.read on the engine's tile windows, under the engine's GDAL settings."""
    stride = tile - overlap
    with RasterSource(path, [1, 2], "SAR", grid=OPTICAL) as source, rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        assert source.offset is None      # really warped
        for y in range(0, SIZE - overlap, stride):
            for x in range(0, SIZE - overlap, stride):
                window = Window(x, y, min(tile, SIZE - x), min(tile, SIZE - y))
                yield window, *source.read(window)


def exact_warp(path: str) -> np.ndarray:
    """The whole SAR warped onto the optical grid in one go, exact transform."""
    out = np.full((2, SIZE, SIZE), np.nan, np.float32)
    with rasterio.open(path) as src:
        reproject(rasterio.band(src, [1, 2]), out, dst_transform=OPTICAL.transform, dst_crs=OPTICAL.crs,
                  src_nodata=np.nan if src.nodata is None else src.nodata, dst_nodata=np.nan,
                  resampling=Resampling.bilinear, tolerance=0, warp_mem_limit=512)
    return out


@pytest.mark.parametrize("tile,overlap", [(256, 32), (600, 88)])
def test_overlapping_tiles_read_the_same_sar(sar_path, tile, overlap):
    """No seam can come from the read: where two tiles overlap they got identical values and
    validity. (Before reading by VRT blocks, 600-pixel tiles differed by up to 0.01 dB and
    in the validity of swath-edge pixels: GDAL warps windows over 512² in one pass.)"""
    seen = np.full((2, SIZE, SIZE), np.nan, np.float32)
    seen_valid = np.zeros((SIZE, SIZE), np.int8)          # 0 not read yet, 1 valid, 2 invalid
    overlapping = 0
    for window, data, valid in tile_reads(sar_path, tile, overlap):
        rows, cols = window.toslices()
        before, before_valid = seen[:, rows, cols], seen_valid[rows, cols]
        again = before_valid > 0
        overlapping += int(again.sum())
        np.testing.assert_array_equal(before_valid[again], np.where(valid, 1, 2)[again])
        both = again & valid
        np.testing.assert_array_equal(before[:, both], data[:, both])
        before[:, ~again] = data[:, ~again]
        before_valid[~again] = np.where(valid, 1, 2)[~again]
    assert overlapping > 0 and (seen_valid > 0).all()


def test_tiles_match_a_whole_scene_warp(sar_path):
    """Tile by tile is close to one exact warp of the whole scene: GDAL warps each VRT block
    with its own approximate transformer and, where the source is finer (EPSG:4326 columns are
    7 m), its own kernel width; the swath edge lands on the same pixels but for a few."""
    truth = exact_warp(sar_path)
    truth_valid = np.isfinite(truth).all(axis=0)
    diffs, mismatched = [], 0
    for window, data, valid in tile_reads(sar_path, 256, 32):
        rows, cols = window.toslices()
        ref, ref_valid = truth[:, rows, cols], truth_valid[rows, cols]
        mismatched += int((valid != ref_valid).sum())
        both = valid & ref_valid
        diffs.append(np.abs(data[:, both] - ref[:, both]))
    diffs = np.concatenate(diffs, axis=1)
    # dB, on a field spanning ~16 dB; nearest resampling or a half-pixel shift: mean 0.03-0.05
    assert diffs.max() < 0.03 and diffs.mean() < 0.005
    assert mismatched < 0.002 * SIZE * SIZE                     # edge pixels only


def test_block_reads_keep_the_vrt_values_and_validity(sar_path):
    """Reading by blocks changes nothing a direct VRT read of a window up to 512² gives
    (values, and validity from the alpha band or the nodata mask; a float raster without a
    nodata value has its NaN taken as the warper's source nodata)."""
    with rasterio.open(sar_path) as ds:
        alpha = ds.nodata is None
        nan_gaps = {"src_nodata": float("nan")} if alpha else {}
        with WarpedVRT(ds, crs=OPTICAL.crs, transform=OPTICAL.transform, width=SIZE, height=SIZE,
                       resampling=Resampling.bilinear, add_alpha=alpha, **nan_gaps) as vrt:
            for window, data, valid in tile_reads(sar_path, 256, 32):
                ref = vrt.read([1, 2], window=window, out_dtype="float32")
                ref_valid = (vrt.read(3, window=window) > 0 if alpha
                             else vrt.read_masks([1, 2], window=window).max(axis=0) > 0)
                ref_valid &= np.isfinite(ref).all(axis=0)
                np.testing.assert_array_equal(valid, ref_valid)
                np.testing.assert_array_equal(data[:, valid], ref[:, valid])
                assert not data[:, ~valid].any()             # invalid pixels read as 0


def test_engine_output_is_the_same_as_with_sar_warped_beforehand(tmp_path):
    """The whole tool path: a SAR model run with the SAR on EPSG:4326 writes exactly what it
    writes with that SAR warped onto the optical grid beforehand (block by block, as GDAL
    does for a whole scene), with tiles over 512 px too."""
    sar = sar_on_other_grid(tmp_path / "sar_4326.tif", "EPSG:4326", None, float("nan"))
    prewarped = np.full((2, SIZE, SIZE), np.nan, np.float32)
    with rasterio.open(sar) as ds, WarpedVRT(ds, crs=OPTICAL.crs, transform=OPTICAL.transform, width=SIZE,
                                             height=SIZE, resampling=Resampling.bilinear) as vrt:
        for y in range(0, SIZE, 128):    # by rows of VRT blocks: GDAL's whole-scene warp
            window = Window(0, y, SIZE, min(128, SIZE - y))
            prewarped[:, y:y + window.height] = vrt.read([1, 2], window=window)
    coregistered = write_raster(str(tmp_path / "sar_prewarped.tif"), prewarped, transform=OPTICAL.transform,
                                nodata=float("nan"))
    optical = write_raster(str(tmp_path / "opt.tif"), random_image((3, SIZE, SIZE), "uint8", seed=3),
                           transform=OPTICAL.transform)
    card = base_card(["B1", "B2", "B3"], ["B1", "B2", "B3"], sar_bands=["VV", "VH"], out_dtype="float32",
                     tile=64, overlap=8)
    card["inputs"][1]["resampling"] = "bilinear"
    model = conv_model(str(tmp_path / "m.onnx"), 3, 3, sar_channels=2, card=card)
    results = {}
    for name, path in (("warped", sar), ("prewarped", coregistered)):
        for tile, overlap in ((128, 16), (576, 64)):
            out = str(tmp_path / f"{name}_{tile}.tif")
            jobs.run_model(model=model, optical=optical, sar=path, output=out, tile_size=tile, overlap=overlap,
                           device="cpu")
            with rasterio.open(out) as ds:
                results[name, tile] = ds.read(masked=True)
    for tile in (128, 576):
        warped, reference = results["warped", tile], results["prewarped", tile]
        np.testing.assert_array_equal(np.ma.getmaskarray(warped), np.ma.getmaskarray(reference))
        np.testing.assert_array_equal(warped.filled(0), reference.filled(0))
        assert (~np.ma.getmaskarray(warped)).mean() > 0.8


def _gdal_cache_bytes() -> int:
    """GDALGetCacheMax64 of the GDAL that rasterio uses (rasterio's own wheel library, or the system's)."""
    import ctypes
    import os

    with open("/proc/self/maps") as maps:
        libs = {line.split()[-1] for line in maps if "libgdal" in line and line.split()[-1].startswith("/")}
    ours = [p for p in libs if "rasterio" in p] or sorted(libs)
    if not ours:
        pytest.skip("libgdal not found in /proc/self/maps")
    gdal = ctypes.CDLL(ours[0], mode=os.RTLD_NOLOAD)   # the loaded library, symbols kept local
    gdal.GDALGetCacheMax64.restype = ctypes.c_int64
    return gdal.GDALGetCacheMax64()


def test_runs_have_a_real_gdal_block_cache(tmp_path):
    """rasterio takes an integer GDAL_CACHEMAX as bytes: the engine once asked for "128" and got
    128 bytes, so overlapping tiles decoded (or warped) their blocks again."""
    seen = []
    model = conv_model(str(tmp_path / "m.onnx"), 3, 3, card=base_card(["R", "G", "B"], ["R", "G", "B"]))
    image = write_raster(str(tmp_path / "in.tif"), random_image((3, 64, 64)))
    jobs.run_model(model=model, optical=image, output=str(tmp_path / "o.tif"), device="cpu", tile_size=32,
                   overlap=8, progress=lambda fraction, message="": seen.append(_gdal_cache_bytes()))
    assert seen and min(seen) >= 64 * 2 ** 20
