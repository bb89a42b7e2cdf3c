"""Hierarchical SAR–optical fusion network (issues 5, 12): blocks, LSNF strictness, the in-graph
classical base (step 0 == guided filter), metric-aligned losses, training, export and the shipped model."""
import argparse
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from skyclear.models.fusion import data as fdata  # noqa: E402
from skyclear.models.fusion import splits  # noqa: E402
from skyclear.models.fusion import losses as flosses  # noqa: E402
from skyclear.models.fusion.guided_base import GuidedFusionBase  # noqa: E402
from skyclear.models.fusion.losses import gwpl  # noqa: E402
from skyclear.models.fusion.network import (CBAM, CBAMFusion, DenseASPP,  # noqa: E402
                                            FusionPipeline, HierarchicalFusionNet, LSNFDecoder,
                                            ResNetEncoder, luminance, recompose_rgb)
from skyclear.plugin.core.fusion_classical import fuse_guided, fuse_rgb  # noqa: E402
from skyclear.plugin.core.metrics import fusion as fmetrics  # noqa: E402

from factories import TINY_FUSION, cfog_batch  # noqa: E402

ZOO_MODEL = os.path.join(os.path.dirname(__file__), "..", "models", "zoo", "fusion_hier_small.onnx")

torch.set_num_threads(1)


def test_cbam_and_dense_aspp_shapes():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8)
    assert CBAM(16)(x).shape == x.shape
    assert CBAMFusion(16)(x, x.flip(0)).shape == x.shape
    y = torch.randn(1, 32, 4, 6)
    assert DenseASPP(32, (1, 2, 3))(y).shape == y.shape


def test_encoder_has_five_levels():
    enc = ResNetEncoder(2, width=4, blocks=(1, 1, 1, 1))
    feats = enc(torch.randn(1, 2, 64, 48))
    assert [f.shape[1] for f in feats] == enc.channels == [4, 16, 32, 64, 128]
    assert [tuple(f.shape[-2:]) for f in feats] == [(64 >> i, 48 >> i) for i in range(5)]


def test_fusion_net_output_shape_and_levels():
    net = HierarchicalFusionNet(width=4, blocks=(1, 1, 1, 1), aspp_dilations=(1, 2), use_pseudo=True)
    kinds = [type(f).__name__ for f in net.fuse]
    assert kinds == ["AddFusion", "AddFusion", "CBAMFusion", "CBAMFusion", "CBAMFusion"]  # 3 CBAM + 2 add
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    out = net(x, x, x, x)
    assert out.shape == (2, 1, 64, 64)
    assert net.downsampling == 16
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in net.modules())
    assert not any(isinstance(m, torch.nn.Tanh) for m in net.modules())


def _real_crop(data_dir, rows=(0, 96), cols=(100, 228)):
    """A real CFOG training crop in [0, 1]: optical RGB (3, H, W) and SAR (H, W)."""
    rasterio = pytest.importorskip("rasterio")
    window = (rows, cols)
    with rasterio.open(data_dir / splits.CFOG_SAR) as s, rasterio.open(data_dir / splits.CFOG_OPTICAL) as o:
        return o.read(window=window)[:3] / 255.0, s.read(1, window=window) / 255.0


def test_in_graph_guided_filter_equals_the_classical_one(data_dir):
    opt, sar = _real_crop(data_dir, rows=(0, 150), cols=(0, 70))   # odd, non-square, 70 > 46 px
    y = luminance(torch.from_numpy(opt)[None].float())
    got = GuidedFusionBase()(y, torch.from_numpy(sar).float()[None, None])[0, 0].numpy()
    want = fuse_guided(y[0, 0].numpy().astype(np.float64), sar)
    assert np.abs(got - want).max() < 1e-4
    # and it is not trivially one of the sources
    assert np.abs(want - sar).mean() > 0.02 and np.abs(want - y[0, 0].numpy()).mean() > 0.02


def test_untrained_network_returns_the_guided_filter_result(data_dir):
    """Step 0 equals the classical tool: the zero-initialised head adds nothing to the base."""
    torch.manual_seed(0)
    opt, sar = _real_crop(data_dir)
    net = HierarchicalFusionNet(width=4, blocks=(1, 1, 1, 1), aspp_dilations=(1, 2))
    pipe = FusionPipeline(net).eval()
    with torch.no_grad():
        got = pipe(torch.from_numpy(opt * 2 - 1)[None].float(), torch.from_numpy(sar * 2 - 1)[None, None].float())
    got = (got[0].numpy() + 1) / 2
    want = fuse_rgb(opt, sar, "guided")
    assert np.abs(got - want).max() < 1e-4
    # the head is really zero at step 0 and really trainable
    assert float(net.head.weight.abs().sum()) == 0.0 and net.head.weight.requires_grad
    # without the base path the untrained network is far from the classical result
    plain = FusionPipeline(HierarchicalFusionNet(width=4, blocks=(1, 1, 1, 1), aspp_dilations=(1, 2),
                                                 use_base=False)).eval()
    with torch.no_grad():
        other = plain(torch.from_numpy(opt * 2 - 1)[None].float(), torch.from_numpy(sar * 2 - 1)[None, None].float())
    assert np.abs((other[0].numpy() + 1) / 2 - want).mean() > 0.05


def test_loss_ports_match_the_metrics(data_dir):
    """SSIM, VIF and Qabf losses compute what plugin/core/metrics/fusion.py reports."""
    opt, sar = _real_crop(data_dir)
    y = np.rint(luminance(torch.from_numpy(opt)[None].float())[0, 0].numpy() * 255)
    s = np.rint(sar * 255)
    f = np.rint(0.6 * y + 0.4 * s)
    t = lambda v: torch.from_numpy(v / 127.5 - 1).float()[None, None]  # noqa: E731
    assert abs(float(flosses.ssim(t(f), t(y))) - fmetrics.ssim(f, y)) < 1e-4
    assert abs(float(flosses.vif(t(y), t(f))) - fmetrics.vif(y, f)) < 1e-4
    assert abs(float(flosses.qabf(t(f), t(y), t(s))) - fmetrics.qabf(f, y, s)) < 2e-3
    fused = t(f).requires_grad_()
    losses = flosses.content_losses(fused, t(y), t(s), {k: 1.0 for k in flosses.TERMS})
    losses["content"].backward()
    assert set(losses) == set(flosses.TERMS) | {"content"}
    assert torch.isfinite(fused.grad).all() and fused.grad.abs().sum() > 0


def _lsnf():
    channels = [4, 8, 12, 16, 20]
    dec = LSNFDecoder(channels)
    feats = [torch.randn(1, c, 32 >> i, 32 >> i, requires_grad=True) for i, c in enumerate(channels)]
    return dec, channels, feats


def test_lsnf_output_shape():
    dec, channels, feats = _lsnf()
    assert dec(feats).shape == (1, channels[0], 32, 32)


def test_lsnf_is_strictly_nested():
    dec, channels, feats = _lsnf()
    levels = len(channels)
    # declared wiring: node (i, j) gets exactly its own level's previous node and the adjacent deeper one
    assert sorted(dec.inputs_of) == sorted((i, j) for j in range(1, levels) for i in range(levels - j))
    for (i, j), srcs in dec.inputs_of.items():
        assert srcs == [(i, j - 1), (i + 1, j - 1)]
        first_conv = dec.nodes[f"{i}_{j}"][0][0]
        assert first_conv.in_channels == channels[i] + channels[i + 1]  # nothing else can be concatenated
    out, nodes = dec(feats, return_all=True)
    assert dec.last_trace == dec.inputs_of  # forward used exactly the declared inputs
    # functional check: node (i, j) depends on encoder levels i .. i + j only
    for (i, j), value in nodes.items():
        if j == 0:
            continue
        grads = torch.autograd.grad(value.sum(), feats, retain_graph=True, allow_unused=True)
        used = {lvl for lvl, g in enumerate(grads) if g is not None and g.abs().sum() > 0}
        assert used == set(range(i, i + j + 1)), ((i, j), used)


def test_gwpl_pulls_towards_the_source_with_the_stronger_edge():
    h, w = 16, 64
    cols = torch.arange(w).float()
    a = torch.where(cols < 16, -0.8, 0.8).expand(h, w).clone()          # strong edge at column 16
    b = torch.where(cols < 48, 0.0, 0.2).expand(h, w).clone()           # weak edge at column 48
    a, b = a[None, None], b[None, None]
    fused = torch.zeros_like(a, requires_grad=True)
    gwpl(fused, a, b).backward()
    g = fused.grad[0, 0]
    # at A's edge, the target is A: descent (-grad) moves F towards A (left -0.8, right +0.8)
    assert g[:, 15].min() > 0 and g[:, 16].max() < 0
    # at B's weaker edge the target is B (right side 0.2 > F=0): -grad points up, smaller magnitude
    assert g[:, 48].max() < 0
    assert g[:, 16].abs().mean() > 3 * g[:, 48].abs().mean()
    # flat regions carry (almost) no weight
    assert g[:, 30].abs().max() < 1e-3 * g[:, 16].abs().mean()
    # a descent step reduces the loss and moves the edge pixels towards A
    with torch.no_grad():
        stepped = fused - 10.0 * fused.grad
    assert gwpl(stepped, a, b) < gwpl(fused.detach(), a, b)
    assert (stepped[0, 0, :, 15] < 0).all() and (stepped[0, 0, :, 16] > 0).all()


def test_luminance_recomposition_keeps_chroma():
    rgb = torch.rand(1, 3, 8, 8) * 2 - 1
    y = luminance(rgb)
    assert torch.allclose(recompose_rgb(rgb, y), rgb.clamp(-1, 1), atol=1e-6)
    out = recompose_rgb(rgb * 0.5, y * 0.5 + 0.1)
    assert torch.allclose(luminance(out), y * 0.5 + 0.1, atol=1e-5)


# ----------------------------------------------------------------------------- real data

TINY = TINY_FUSION


def test_training_pairs_exclude_heldout_and_validation(data_dir):
    pairs = fdata.load_training_pairs(str(data_dir))
    names = [p[0] for p in pairs]
    assert not any(h in n for n in names for h in splits.SEN12MSCR_HELDOUT)
    assert not any(v in n for n in names for v in splits.SEN12MSCR_VALIDATION + splits.BIGEARTHNET_VALIDATION)
    cfog = fdata.load_cfog(str(data_dir))
    assert cfog[1].shape[1] == splits.cfog_train_rows()[1] < splits.CFOG_HELDOUT_ROW0
    vsff = fdata.load_vsff(str(data_dir))
    assert vsff[1].shape[1] == splits.vsff_train_rows()[1] < splits.VSFF_VAL_ROW0
    for prefix in ("ssl4eo", "vsff", "bigearthnet", "sen12ms_s1s2", "cfog_cp", "sen12mscr", "cfog_train"):
        assert any(n.startswith(prefix) for n in names), prefix
    for _, sar, opt in pairs:
        assert sar.shape[0] == 1 and opt.shape[0] == 3 and sar.shape[1:] == opt.shape[1:]
        assert np.isfinite(sar).all() and np.isfinite(opt).all()
        assert sar.min() >= -1 and sar.max() <= 1 and opt.min() >= -1 and opt.max() <= 1
    assert len(splits.heldout_pairs(str(data_dir))) == 4
    val = [p[0] for p in fdata.load_validation_pairs(str(data_dir))]
    assert len(val) == 4 and not set(val) & set(names)
    with_val = [p[0] for p in fdata.load_training_pairs(str(data_dir), include_validation=True)]
    assert set(val) <= set(with_val) and not any(h in n for n in with_val for h in splits.SEN12MSCR_HELDOUT)


def test_warped_cfog_cp_pair_is_aligned(data_dir):
    """The control-point pair is warped onto the optical grid: SAR and optical edges now line up."""
    from scipy import ndimage
    _, sar, opt = fdata.load_cfog_cp(str(data_dir))
    y = luminance(torch.from_numpy(opt)[None])[0, 0].numpy()
    g = lambda a: np.hypot(ndimage.sobel(a, 0), ndimage.sobel(a, 1))  # noqa: E731
    gs, go = g(sar[0]), g(y)
    corr = lambda dx: np.corrcoef(np.roll(gs, dx, 1)[:, 20:-20].ravel(), go[:, 20:-20].ravel())[0, 1]  # noqa: E731
    shifts = {dx: corr(dx) for dx in range(-12, 13, 3)}
    assert max(shifts, key=shifts.get) == 0, shifts


def test_sampler_scale_augmentation_keeps_pairs_aligned():
    rng = np.random.default_rng(0)
    base = rng.random((1, 200, 220)).astype(np.float32) * 2 - 1
    pairs = [("x", base, np.repeat(base, 3, 0))]
    sampler = fdata.PatchSampler(pairs, 48, seed=3, scale_range=(0.6, 1.8))
    s, o = sampler.batch(6)
    assert s.shape == (6, 1, 48, 48) and o.shape == (6, 3, 48, 48)
    np.testing.assert_allclose(o[:, :1], s, atol=1e-6)  # the same crop, scale and flip for both
    assert s.min() >= -1 and s.max() <= 1


def test_folder_of_pairs_reader(data_dir, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    with rasterio.open(data_dir / splits.CFOG_SAR) as s, rasterio.open(data_dir / splits.CFOG_OPTICAL) as o:
        sar, opt = s.read(window=((0, 40), (0, 48))), o.read(window=((0, 40), (0, 48)))
    for sub, name, arr in (("s1_0", "ROIs1_spring_s1_0_p1.tif", sar), ("s2_0", "ROIs1_spring_s2_0_p1.tif", opt)):
        (tmp_path / sub).mkdir()
        with rasterio.open(tmp_path / sub / name, "w", driver="GTiff", width=48, height=40,
                           count=arr.shape[0], dtype="uint8") as dst:
            dst.write(arr)
    (name, s, o), = fdata.load_folder_pairs(str(tmp_path))
    assert s.shape == (1, 40, 48) and o.shape == (3, 40, 48)
    np.testing.assert_allclose(s, sar / 127.5 - 1, atol=1e-6)


def test_a_few_fusion_steps_reduce_the_losses(data_dir):
    from skyclear.models.fusion.trainer import FusionTrainer
    torch.manual_seed(0)
    trainer = FusionTrainer(dict(TINY), torch.device("cpu"))
    sar, opt = cfog_batch(data_dir)
    with torch.no_grad():
        before = {k: float(v) for k, v in trainer.losses(sar, opt)[2].items()}
    for _ in range(25):
        trainer.step(sar, opt)
    with torch.no_grad():
        after = {k: float(v) for k, v in trainer.losses(sar, opt)[2].items()}
    # training starts at the guided-filter result and moves away only where the losses say so
    assert after["content"] < before["content"] - 0.01, (before, after)


def test_a_few_cyclegan_steps_reduce_the_cycle_loss(data_dir):
    from skyclear.models.fusion.trainer import CYCLEGAN_DEFAULTS, CycleGANTrainer
    torch.manual_seed(0)
    config = dict(CYCLEGAN_DEFAULTS, width=4, blocks=1, d_width=4, d_layers=2, lr=2e-3)
    trainer = CycleGANTrainer(config, torch.device("cpu"))
    sar, opt = cfog_batch(data_dir)
    first = [trainer.step(sar, opt)["g_cycle"] for _ in range(3)]
    for _ in range(15):
        last = trainer.step(sar, opt)["g_cycle"]
    assert last < 0.7 * np.mean(first)


def test_tiny_export_has_a_valid_card_and_matches_torch(data_dir, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from skyclear.models.fusion import trainer as ft
    from skyclear.plugin.core.model_card import read_card
    import skyclear.models as m
    import os
    cfg = lambda n: os.path.join(m.CONFIG_DIR, n)  # noqa: E731
    cyc, fus = str(tmp_path / "cyc"), str(tmp_path / "fus")   # with the (optional) CycleGAN stage
    for kind, config, out, extra in (("fusion-cyclegan", "fusion-cyclegan-tiny.json", cyc, []),
                                     ("fusion", "fusion-tiny.json", fus, [f'cyclegan_run="{cyc}"'])):
        ns = argparse.Namespace(kind=kind, config=cfg(config), out=out, set=["steps=2"] + extra,
                                device="cpu", seed=0, no_resume=False, data=str(data_dir))
        ft.train(ns)
    onnx_path = str(tmp_path / "tiny.onnx")
    diff = ft.export(fus, onnx_path, argparse.Namespace(metrics=False, sample=None))
    assert diff < 1e-4
    card = read_card(onnx_path)
    assert card.task == "sar_optical_fusion"
    assert [(t.name, t.role, len(t.bands)) for t in card.inputs] == [("optical", "optical", 3), ("sar", "sar", 1)]
    assert card.inputs[1].resampling == "bilinear"
    assert [(t.name, len(t.bands), t.dtype) for t in card.outputs] == [("fused", 3, None)]
    assert card.size_multiple == 16 and card.tile_size % 16 == 0
    b = card.inputs[0].bands[0]
    assert (b.clip, b.offset, b.scale) == ([0.0, 255.0], 127.5, 127.5)
    assert card.extra["uses_pseudo_modal_inputs"] is True and card.extra["classical_base"] == "guided"
    # ONNX == torch on a real held-out crop (other size than the export example), through the card's scaling
    (_, sar, opt), = fdata.load_heldout_pairs(str(data_dir))[:1]
    s, o = sar[None, :, :48, :64].copy(), opt[None, :, :48, :64].copy()
    got = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).run(
        ["fused"], {"sar": s, "optical": o})[0]
    trainer = ft.FusionTrainer(dict(ft.FUSION_DEFAULTS, **ft.RunDir(fus).config()), torch.device("cpu"))
    trainer.load(torch.load(os.path.join(fus, "checkpoints", card.training["checkpoint"] + ".pt"),
                            weights_only=False))
    with torch.no_grad():
        want = trainer.pipeline()(torch.from_numpy(o), torch.from_numpy(s)).numpy()
    assert got.shape == (1, 3, 48, 64)
    assert np.abs(got - want).max() < 1e-4


# ----------------------------------------------------------------------------- the shipped model


@pytest.fixture(scope="module")
def zoo_session():
    ort = pytest.importorskip("onnxruntime")
    from skyclear.plugin.core.model_card import card_from_session
    if not os.path.exists(ZOO_MODEL):
        pytest.skip("models/zoo/fusion_hier_small.onnx is not present")
    session = ort.InferenceSession(ZOO_MODEL, providers=["CPUExecutionProvider"])
    return session, card_from_session(session, ZOO_MODEL)


def test_shipped_card_lists_the_optical_input_first(zoo_session):
    _, card = zoo_session
    assert card.inputs[0].role == "optical" and [t.role for t in card.inputs] == ["optical", "sar"]
    assert int(card.version.split(".")[0]) >= 2
    assert card.outputs[0].dtype is None and card.outputs[0].role == "optical"
    assert card.extra["classical_base"] == "guided" and not card.extra["uses_pseudo_modal_inputs"]
    assert card.default_overlap >= 2 * 96 and card.tile_size >= 2 * card.default_overlap
    assert os.path.getsize(ZOO_MODEL) < 25 * 2 ** 20
    assert card.extra["fusion_net_params"] > 1e6 and card.training["steps"] > 0


def test_shipped_model_is_a_trained_correction_of_the_guided_filter(zoo_session, data_dir):
    """Differs from GFF (it was trained) but stays close to it (it corrects, it does not rebuild)."""
    session, _ = zoo_session
    opt, sar = _real_crop(data_dir, rows=(0, 128), cols=(0, 128))
    got = session.run(["fused"], {"optical": (opt * 2 - 1)[None].astype(np.float32),
                                  "sar": (sar * 2 - 1)[None, None].astype(np.float32)})[0][0]
    got = (got + 1) / 2
    gff = fuse_rgb(opt, sar, "guided")
    diff = np.abs(got - gff)
    assert diff.mean() > 1e-3, "the shipped network is the untrained classical base"
    assert diff.mean() < 0.1
    assert got.min() >= 0 and got.max() <= 1


def test_shipped_model_keeps_grey_optical_grey(zoo_session, data_dir):
    """A 1-band optical image fed as R = G = B (core band mapping) comes out grey: no colour is invented."""
    session, _ = zoo_session
    opt, sar = _real_crop(data_dir, rows=(0, 64), cols=(0, 96))
    grey = np.repeat(luminance(torch.from_numpy(opt)[None])[0].numpy(), 3, 0)
    got = session.run(["fused"], {"optical": (grey * 2 - 1)[None].astype(np.float32),
                                  "sar": (sar * 2 - 1)[None, None].astype(np.float32)})[0][0]
    assert np.abs(got[0] - got[1]).max() < 1e-5 and np.abs(got[1] - got[2]).max() < 1e-5


def test_shipped_model_through_the_engine_keeps_optical_grid_dtype_and_colours(zoo_session, data_dir, tmp_path):
    """The tool's network path on a real georeferenced uint8 crop: output on the optical grid, in its
    dtype, with the optical chroma (YCbCr Cb, Cr) unchanged away from clipping."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    from skyclear.plugin.core.colour import rgb_to_ycbcr
    from skyclear.plugin.core.jobs import fuse_sar_optical
    from factories import write_raster
    opt, sar = _real_crop(data_dir, rows=(0, 300), cols=(0, 340))
    opt8, sar8 = np.rint(opt * 255).astype("uint8"), np.rint(sar * 255).astype("uint8")[None]
    opt_path = write_raster(str(tmp_path / "opt.tif"), opt8, transform=from_origin(500000, 4600000, 3.5, 3.5))
    sar_path = write_raster(str(tmp_path / "sar.tif"), sar8, transform=from_origin(500000, 4600000, 3.5, 3.5))
    out = str(tmp_path / "fused.tif")
    fuse_sar_optical(sar=sar_path, optical=opt_path, output=out, method="network", model=ZOO_MODEL)
    with rasterio.open(out) as ds, rasterio.open(opt_path) as src:
        assert (ds.crs, ds.transform, ds.shape, ds.count) == (src.crs, src.transform, src.shape, 3)
        assert ds.dtypes[0] == "uint8"
        fused = ds.read().astype(np.float64) / 255
    ycc_in, ycc_out = rgb_to_ycbcr(opt8 / 255.0), rgb_to_ycbcr(fused)
    unclipped = (fused > 0.02).all(0) & (fused < 0.98).all(0)
    assert unclipped.mean() > 0.5
    assert np.abs(ycc_out[1:] - ycc_in[1:])[:, unclipped].max() < 3 / 255   # colours kept (8-bit rounding)
    assert np.abs(ycc_out[0] - ycc_in[0]).mean() > 2 / 255                  # luminance was fused
