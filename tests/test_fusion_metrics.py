"""Fusion metrics: hand-computable cases and independent second implementations."""
import math
import os

import numpy as np
import pytest

from skyclear.plugin.core.metrics import fusion as fm

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def _rand(shape, seed=0, lo=0.0, hi=255.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape)


def _step(h=8, w=10, k=5):
    img = np.zeros((h, w))
    img[:, k:] = 255.0
    return img


# ----------------------------------------------------------------------------- no-reference


def test_constant_image_has_zero_en_sd_sf_ag():
    c = np.full((32, 40), 117.0)
    assert fm.entropy(c) == 0.0
    assert fm.standard_deviation(c) == 0.0
    assert fm.spatial_frequency(c) == 0.0
    assert fm.average_gradient(c) == 0.0


def test_step_edge_by_hand():
    h, w = 8, 10
    img = _step(h, w, 5)
    assert fm.entropy(img) == pytest.approx(1.0)           # two equally likely levels: 1 bit
    assert fm.standard_deviation(img) == pytest.approx(127.5)
    # one jump of 255 per row among h*(w-1) horizontal differences, no vertical ones
    assert fm.spatial_frequency(img) == pytest.approx(255.0 / math.sqrt(w - 1))
    # central differences: columns 4 and 5 have Gx = 255/2, everything else 0
    assert fm.average_gradient(img) == pytest.approx(2 * h * (127.5 / math.sqrt(2)) / (h * w))


def test_entropy_of_uniform_256_levels_is_8_bits():
    img = np.arange(256, dtype=float).reshape(16, 16)
    assert fm.entropy(img) == pytest.approx(8.0)


def test_entropy_rounds_and_clips_to_8bit():
    img = np.array([[-5.0, 0.4], [255.4, 300.0]])    # -> 0, 0, 255, 255
    assert fm.entropy(img) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- Qabf


def _qabf_loop(f, a, b):
    """Straightforward per-pixel transcription of Xydeas & Petrovic (zero-padded Sobel)."""
    def sobel(img):
        h, w = img.shape
        p = np.pad(img, 1)
        sx, sy = np.zeros((h, w)), np.zeros((h, w))
        for i in range(h):
            for j in range(w):
                win = p[i:i + 3, j:j + 3]
                # conv2 flips the kernels: h3 = [-1 0 1; -2 0 2; -1 0 1] gives left minus right,
                # h1 = [1 2 1; 0 0 0; -1 -2 -1] gives bottom minus top
                sx[i, j] = (win[0, 0] + 2 * win[1, 0] + win[2, 0]) - (win[0, 2] + 2 * win[1, 2] + win[2, 2])
                sy[i, j] = (win[2, 0] + 2 * win[2, 1] + win[2, 2]) - (win[0, 0] + 2 * win[0, 1] + win[0, 2])
        g = np.hypot(sx, sy)
        al = np.empty_like(g)
        for i in range(h):
            for j in range(w):
                al[i, j] = math.pi / 2 if sx[i, j] == 0 else math.atan(sy[i, j] / sx[i, j])
        return g, al

    def q(gs, als, gf, alf):
        out = np.empty_like(gs)
        for i in range(gs.shape[0]):
            for j in range(gs.shape[1]):
                if gs[i, j] > gf[i, j]:
                    G = gf[i, j] / gs[i, j]
                elif gs[i, j] < gf[i, j]:
                    G = gs[i, j] / gf[i, j]
                else:
                    G = 1.0
                A = 1 - abs(als[i, j] - alf[i, j]) / (math.pi / 2)
                out[i, j] = (0.9994 / (1 + math.exp(-15 * (G - 0.5)))) * (0.9879 / (1 + math.exp(-22 * (A - 0.8))))
        return out

    ga, aa = sobel(a)
    gb, ab = sobel(b)
    gf, af = sobel(f)
    return float((q(ga, aa, gf, af) * ga + q(gb, ab, gf, af) * gb).sum() / (ga + gb).sum())


def test_qabf_perfect_transfer_constant():
    hand = 0.9994 / (1 + math.exp(-7.5)) * 0.9879 / (1 + math.exp(-4.4))
    assert fm.QABF_PERFECT == pytest.approx(hand, abs=1e-15)
    assert hand == pytest.approx(0.974794, abs=1e-6)        # not 1 with the standard constants
    a = _rand((30, 40))
    assert fm.qabf(a, a, a) == pytest.approx(hand, abs=1e-12)
    # F = A and B = 0 (flat even at the zero-padded border): B carries no edge weight
    assert fm.qabf(a, a, np.zeros_like(a)) == pytest.approx(hand, abs=1e-12)
    # a non-zero constant has Sobel edges along its border (zero padding, as in the toolboxes)
    assert fm.qabf(a, a, np.full_like(a, 9.0)) < hand


def test_qabf_flat_fusion_transfers_nothing():
    a, b = _rand((30, 40), 1), _rand((30, 40), 2)
    assert fm.qabf(np.zeros_like(a), a, b) < 0.01


def test_qabf_all_flat_is_nan():
    c = np.zeros((10, 10))
    assert math.isnan(fm.qabf(c + 5.0, c, c))


def test_qabf_matches_loop_implementation():
    a, b = _rand((17, 23), 3), _rand((17, 23), 4)
    f = 0.6 * a + 0.4 * b
    f[5:9, 3:12] = 255.0                                    # some saturated, flat parts
    a[0:4, 0:4] = 10.0
    for ff in (f, np.rint(f), a):
        assert fm.qabf(ff, a, b) == pytest.approx(_qabf_loop(ff, a, b), abs=1e-12)


# ----------------------------------------------------------------------------- SSIM


def _ssim_direct(x, y, win=7, L=255.0):
    """SSIM averaged over all fully inside 7x7 windows, sample covariance (Wang et al.)."""
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    n = win * win
    vals = []
    for i in range(x.shape[0] - win + 1):
        for j in range(x.shape[1] - win + 1):
            px, py = x[i:i + win, j:j + win].ravel(), y[i:i + win, j:j + win].ravel()
            mx, my = px.mean(), py.mean()
            vx = ((px - mx) ** 2).sum() / (n - 1)
            vy = ((py - my) ** 2).sum() / (n - 1)
            cxy = ((px - mx) * (py - my)).sum() / (n - 1)
            vals.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_ssim_identical_inputs_sum_to_two():
    a = _rand((40, 50))
    assert fm.ssim_sum(a, a, a) == pytest.approx(2.0, abs=1e-12)


def test_ssim_matches_direct_formula():
    a = _rand((16, 21), 5)
    f = np.clip(a + np.random.default_rng(6).normal(0, 25, a.shape), 0, 255)
    assert fm.ssim(f, a) == pytest.approx(_ssim_direct(f, a), abs=1e-10)


# ----------------------------------------------------------------------------- VIF


def test_vif_of_identical_images_is_one():
    a = _rand((64, 70), 7)
    assert fm.vif(a, a) == pytest.approx(1.0, abs=1e-9)
    assert fm.vif(a, a + 10.0) == pytest.approx(1.0, abs=1e-9)   # a mean shift loses nothing
    assert fm.vif_sum(a, a, a) == pytest.approx(2.0, abs=1e-9)


def test_vif_constant_reference_is_nan():
    assert math.isnan(fm.vif(np.full((50, 50), 80.0), _rand((50, 50))))


def test_vif_needs_41_pixels():
    with pytest.raises(ValueError):
        fm.vif(_rand((40, 60)), _rand((40, 60)))


def _vif_loop(ref, dist, sigma_n_sq=2.0, eps=1e-10):
    """vifp_mscale written window by window (explicit patches, 2-D Gaussian windows)."""
    def window(n):
        r = (n - 1) / 2
        y, x = np.mgrid[-r:r + 1, -r:r + 1]
        h = np.exp(-(x * x + y * y) / (2 * (n / 5) ** 2))
        return h / h.sum()

    def valid(img, w):
        n = w.shape[0]
        out = np.empty((img.shape[0] - n + 1, img.shape[1] - n + 1))
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                out[i, j] = (img[i:i + n, j:j + n] * w).sum()
        return out

    num = den = 0.0
    for scale in range(1, 5):
        w = window(2 ** (5 - scale) + 1)
        if scale > 1:
            ref, dist = valid(ref, w)[::2, ::2], valid(dist, w)[::2, ::2]
        mu1, mu2 = valid(ref, w), valid(dist, w)
        for i in range(mu1.shape[0]):
            for j in range(mu1.shape[1]):
                n = w.shape[0]
                pr, pd = ref[i:i + n, j:j + n], dist[i:i + n, j:j + n]
                s1 = max((w * pr * pr).sum() - mu1[i, j] ** 2, 0.0)
                s2 = max((w * pd * pd).sum() - mu2[i, j] ** 2, 0.0)
                s12 = (w * pr * pd).sum() - mu1[i, j] * mu2[i, j]
                if s1 < eps:
                    g, sv, s1 = 0.0, s2, 0.0
                else:
                    g = s12 / (s1 + eps)
                    sv = s2 - g * s12
                if s2 < eps:
                    g, sv = 0.0, 0.0
                if g < 0:
                    g, sv = 0.0, s2
                sv = max(sv, eps)
                num += np.log10(1 + g * g * s1 / (sv + sigma_n_sq))
                den += np.log10(1 + s1 / sigma_n_sq)
    return num / den


def test_vif_matches_window_loop():
    rng = np.random.default_rng(15)
    a = _rand((48, 45), 16)
    a[:10, :10] = 30.0                                          # a flat patch (s1 < eps branch)
    for f in (a * 0.7 + rng.normal(0, 20, a.shape), 255.0 - a, np.where(a > 128, a, 0.0)):
        assert fm.vif(a, f) == pytest.approx(_vif_loop(a, f), rel=1e-9)


@pytest.mark.slow          # importing torch + torchmetrics takes ~10 s
def test_vif_matches_torchmetrics():
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.functional.image")
    rng = np.random.default_rng(8)
    a = _rand((67, 81), 9)
    cases = [a * 0.7 + rng.normal(0, 20, a.shape), np.rint(np.clip(a + rng.normal(0, 5, a.shape), 0, 255)),
             np.full_like(a, 50.0), 255.0 - a]
    for f in cases:
        ref = tm.visual_information_fidelity(torch.tensor(f)[None, None], torch.tensor(a)[None, None]).item()
        assert fm.vif(a, f) == pytest.approx(ref, abs=1e-9)


# ----------------------------------------------------------------------------- MI, PSNR


def _mi_direct(x, y):
    x, y = np.rint(x).astype(int).ravel(), np.rint(y).astype(int).ravel()
    n = x.size
    from collections import Counter
    pxy, px, py = Counter(zip(x, y)), Counter(x), Counter(y)
    return sum(c / n * math.log2((c / n) / (px[i] / n * py[j] / n)) for (i, j), c in pxy.items())


def test_mi_hand_cases():
    step = _step(8, 10, 5)
    assert fm.mutual_information(step, step) == pytest.approx(1.0)
    assert fm.mutual_information(step, np.full_like(step, 4.0)) == pytest.approx(0.0)
    a = _rand((30, 30), 10)
    assert fm.mutual_information(a, a) == pytest.approx(fm.entropy(a))


def test_mi_matches_direct_count():
    a = np.rint(_rand((40, 30), 11) / 8) * 8
    b = np.rint(np.clip(a + np.random.default_rng(12).normal(0, 10, a.shape), 0, 255))
    assert fm.mutual_information(a, b) == pytest.approx(_mi_direct(a, b), abs=1e-12)
    assert fm.mi_sum(b, a, a) == pytest.approx(2 * _mi_direct(a, b), abs=1e-12)


def test_psnr_hand_cases():
    a = _rand((20, 20), 13)
    assert fm.psnr_fusion(a, a, a) == math.inf
    assert fm.psnr_fusion(a + 10.0, a, a) == pytest.approx(10 * math.log10(255.0 ** 2 / 100.0))


# ----------------------------------------------------------------------------- all together


def test_to_grey8_bt601():
    rgb = np.zeros((3, 2, 2))
    rgb[0] = 255.0                                               # pure red
    assert np.all(fm.to_grey8(rgb) == 76.0)                      # round(0.299 * 255) = round(76.245)
    assert fm.to_grey8(np.full((1, 3, 3), 300.0)).max() == 255.0
    with pytest.raises(ValueError):
        fm.to_grey8(np.zeros((3, 3, 3, 3)))


def test_fusion_metrics_keys_and_identical_inputs():
    opt = _rand((3, 64, 64), 14)
    grey = fm.to_grey8(opt)
    m = fm.fusion_metrics(opt, grey[None], opt)
    assert tuple(m) == fm.METRIC_NAMES
    assert m["ssim"] == pytest.approx(2.0)
    assert m["vif"] == pytest.approx(2.0)
    assert m["qabf"] == pytest.approx(fm.QABF_PERFECT)
    assert m["mi"] == pytest.approx(2 * m["en"])
    assert m["psnr"] == math.inf


def test_fusion_metrics_real_pair():
    rasterio = pytest.importorskip("rasterio")
    sar_p = os.path.join(DATA, "sar_optical", "cfog_stest3_sar.tif")
    opt_p = os.path.join(DATA, "sar_optical", "cfog_stest3_optical.tif")
    if not (os.path.exists(sar_p) and os.path.exists(opt_p)):
        pytest.skip("shared data not available")
    with rasterio.open(sar_p) as s, rasterio.open(opt_p) as o:
        sar, opt = s.read()[:, :256, :256].astype(float), o.read()[:, :256, :256].astype(float)
    m = fm.fusion_metrics(opt, sar, opt)          # "optical only"
    assert all(np.isfinite(v) for v in m.values())
    assert 0 < m["en"] <= 8 and 0 < m["qabf"] < 1 and 1 < m["ssim"] < 2 and 1 < m["vif"] < 2
