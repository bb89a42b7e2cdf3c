"""Classical SAR-optical fusion: colour, pyramid, guided filter, Lee filter, tiling, card."""
import numpy as np
import pytest

from skyclear.plugin.core.colour import luminance, rgb_to_ycbcr, ycbcr_to_rgb
from skyclear.plugin.core.despeckle import lee_filter, lee_filter_db
from skyclear.plugin.core.errors import InputError
from skyclear.plugin.core.fusion_classical import (
    METHODS, context_radius, fuse_grey, fuse_laplacian, fuse_rgb, guided_filter, laplacian_pyramid,
    reconstruct_laplacian)
from skyclear.plugin.core.model_card import parse_card
from skyclear.plugin.core.pipelines.fusion_classical import (
    ClassicalFusionProcessor, classical_fusion_card, overlap_for, sar_band_spec)


def _smooth_random(shape, seed=0):
    """A [0, 1] image with structure at several scales (sum of blurred noise)."""
    from scipy import ndimage
    rng = np.random.default_rng(seed)
    img = sum(ndimage.gaussian_filter(rng.random(shape), s) * s for s in (1, 3, 8))
    img -= img.min()
    return img / img.max()


# ----------------------------------------------------------------------------- colour


def test_ycbcr_round_trip_and_grey_axis():
    rgb = np.random.default_rng(0).random((3, 9, 11))
    assert np.allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-12)
    grey = np.full((3, 2, 2), 0.3)
    ycc = rgb_to_ycbcr(grey)
    assert np.allclose(ycc, [[[0.3]], [[0.5]], [[0.5]]])
    assert np.allclose(luminance(rgb), rgb_to_ycbcr(rgb)[0])


# ----------------------------------------------------------------------------- pyramid


@pytest.mark.parametrize("shape", [(64, 64), (101, 77), (33, 130), (5, 7)])
def test_laplacian_pyramid_reconstructs_exactly(shape):
    img = np.random.default_rng(1).random(shape)
    pyr = laplacian_pyramid(img, levels=4)
    assert np.abs(reconstruct_laplacian(pyr) - img).max() < 1e-12


def test_laplacian_fusion_takes_details_and_averages_base():
    b = _smooth_random((96, 80), 2)
    c = np.full_like(b, 0.2)                     # flat: all its detail coefficients are 0
    pyr = laplacian_pyramid(b, 4)
    low_b = reconstruct_laplacian([np.zeros_like(p) for p in pyr[:-1]] + [pyr[-1]])
    # max-abs keeps b's details; the top level is (0.2 + top_b)/2
    assert np.allclose(fuse_laplacian(c, b), b + 0.5 * (0.2 - low_b), atol=1e-12)


# ----------------------------------------------------------------------------- self-fusion


@pytest.mark.parametrize("method", METHODS)
def test_fusing_an_image_with_itself_returns_it(method):
    x = _smooth_random((120, 90), 3)
    assert np.abs(fuse_grey(x, x, method) - x).max() < 1e-9
    rgb = np.stack([_smooth_random((120, 90), s) for s in (4, 5, 6)])
    assert np.abs(fuse_rgb(rgb, luminance(rgb), method) - rgb).max() < 1e-9


def test_guided_filter_keeps_constant_and_self_guided_edges():
    x = _smooth_random((60, 60), 7)
    assert np.allclose(guided_filter(x, np.ones_like(x), 5, 0.1), 1.0, atol=1e-12)
    # tiny eps: the guide passes through unchanged
    assert np.abs(guided_filter(x, x, 3, 1e-9) - x).max() < 1e-4


def test_guided_fusion_prefers_the_detailed_source():
    detailed = _smooth_random((128, 128), 8)
    flat = np.full_like(detailed, detailed.mean())
    fused = fuse_grey(flat, detailed, "guided")
    # all detail comes from the textured source, so the fused image is close to it
    assert np.corrcoef(fused.ravel(), detailed.ravel())[0, 1] > 0.9


# ----------------------------------------------------------------------------- Lee filter


def test_lee_keeps_constant_image():
    c = np.full((40, 50), 0.37)
    assert np.abs(lee_filter(c) - 0.37).max() < 1e-12
    assert np.abs(lee_filter_db(np.full((20, 20), -12.0)) + 12.0).max() < 1e-9
    assert np.all(lee_filter(np.zeros((10, 10))) == 0.0)


def test_lee_reduces_speckle_variance_and_keeps_mean():
    rng = np.random.default_rng(9)
    looks = 4
    clean = np.full((200, 200), 0.5)
    clean[:, 100:] = 0.1
    speckled = clean * rng.gamma(looks, 1.0 / looks, clean.shape)   # unit-mean intensity speckle
    out = lee_filter(speckled, size=7, enl=looks)
    for sl in (np.s_[:, 10:90], np.s_[:, 110:190]):                  # homogeneous halves
        assert out[sl].var() < 0.2 * speckled[sl].var()
        assert out[sl].mean() == pytest.approx(clean[sl].mean(), rel=0.03)
    # the edge survives: the two sides stay far apart right next to it
    assert out[:, 95:98].mean() > 3 * out[:, 102:105].mean()


# ----------------------------------------------------------------------------- tiling


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("despeckle,units", [(None, "linear"), ("lee", "linear"), ("lee", "db")])
def test_tiles_with_overlap_equal_whole_image(method, despeckle, units):
    h, w = 300, 260
    opt = np.stack([_smooth_random((h, w), s) for s in (10, 11, 12)]).astype(np.float32)
    sar = (_smooth_random((h, w), 13) * np.random.default_rng(14).gamma(4, 0.25, (h, w))).clip(0, 1)
    sar = sar.astype(np.float32)[None]
    proc = ClassicalFusionProcessor(method, despeckle=despeckle, sar_units=units)
    whole = proc({"optical": opt[None], "sar": sar[None]}, [(0, 0)])["fused"][0]
    c = proc.context
    # two tiles at origins that are not multiples of the pyramid step (16), batched together
    t = 2 * c + 40
    origins = [(37, 21), (h - t, w - t)]
    tiles = {"optical": np.stack([opt[:, r:r + t, q:q + t] for r, q in origins]),
             "sar": np.stack([sar[:, r:r + t, q:q + t] for r, q in origins])}
    out = proc(tiles, origins)["fused"]
    assert out.shape == (2, 3, t, t) and out.dtype == np.float32
    for k, (r, q) in enumerate(origins):
        inner = out[k, :, c:t - c, c:t - c]
        ref = whole[:, r + c:r + t - c, q + c:q + t - c]
        assert np.abs(inner - ref).max() <= 1e-6        # float32 output; measured exactly 0
    assert whole.min() >= 0.0 and whole.max() <= 1.0


def test_laplacian_tiles_need_the_origin():
    """Without the lattice alignment the pyramid's decimation shifts, and tiles differ."""
    x, y = _smooth_random((200, 200), 15), _smooth_random((200, 200), 16)
    whole = fuse_laplacian(x, y)
    r = 37
    c = context_radius("laplacian")
    t = 2 * c + 20
    aligned = fuse_laplacian(x[r:r + t, r:r + t], y[r:r + t, r:r + t], origin=(r, r))
    shifted = fuse_laplacian(x[r:r + t, r:r + t], y[r:r + t, r:r + t])
    ref = whole[r + c:r + t - c, r + c:r + t - c]
    assert np.abs(aligned[c:t - c, c:t - c] - ref).max() < 1e-12
    assert np.abs(shifted[c:t - c, c:t - c] - ref).max() > 1e-4


# ----------------------------------------------------------------------------- card


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sar_dtype,optical_dtype", [("uint8", "uint8"), ("float32", "uint16")])
def test_card_is_valid_and_round_trips_to_processor(method, sar_dtype, optical_dtype):
    card = classical_fusion_card(method, sar_dtype=sar_dtype, optical_dtype=optical_dtype, despeckle="lee")
    parsed = parse_card(card)
    assert parsed.task == "sar_optical_fusion"
    assert [t.name for t in parsed.inputs] == ["optical", "sar"] and parsed.outputs[0].name == "fused"
    assert parsed.outputs[0].dtype is None and len(parsed.outputs[0].bands) == 3
    proc = ClassicalFusionProcessor.from_card(card)
    assert proc.method == method and proc.despeckle == "lee"
    assert parsed.default_overlap >= 2 * proc.context
    sar = parsed.input("sar").bands[0]
    if sar_dtype == "float32":
        assert proc.sar_units == "db" and sar.clip == [-25.0, 0.0] and sar.offset == -25.0 and sar.scale == 25.0
    else:
        assert proc.sar_units == "linear" and sar.clip == [0.0, 255.0] and sar.scale == 255.0


def test_sar_band_spec_by_dtype():
    assert sar_band_spec("uint8")[1] == "linear"
    assert sar_band_spec("float64")[1] == "db"
    assert sar_band_spec("uint16", clip=(0, 1000))[0]["scale"] == 1000.0
    with pytest.raises(InputError):
        sar_band_spec("uint16")
    with pytest.raises(InputError):
        ClassicalFusionProcessor("wavelet")
    assert overlap_for("optical") == 0 and overlap_for("guided", "lee") % 16 == 0
