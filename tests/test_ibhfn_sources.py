"""IB-HFN extra training sources, harder composites and the leakage guard (real shared data)."""
import glob
import re
from pathlib import Path

import numpy as np
import pytest

from skyclear.models.ibhfn.data import (Sample, TripletDataset, composite_cloud_v2, find_samples, load_sample,
                                        read_tif)
from skyclear.models.ibhfn.sources import (L2A_TO_L1C, classify_ts_dates, drop_overlapping, fit_l2a_to_l1c,
                                           l2a_to_l1c, load_bigearthnet, load_extra, load_ssl4eo,
                                           load_ts_cloud_layers, place_overlap, reproject_to)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not (SHARED / "bigearthnet_s1s2").is_dir() or not (SHARED / "sen12mscr").is_dir(),
                                reason="shared data absent")


def test_l2a_to_l1c_inserts_b10_and_maps_bands():
    l2a = np.stack([np.full((2, 3), 100.0 * (i + 1), np.float32) for i in range(12)])
    out = l2a_to_l1c(l2a, fit=False)
    assert out.shape == (13, 2, 3)
    assert np.all(out[10] == 13.0)                               # B10 filled
    assert np.all(out[11] == 1100.0) and np.all(out[9] == 1000.0)  # B11, B12 moved after B10
    fitted = l2a_to_l1c(l2a)
    a, b = L2A_TO_L1C[1]
    assert np.allclose(fitted[1], a * 200.0 + b)
    with pytest.raises(ValueError):
        l2a_to_l1c(np.zeros((13, 2, 2), np.float32))


@needs_data
def test_l2a_fit_constants_are_those_of_the_shared_data():
    loc = SHARED / "ssl4eo" / "0000200"
    fits = fit_l2a_to_l1c(read_tif(str(loc / "s2l1c_20200604.tif")), read_tif(str(loc / "s2l2a_20200604.tif")))
    for (a, b, r), (a0, b0) in zip(fits, L2A_TO_L1C):
        assert abs(a - a0) < 2e-3 and abs(b - b0) < 0.5
    assert min(r for i, (_, _, r) in enumerate(fits) if i != 9) > 0.99


@needs_data
def test_bigearthnet_pairs_are_13_band_l1c_like():
    pairs = load_bigearthnet(str(SHARED / "bigearthnet_s1s2"))
    assert len(pairs) == 6 and all(p.cloudy is None and p.mask is None for p in pairs)
    for p in pairs:
        assert p.clear.shape == (13, 120, 120) and p.sar.shape == (2, 120, 120)
        assert np.isfinite(p.clear).all() and 0 <= p.clear.min() and p.clear.max() <= 1
    snow = next(p for p in pairs if p.id == "bigearthnet/57_38")
    assert snow.clear[1].mean() > 0.25          # snowy winter patch: bright in the blue band


def test_reproject_to_moves_a_feature_onto_the_target_grid(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    def write(path, arr, x0, y0, px):
        with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                           dtype="float32", crs="EPSG:32633", transform=from_origin(x0, y0, px, px)) as dst:
            dst.write(arr)
    src = np.zeros((2, 40, 40), np.float32)
    src[:, 20, 10] = 100.0                       # a bright point at column 10, row 20
    write(tmp_path / "src.tif", src, 1000.0, 5000.0, 10.0)
    # target grid shifted by +40 m east and -30 m south (4 and 3 pixels)
    write(tmp_path / "like.tif", np.zeros((1, 40, 40), np.float32), 1040.0, 4970.0, 10.0)
    out = reproject_to(str(tmp_path / "src.tif"), str(tmp_path / "like.tif"))
    assert out.shape == (2, 40, 40)
    y, x = np.unravel_index(np.nanargmax(out[0]), out[0].shape)
    assert (y, x) == (17, 6)
    assert np.isnan(out[0, -1, -1])              # outside the source: NaN, filled by the loader


@needs_data
def test_ssl4eo_clear_pair_and_real_triplet():
    clear_pairs, triplets = load_ssl4eo(str(SHARED / "ssl4eo"))
    assert len(clear_pairs) == 1 and len(triplets) == 1
    t = triplets[0]
    assert t.sar.shape == (2, 264, 264) and t.cloudy.shape == t.clear.shape == (13, 264, 264)
    assert np.isfinite(t.sar).all() and np.isfinite(clear_pairs[0].sar).all()
    assert t.cloudy[1].mean() > t.clear[1].mean() + 0.03   # 2020-08-23 is visibly cloudy


@needs_data
def test_ts_dates_and_cloud_layers_agree_with_the_data_notes():
    paths = sorted(glob.glob(str(SHARED / "sen12mscr_ts" / "s2_*.tif")))
    flags = {int(re.search(r"ImgNo_(\d+)_", p).group(1)): c for p, c in classify_ts_dates(paths).items()}
    # README: dates 2, 7, 8, 10, 11, 25, 27, 29 almost fully cloudy, 0 hazy, 1, 4, 5, 15, 21 partly cloudy
    assert not any(flags[d] for d in (0, 1, 2, 4, 5, 7, 8, 10, 11, 15, 21, 25, 27, 29))
    assert sum(flags.values()) >= 10
    layers = load_ts_cloud_layers(str(SHARED / "sen12mscr_ts"))
    assert len(layers) >= 10 and all(s.sar is None and s.cloudy.shape == (13, 256, 256) for s in layers)
    for s in layers:  # partner = a clear date; the layer adds brightness
        assert (s.cloudy[1:4] - s.clear[1:4]).mean() > 0.005


@needs_data
def test_load_extra_validates_names():
    with pytest.raises(ValueError, match="unknown extra source"):
        load_extra(str(SHARED), {"clear": ["landsat"]})
    with pytest.raises(ValueError, match="no real cloudy triplets"):
        load_extra(str(SHARED), {"real": ["bigearthnet"]})
    ex = load_extra(str(SHARED), {"clear": ["bigearthnet"], "exclude": ["bigearthnet/57_38"]})
    assert len(ex["clear"]) == 5 and "bigearthnet/57_38" not in [s.id for s in ex["clear"]]


@needs_data
def test_leakage_guard_drops_the_same_place_and_keeps_others():
    triplets = [load_sample(f) for f in find_samples(str(SHARED / "sen12mscr"))[:2]]
    t = triplets[0]
    # the same place on another date: the triplet's own clear image, re-cropped, as an "extra" pair
    same_place = Sample("extra/same", t.sar[:, 20:220, 30:230], None, t.clear[:, 20:220, 30:230], None)
    nir, sar = place_overlap(same_place, t)
    assert nir > 0.9 and sar > 0.9
    other = load_bigearthnet(str(SHARED / "bigearthnet_s1s2"))[:2]
    log = []
    kept = drop_overlapping([same_place] + other, triplets, log=log)
    assert [s.id for s in kept] == [s.id for s in other]
    assert max(x[2] for x in log if x[0] != "extra/same") < 0.6


def test_composites_are_not_trivially_copyable():
    rng = np.random.default_rng(0)
    bg = np.full((13, 32, 32), 0.1, np.float32)
    layer_clear = np.full((13, 32, 32), 0.08, np.float32)
    layer_cloudy = layer_clear.copy()
    layer_cloudy[:, :, 16:] += 0.5               # opaque cloud on the right half
    layer_cloudy[:, :, 8:16] += 0.05             # thin cloud next to it
    opts = {"opacity": [1.0, 1.0], "jitter_p": 0.0, "haze_p": 0.0, "shadow_p": 0.0}
    cloudy, mask = composite_cloud_v2(bg, layer_cloudy, layer_clear, None, rng, opts)
    assert np.allclose(cloudy[:, :, 20:], layer_cloudy[:, :, 20:])          # opaque: the cloud itself
    # thin (alpha = 0.05 / 0.25): background transmitted, the cloud's own excess added
    assert np.allclose(cloudy[:, :, 10:14], 0.1 * (1 - 0.2) + 0.08 * 0.2 + 0.05, atol=1e-6)
    assert np.allclose(cloudy[:, :, :8], bg[:, :, :8]) and mask[0, :, :8].sum() == 0
    assert mask[0, :, 8:].all()
    # jitter / haze: the clear part of the input no longer equals the target
    jit, _ = composite_cloud_v2(bg, layer_cloudy, layer_clear, None, np.random.default_rng(1),
                                dict(opts, jitter_p=1.0, haze_p=1.0))
    assert np.abs(jit[:, :, :8] - bg[:, :, :8]).mean() > 1e-3
    assert jit[1, :, :8].mean() - bg[1, :, :8].mean() > jit[12, :, :8].mean() - bg[12, :, :8].mean() - 0.02
    # shadow: darker pixels appear beside the cloud, outside it
    sh, smask = composite_cloud_v2(bg, layer_cloudy, layer_clear, None, np.random.default_rng(2),
                                   dict(opts, shadow_p=1.0, shadow_strength=[0.5, 0.5]))
    assert sh[:, :, :8].min() < 0.1 - 0.02 and smask[0, :, :8].any()
    # the 1.x paste is still there
    add, _ = composite_cloud_v2(bg, layer_cloudy, layer_clear, None, rng, dict(opts, model="additive"))
    assert np.allclose(add, np.clip(bg + (layer_cloudy - layer_clear), 0, 1))


@needs_data
def test_dataset_with_extra_sources_is_deterministic_and_uses_them():
    files = find_samples(str(SHARED / "sen12mscr"))[:4]
    extra = load_extra(str(SHARED), {"clear": ["bigearthnet"], "cloud_layers": ["sen12mscr_ts"],
                                     "real": ["ssl4eo"]})
    ds = TripletDataset(files, crop=48, seed=5, synthetic_p=0.7, extra=extra, composite={}, extra_p=1.0,
                        real_extra_p=1.0, augment=False)
    a, b = ds[11], ds[11]
    assert all(np.array_equal(a[k], b[k]) for k in a)

    def window_of(img, candidates):
        for c in candidates:
            h, w = c.shape[1:]
            for y in range(h - img.shape[1] + 1):
                for x in np.nonzero(c[0, y, : w - img.shape[2] + 1] == img[0, 0, 0])[0]:
                    if np.array_equal(c[:, y:y + img.shape[1], x:x + img.shape[2]], img):
                        return True
        return False
    n_synth = n_real = 0
    for i in range(24):
        e = ds[i]
        assert e["optical"].shape == (13, 48, 48) and e["sar"].shape == (2, 48, 48)
        assert np.isfinite(e["optical"]).all()
        if e["has_mask"]:   # synthetic: the background is an extra clear pair (extra_p = 1)
            n_synth += 1
            assert window_of(e["target"], [s.clear for s in extra["clear"]])
        else:               # real: the extra real triplet (real_extra_p = 1)
            n_real += 1
            assert window_of(e["target"], [s.clear for s in extra["real"]])
    assert n_synth and n_real
