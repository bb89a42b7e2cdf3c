"""The streaming engine on synthetic rasters and tiny ONNX models (no QGIS)."""
import os

import numpy as np
import pytest
import rasterio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin

from factories import affine_model, base_card, conv_model, identity_model, random_image, write_raster
from skyclear.plugin.core import jobs
from skyclear.plugin.core.engine import open_sources, run_tiled
from skyclear.plugin.core.errors import Cancelled, InputError, ModelCardError
from skyclear.plugin.core.model_card import parse_card
from skyclear.plugin.core.pipelines.generic import OnnxProcessor, load_model


def read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.profile, ds.tags()


def _identity_run(folder, img, tile, overlap, batch, block_hook=None):
    """``img`` (uint16) through a uint16 identity model with ``run_tiled``; the output raster's values."""
    src = write_raster(str(folder / "in.tif"), img)
    model = identity_model(str(folder / "id.onnx"), img.shape[0], clip=(0, 65535), scale=65535.0, out_dtype="uint16")
    session, card, _ = load_model(model, "cpu")
    sources = open_sources(card, {"optical": src})
    try:
        run_tiled(card, sources, OnnxProcessor(session, card), {"restored": str(folder / "out.tif")},
                  tile, overlap, batch_size=batch, block_hook=block_hook)
    finally:
        for s in sources.values():
            s.close()
    return read(str(folder / "out.tif"))[0]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(height=st.integers(1, 150), width=st.integers(1, 150), tile=st.sampled_from([16, 24, 32, 64]),
       overlap_frac=st.floats(0, 0.9), batch=st.integers(1, 5))
def test_identity_is_exact_for_any_tiling(tmp_path_factory, height, width, tile, overlap_frac, batch):
    img = random_image((3, height, width), "uint16", seed=height * 1000 + width, high=60000)
    out = _identity_run(tmp_path_factory.mktemp("id"), img, tile, int(overlap_frac * (tile - 1)), batch)
    np.testing.assert_array_equal(out, img)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(height=st.integers(1, 120), width=st.integers(1, 120), tile=st.sampled_from([16, 32]),
       overlap_frac=st.floats(0, 0.9), batch=st.integers(1, 4))
def test_block_hook_gets_each_blocks_own_raw_inputs(tmp_path_factory, height, width, tile, overlap_frac, batch):
    """Whatever the tiling, the hook sees the raster values of exactly the block it rewrites."""
    img = random_image((2, height, width), "uint16", seed=height * 1000 + width, high=60000)

    def hook(raw, inputs_raw, valid):   # output = input - 1 (in raster units), from the hook's inputs alone
        assert inputs_raw["optical"].shape == raw["restored"].shape
        return {"restored": inputs_raw["optical"].astype(np.float32) - 1}
    out = _identity_run(tmp_path_factory.mktemp("hook"), img, tile, int(overlap_frac * (tile - 1)), batch, hook)
    np.testing.assert_array_equal(out, np.clip(img.astype(np.int64) - 1, 0, None))


def test_float_identity_and_affine(tmp_path):
    img = np.random.default_rng(1).normal(size=(2, 97, 131)).astype("float32")
    src = write_raster(str(tmp_path / "f.tif"), img)
    model = affine_model(str(tmp_path / "aff.onnx"), [2.0, -1.0], [0.5, 3.0], clip=(-100, 100), scale=1.0,
                         out_dtype="float32")
    jobs.run_model(model=model, optical=src, output=str(tmp_path / "o.tif"), tile_size=32, overlap=12)
    out, profile, _ = read(str(tmp_path / "o.tif"))
    expected = img * np.array([2.0, -1.0], np.float32)[:, None, None] + np.array([0.5, 3.0], np.float32)[:, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    assert profile["dtype"] == "float32"


def test_tiled_conv_matches_whole_image_run(tmp_path):
    """With overlap >= the receptive field, tiles blend to the untiled result (no seams)."""
    img = random_image((3, 200, 180), "uint8", seed=3)
    src = write_raster(str(tmp_path / "in.tif"), img)
    model = conv_model(str(tmp_path / "conv.onnx"), 3, 3, out_dtype="float32")
    jobs.run_model(model=model, optical=src, output=str(tmp_path / "tiled.tif"), tile_size=64, overlap=16)
    jobs.run_model(model=model, optical=src, output=str(tmp_path / "whole.tif"), tile_size=256, overlap=0)
    tiled, _, _ = read(str(tmp_path / "tiled.tif"))
    whole, _, _ = read(str(tmp_path / "whole.tif"))
    # the scene's bottom/right edge is reflect-padded in tiles but not in the single tile
    np.testing.assert_allclose(tiled[:, :-2, :-2], whole[:, :-2, :-2], rtol=1e-5, atol=1e-4)


def test_output_georeference_and_provenance(tmp_path):
    img = random_image((3, 70, 90), "uint8")
    transform = from_origin(300000, 5000000, 0.5, 0.5)
    src = write_raster(str(tmp_path / "in.tif"), img, crs="EPSG:32632", transform=transform)
    model = identity_model(str(tmp_path / "id.onnx"), 3)
    report = jobs.run_model(model=model, optical=src, output=str(tmp_path / "o.tif"))
    _, profile, tags = read(str(tmp_path / "o.tif"))
    assert profile["crs"].to_epsg() == 32632 and profile["transform"] == transform
    assert profile["tiled"] and profile["compress"] == "deflate"
    assert tags["SKYCLEAR_MODEL"] == "test-model" and tags["SKYCLEAR_PROVIDER"] == "CPUExecutionProvider"
    assert len(tags["SKYCLEAR_CARD_SHA256"]) == 64 and report.provider == "CPUExecutionProvider"
    assert tags["SKYCLEAR_VALUE_RANGE"] == "0,255"  # the card's clip: what the QGIS styling trusts
    with rasterio.open(str(tmp_path / "o.tif")) as ds:
        assert ds.descriptions == ("B1", "B2", "B3")


def test_nodata_stays_nodata(tmp_path):
    img = random_image((3, 80, 80), "uint8", seed=5)
    img[:, :10, :] = 0          # nodata collar
    img[:, 30:40, 50:60] = 0    # nodata hole
    img[0, 60, 60] = 0          # one band only: still a valid pixel
    src = write_raster(str(tmp_path / "in.tif"), img, nodata=0)
    model = affine_model(str(tmp_path / "aff.onnx"), [1, 1, 1], [10 / 255] * 3)
    jobs.run_model(model=model, optical=src, output=str(tmp_path / "o.tif"), tile_size=32, overlap=8)
    out, profile, _ = read(str(tmp_path / "o.tif"))
    hole = (img == 0).all(axis=0)
    # every uint8 value is a possible result here, so validity goes to a mask band, not nodata
    assert profile["nodata"] is None
    with rasterio.open(tmp_path / "o.tif") as ds:
        mask = ds.dataset_mask()
    assert (mask[hole] == 0).all() and (mask[~hole] == 255).all()
    expected = np.clip(img.astype(int) + 10, 0, 255)
    assert (out[:, ~hole] == expected[:, ~hole]).all()
    assert out[0, 60, 60] == 10 and out[1, 60, 60] == min(255, img[1, 60, 60] + 10)


def test_tiles_without_data_skip_the_model_and_change_nothing(tmp_path):
    """Tiles with nodata in every pixel (a Sentinel-2 swath edge) are not sent to the model; the rest
    of their batch is, and every written pixel still gets its own tiles' results."""
    img = random_image((3, 96, 224), "uint8", seed=7)
    rows, cols = np.mgrid[:96, :224]
    img[:, cols < 120 + rows // 4] = 0   # slanted edge
    hole = (img == 0).all(axis=0)
    src = write_raster(str(tmp_path / "in.tif"), img, nodata=0)
    calls = []

    def run(model, out, batch):
        session, card, _ = load_model(model, "cpu")

        class Counting(OnnxProcessor):
            def __call__(self, inputs, origins):
                calls.append(list(origins))
                return super().__call__(inputs, origins)

        sources = open_sources(card, {"optical": src})
        try:
            return run_tiled(card, sources, Counting(session, card), {"restored": str(tmp_path / out)},
                             32, 8, batch_size=batch)
        finally:
            for s in sources.values():
                s.close()

    # pointwise model: each valid pixel's exact value shows it got its own tiles' results
    report = run(affine_model(str(tmp_path / "aff.onnx"), [1, 1, 1], [10 / 255] * 3), "aff.tif", 3)
    sent = [o for origins in calls for o in origins]
    assert report.tiles_skipped > 0 and len(sent) + report.tiles_skipped == report.tiles
    assert all(not hole[y:y + 32, x:x + 32].all() for y, x in sent)
    assert any(len(o) < 3 for o in calls[:-1])  # some batches went to the model with their empty tiles left out
    out, _, _ = read(str(tmp_path / "aff.tif"))
    np.testing.assert_array_equal(out[:, ~hole], np.clip(img.astype(int) + 10, 0, 255)[:, ~hole])
    with rasterio.open(tmp_path / "aff.tif") as ds:
        assert (ds.dataset_mask()[hole] == 0).all()
    # a conv blends neighbouring tiles: the same pixels whichever tiles share a batch
    conv = conv_model(str(tmp_path / "conv.onnx"), 3, 3, out_dtype="float32")
    run(conv, "one.tif", 1)
    run(conv, "three.tif", 3)
    a, profile, _ = read(str(tmp_path / "one.tif"))
    b, _, _ = read(str(tmp_path / "three.tif"))
    assert np.isnan(profile["nodata"]) and np.isnan(a[:, hole]).all() and not np.isnan(a[:, ~hole]).any()
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_sar_in_other_crs_and_resolution_lands_on_the_right_pixels(tmp_path):
    """SAR in EPSG:4326 at a coarser pixel: a linear field f(lon, lat) must be read back at each
    optical pixel's own lon/lat."""
    from rasterio.warp import transform as warp_points

    opt_transform = from_origin(500000, 4650000, 20, 20)
    optical = write_raster(str(tmp_path / "opt.tif"), random_image((2, 60, 70), "uint8"), crs="EPSG:32633",
                           transform=opt_transform)
    # SAR grid in degrees covering a slightly larger box
    lon0, lat0, step = 14.98, 42.01, 0.0004
    cols, rows = np.meshgrid(np.arange(120), np.arange(100))
    lon = lon0 + (cols + 0.5) * step
    lat = lat0 - (rows + 0.5) * step
    field = ((lon - 15.0) * 1000 + (lat - 42.0) * 500).astype("float32")
    sar = write_raster(str(tmp_path / "sar.tif"), field[None], crs="EPSG:4326",
                       transform=from_origin(lon0, lat0, step, step))
    card = base_card(["B1", "B2"], ["S1"], sar_bands=["S1"], out_dtype="float32")
    card["inputs"][1]["resampling"] = "bilinear"
    card["outputs"][0]["bands"] = [{"name": "S1", "scale": 1.0, "offset": 0.0}]
    from factories import _tensor, save_model
    from onnx import helper
    model = save_model([helper.make_node("Identity", ["sar"], ["restored"])],
                       [_tensor("optical", 2), _tensor("sar", 1)], [_tensor("restored", 1)], [],
                       str(tmp_path / "sar_id.onnx"), card)
    jobs.run_model(model=model, optical=optical, sar=sar, output=str(tmp_path / "o.tif"), tile_size=32, overlap=8)
    out, profile, _ = read(str(tmp_path / "o.tif"))
    assert profile["crs"].to_epsg() == 32633 and profile["transform"] == opt_transform
    r, c = np.meshgrid(np.arange(5, 55, 7), np.arange(5, 65, 7), indexing="ij")
    xs, ys = rasterio.transform.xy(opt_transform, r.ravel(), c.ravel())
    lons, lats = warp_points("EPSG:32633", "EPSG:4326", xs, ys)
    expected = (np.array(lons) - 15.0) * 1000 + (np.array(lats) - 42.0) * 500
    np.testing.assert_allclose(out[0][r.ravel(), c.ravel()], expected, atol=0.05)


def test_sar_gaps_become_nodata(tmp_path):
    optical = write_raster(str(tmp_path / "opt.tif"), random_image((1, 40, 40), "uint8"),
                           transform=from_origin(0, 400, 10, 10))
    sar = write_raster(str(tmp_path / "sar.tif"), np.ones((1, 40, 20), "float32"),
                       transform=from_origin(0, 400, 10, 10))  # covers the left half only
    model = conv_model(str(tmp_path / "c.onnx"), 1, 1, sar_channels=1, out_dtype="float32")
    jobs.run_model(model=model, optical=optical, sar=sar, output=str(tmp_path / "o.tif"), tile_size=16, overlap=4)
    out, profile, _ = read(str(tmp_path / "o.tif"))
    with rasterio.open(str(tmp_path / "o.tif")) as ds:
        mask = ds.dataset_mask()
    assert np.isnan(profile["nodata"]) and np.isnan(out[0, :, 21:]).all() and (mask[:, 21:] == 0).all()
    assert (mask[:, :19] == 255).all()


def test_cancel_leaves_no_file(tmp_path):
    src = write_raster(str(tmp_path / "in.tif"), random_image((3, 200, 200), "uint8"))
    model = identity_model(str(tmp_path / "id.onnx"), 3)
    calls = []

    def cancel_after_two():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        jobs.run_model(model=model, optical=src, output=str(tmp_path / "o.tif"), tile_size=32, overlap=8,
                       is_cancelled=cancel_after_two)
    assert sorted(os.listdir(tmp_path)) == ["id.onnx", "in.tif"]


def test_failure_mid_run_leaves_no_file(tmp_path):
    src = write_raster(str(tmp_path / "in.tif"), random_image((3, 100, 100), "uint8"))
    model = identity_model(str(tmp_path / "id.onnx"), 3)
    session, card, _ = load_model(model, "cpu")

    def broken(inputs, origins):
        if origins[0][0] > 0:
            raise RuntimeError("boom")
        return {"restored": inputs["optical"]}

    sources = open_sources(card, {"optical": src})
    with pytest.raises(RuntimeError):
        run_tiled(card, sources, broken, {"restored": str(tmp_path / "o.tif")}, 32, 8)
    assert sorted(os.listdir(tmp_path)) == ["id.onnx", "in.tif"]


def test_progress_reaches_one(tmp_path):
    src = write_raster(str(tmp_path / "in.tif"), random_image((3, 100, 100), "uint8"))
    model = identity_model(str(tmp_path / "id.onnx"), 3)
    seen = []
    jobs.run_model(model=model, optical=src, output=str(tmp_path / "o.tif"), tile_size=32, overlap=8,
                   progress=lambda f, m: seen.append(f))
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_wrong_band_count_is_a_clear_error(tmp_path):
    src = write_raster(str(tmp_path / "in.tif"), random_image((4, 30, 30), "uint8"))
    model = identity_model(str(tmp_path / "id.onnx"), 3)
    with pytest.raises(InputError, match=r"has 4 band\(s\) but model 'test-model' expects 3"):
        jobs.run_model(model=model, optical=src, output=str(tmp_path / "o.tif"))
    # an explicit band list fixes it
    jobs.run_model(model=model, optical=src, output=str(tmp_path / "o.tif"), optical_bands=[3, 2, 1])
    out, _, _ = read(str(tmp_path / "o.tif"))
    with rasterio.open(src) as ds:
        np.testing.assert_array_equal(out, ds.read([3, 2, 1]))
    with pytest.raises(InputError, match="do not exist"):
        jobs.run_model(model=model, optical=src, output=str(tmp_path / "o2.tif"), optical_bands=[1, 2, 9])


def test_bands_found_by_description(tmp_path):
    img = random_image((4, 30, 30), "uint8")
    src = write_raster(str(tmp_path / "in.tif"), img, descriptions=["B4", "B2", "B3", "B1"])
    model = identity_model(str(tmp_path / "id.onnx"), 3)
    jobs.run_model(model=model, optical=src, output=str(tmp_path / "o.tif"))
    out, _, _ = read(str(tmp_path / "o.tif"))
    np.testing.assert_array_equal(out, img[[3, 1, 2]])


def test_dtype_rejected_by_card(tmp_path):
    src = write_raster(str(tmp_path / "in.tif"), random_image((3, 30, 30), "uint16"))
    card = base_card(["B1", "B2", "B3"], ["B1", "B2", "B3"])
    card["inputs"][0]["dtypes"] = ["uint8"]
    model = identity_model(str(tmp_path / "id.onnx"), 3, card=card)
    with pytest.raises(InputError, match="is uint16 but model 'test-model' accepts uint8"):
        jobs.run_model(model=model, optical=src, output=str(tmp_path / "o.tif"))
    assert not os.path.exists(tmp_path / "o.tif")


def test_non_overlapping_inputs_fail_before_work(tmp_path):
    optical = write_raster(str(tmp_path / "opt.tif"), random_image((1, 40, 40), "uint8"),
                           transform=from_origin(0, 400, 10, 10))
    sar = write_raster(str(tmp_path / "sar.tif"), np.ones((1, 40, 40), "float32"),
                       transform=from_origin(100000, 400, 10, 10))
    model = conv_model(str(tmp_path / "c.onnx"), 1, 1, sar_channels=1)
    with pytest.raises(InputError, match="does not overlap the optical raster"):
        jobs.run_model(model=model, optical=optical, sar=sar, output=str(tmp_path / "o.tif"))
    assert not os.path.exists(tmp_path / "o.tif")


def test_rasters_without_crs(tmp_path):
    """Non-georeferenced inputs work when they share a pixel grid, and fail clearly otherwise."""
    optical = write_raster(str(tmp_path / "opt.tif"), random_image((1, 40, 40), "uint8"), crs=None)
    sar_same = write_raster(str(tmp_path / "sar.tif"), np.ones((1, 40, 40), "float32"), crs=None)
    sar_other = write_raster(str(tmp_path / "sar2.tif"), np.ones((1, 30, 40), "float32"), crs=None)
    model = conv_model(str(tmp_path / "c.onnx"), 1, 1, sar_channels=1)
    jobs.run_model(model=model, optical=optical, sar=sar_same, output=str(tmp_path / "o.tif"))
    assert os.path.exists(tmp_path / "o.tif")
    with pytest.raises(InputError, match="no CRS and the pixel grids differ"):
        jobs.run_model(model=model, optical=optical, sar=sar_other, output=str(tmp_path / "o2.tif"))


def test_bad_inputs_name_the_problem(tmp_path):
    model = identity_model(str(tmp_path / "id.onnx"), 3)
    with pytest.raises(InputError, match="file not found"):
        jobs.run_model(model=model, optical=str(tmp_path / "missing.tif"), output=str(tmp_path / "o.tif"))
    src = write_raster(str(tmp_path / "in.tif"), random_image((3, 30, 30), "uint8"))
    with pytest.raises(ModelCardError, match="model file not found"):
        jobs.run_model(model=str(tmp_path / "none.onnx"), optical=src, output=str(tmp_path / "o.tif"))
    with pytest.raises(InputError, match="output folder does not exist"):
        jobs.run_model(model=model, optical=src, output=str(tmp_path / "no" / "o.tif"))
    with pytest.raises(InputError, match="multiple of 8"):
        strict = parse_card(base_card(["B1", "B2", "B3"], ["B1", "B2", "B3"], multiple=8))
        run_tiled(strict, {}, None, {}, tile_size=60)
    with pytest.raises(InputError, match="a SAR raster was given"):
        jobs.run_model(model=model, optical=src, sar=src, output=str(tmp_path / "o.tif"))


def test_extent_crops_to_whole_pixels(tmp_path):
    img = random_image((3, 100, 120), "uint8")
    src = write_raster(str(tmp_path / "in.tif"), img, transform=from_origin(1000, 2000, 10, 10))
    model = identity_model(str(tmp_path / "id.onnx"), 3)
    jobs.run_model(model=model, optical=src, output=str(tmp_path / "o.tif"), extent=(1105, 1405, 1500, 1795))
    out, profile, _ = read(str(tmp_path / "o.tif"))
    np.testing.assert_array_equal(out, img[:, 20:60, 10:50])
    assert profile["transform"] == from_origin(1100, 1800, 10, 10)
    with pytest.raises(InputError, match="does not overlap"):
        jobs.run_model(model=model, optical=src, output=str(tmp_path / "o2.tif"), extent=(0, 0, 10, 10))


def test_output_compression_options_keep_the_values(tmp_path):
    img = random_image((3, 70, 90), "uint16", seed=9, high=60000)
    src = write_raster(str(tmp_path / "in.tif"), img)
    model = identity_model(str(tmp_path / "id.onnx"), 3, clip=(0, 65535), scale=65535.0, out_dtype="uint16")
    for compression in ("deflate", "zstd", "none"):
        out = tmp_path / f"{compression}.tif"
        jobs.run_model(model=model, optical=src, output=str(out), tile_size=32, overlap=8, compression=compression)
        with rasterio.open(out) as ds:
            np.testing.assert_array_equal(ds.read(), img)
            assert (ds.compression.value if ds.compression else "none").lower() == compression
    with pytest.raises(InputError, match="compression must be one of"):
        jobs.run_model(model=model, optical=src, output=str(tmp_path / "x.tif"), compression="jpeg")
