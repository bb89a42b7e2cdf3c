"""Hierarchical SAR–optical fusion network (issue 5): blocks, LSNF strictness, GWPL, training, export."""
import argparse

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from skyclear.models.fusion import data as fdata  # noqa: E402
from skyclear.models.fusion import splits  # noqa: E402
from skyclear.models.fusion.losses import gwpl  # noqa: E402
from skyclear.models.fusion.network import (CBAM, CBAMFusion, DenseASPP,  # noqa: E402
                                            HierarchicalFusionNet, LSNFDecoder, ResNetEncoder,
                                            luminance, recompose_rgb)

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
    x = torch.randn(2, 1, 32, 32)
    out = net(x, x, x, x)
    assert out.shape == (2, 1, 32, 32) and out.abs().max() <= 1
    assert net.downsampling == 16


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

TINY = {"kind": "fusion", "patch": 32, "batch": 2, "width": 4, "blocks": [1, 1, 1, 1], "cbam_levels": [3, 4, 5],
        "aspp_dilations": [1, 2, 3], "cyclegan_run": None, "weights": {"intensity": 1.0, "gwpl": 1.0, "ssim": 1.0},
        "intensity_mode": "max", "gwpl_window": 3, "lambda_adv": 0.0, "d_width": 4, "d_layers": 2, "ema": 0,
        "lr": 2e-3, "d_lr": 2e-4}


def _real_batch(data_dir, n=2, size=32):
    pairs = fdata.load_training_pairs(str(data_dir), ("cfog",))
    sampler = fdata.PatchSampler(pairs, size, seed=1)
    return tuple(torch.from_numpy(b) for b in sampler.batch(n))


def test_training_pairs_exclude_heldout(data_dir):
    names = [p[0] for p in fdata.load_training_pairs(str(data_dir))]
    assert not any(h in n for n in names for h in splits.SEN12MSCR_HELDOUT)
    cfog = fdata.load_cfog(str(data_dir))
    assert cfog[1].shape[1] == splits.cfog_train_rows()[1] < splits.CFOG_HELDOUT_ROW0
    assert any(n.startswith("ssl4eo") for n in names)
    for _, sar, opt in fdata.load_training_pairs(str(data_dir)):
        assert sar.shape[0] == 1 and opt.shape[0] == 3 and np.isfinite(sar).all()
        assert sar.min() >= -1 and sar.max() <= 1 and opt.min() >= -1 and opt.max() <= 1
    assert len(splits.heldout_pairs(str(data_dir))) == 4


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
    sar, opt = _real_batch(data_dir)
    with torch.no_grad():
        before = {k: float(v) for k, v in trainer.losses(sar, opt)[2].items()}
    for _ in range(25):
        trainer.step(sar, opt)
    with torch.no_grad():
        after = {k: float(v) for k, v in trainer.losses(sar, opt)[2].items()}
    assert after["content"] < 0.8 * before["content"], (before, after)
    assert after["intensity"] < before["intensity"] and after["gwpl"] < before["gwpl"]


def test_a_few_cyclegan_steps_reduce_the_cycle_loss(data_dir):
    from skyclear.models.fusion.trainer import CYCLEGAN_DEFAULTS, CycleGANTrainer
    torch.manual_seed(0)
    config = dict(CYCLEGAN_DEFAULTS, width=4, blocks=1, d_width=4, d_layers=2, lr=2e-3)
    trainer = CycleGANTrainer(config, torch.device("cpu"))
    sar, opt = _real_batch(data_dir)
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
    cyc, fus = str(tmp_path / "cyc"), str(tmp_path / "fus")
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
    assert [(t.name, t.role, len(t.bands)) for t in card.inputs] == [("sar", "sar", 1), ("optical", "optical", 3)]
    assert card.inputs[0].resampling == "bilinear"
    assert [(t.name, len(t.bands), t.dtype) for t in card.outputs] == [("fused", 3, None)]
    assert card.size_multiple == 16 and card.tile_size % 16 == 0
    b = card.inputs[1].bands[0]
    assert (b.clip, b.offset, b.scale) == ([0.0, 255.0], 127.5, 127.5)
    assert card.extra["uses_pseudo_modal_inputs"] is True
    # ONNX == torch on a real held-out crop, through the card's preprocessing
    (_, sar, opt), = fdata.load_heldout_pairs(str(data_dir))[:1]
    s, o = sar[None, :, :48, :64].copy(), opt[None, :, :48, :64].copy()
    got = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).run(
        ["fused"], {"sar": s, "optical": o})[0]
    pipe = ft.FusionTrainer(dict(ft.FUSION_DEFAULTS, **ft.RunDir(fus).config()), torch.device("cpu"))
    pipe.load(torch.load(os.path.join(fus, "checkpoints", "last.pt"), weights_only=False))
    with torch.no_grad():
        want = pipe.pipeline()(torch.from_numpy(s), torch.from_numpy(o)).numpy()
    assert got.shape == (1, 3, 48, 64)
    assert np.abs(got - want).max() < 1e-4
