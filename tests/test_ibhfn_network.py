"""IB-HFN and baseline modules: shapes, gradients, Dirac identity, KL, ablation flags."""
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # the test machine is shared; oversubscribed threads are much slower

from skyclear.models.ibhfn.network import (DSen2CR, IBHFN, SIBF, Decoder, Encoder, LocalGlobalGate,  # noqa: E402
                                           build_model)


def _grads_ok(module):
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


def test_encoder_shapes_and_grads():
    enc = Encoder(13, width=4, depth=2, blocks=1)
    feats = enc(torch.rand(2, 13, 32, 32))
    assert [tuple(f.shape) for f in feats] == [(2, 4, 32, 32), (2, 8, 16, 16), (2, 16, 8, 8)]
    sum(f.mean() for f in feats).backward()
    _grads_ok(enc)


def test_sibf_train_vs_eval_and_grads():
    torch.manual_seed(0)
    sibf = SIBF(8)
    f_opt, f_sar = torch.rand(2, 8, 4, 4), torch.rand(2, 8, 4, 4, requires_grad=True)
    fused, kl = sibf(f_opt, f_sar)
    assert fused.shape == (2, 8, 4, 4) and kl.dim() == 0 and float(kl) >= 0
    (fused.mean() + kl).backward()
    _grads_ok(sibf)
    assert f_sar.grad is not None
    sibf.eval()
    with torch.no_grad():
        a, _ = sibf(f_opt, f_sar)
        b, _ = sibf(f_opt, f_sar)
    assert torch.equal(a, b)  # z = mu at inference: deterministic
    sibf.train()
    with torch.no_grad():
        c, _ = sibf(f_opt, f_sar)
    assert not torch.equal(a, c)  # reparameterised sample while training


def test_kl_is_zero_for_standard_normal():
    mu = torch.zeros(2, 8, 4, 4)
    logvar = torch.zeros(2, 8, 4, 4)  # sigma = 1
    assert float(SIBF.kl(mu, logvar)) == 0.0
    assert float(SIBF.kl(mu + 1, logvar)) == pytest.approx(0.5)


def test_no_bottleneck_has_zero_kl():
    sibf = SIBF(8, bottleneck=False)
    _, kl = sibf(torch.rand(1, 8, 4, 4), torch.rand(1, 8, 4, 4))
    assert float(kl) == 0.0


def test_gate_range_shape_grads():
    gate = LocalGlobalGate(4, 16)
    m = gate(torch.rand(2, 4, 32, 32), torch.rand(2, 16, 8, 8))
    assert m.shape == (2, 1, 32, 32) and float(m.min()) >= 0 and float(m.max()) <= 1
    m.mean().backward()
    _grads_ok(gate)


def test_decoder_shapes_and_grads():
    dec = Decoder(4, 2, 1, 13)
    enc_o, enc_s = Encoder(13, 4, 2, 1), Encoder(2, 4, 2, 1)
    fo, fs = enc_o(torch.rand(1, 13, 16, 16)), enc_s(torch.rand(1, 2, 16, 16))
    out = dec(fo[-1], fo, fs)
    assert out.shape == (1, 13, 16, 16)
    out.mean().backward()
    _grads_ok(dec)


def test_dirac_skip_is_identity_at_init():
    model = IBHFN(width=4, depth=2)
    x = torch.rand(2, 13, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model.skip(x), x, atol=1e-6)
    undirac = IBHFN(width=4, depth=2, dirac_skip=False)
    with torch.no_grad():
        assert not torch.allclose(undirac.skip(x), x, atol=1e-3)


@pytest.mark.parametrize("flags", [{}, {"bottleneck": False}, {"gating": False}, {"dirac_skip": False}])
def test_ibhfn_outputs_and_grads(flags):
    torch.manual_seed(0)
    model = IBHFN(width=4, depth=2, **flags)
    opt, sar = torch.rand(2, 13, 32, 32), torch.rand(2, 2, 32, 32)
    restored, clear, kl = model(opt, sar)
    assert restored.shape == (2, 13, 32, 32) and clear.shape == (2, 1, 32, 32) and kl.dim() == 0
    (restored.mean() + kl).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        out = model(opt, sar)
    assert len(out) == 2
    if flags.get("gating", True):
        assert 0 <= float(out[1].min()) and float(out[1].max()) <= 1
    else:
        assert float(out[1].abs().max()) == 0.0


def test_gated_output_formula():
    model = IBHFN(width=4, depth=2).eval()
    opt, sar = torch.rand(1, 13, 16, 16), torch.rand(1, 2, 16, 16)
    with torch.no_grad():
        restored, m = model(opt, sar)
        fo, fs = model.opt_encoder(opt), model.sar_encoder(sar)
        fused, _ = model.sibf(fo[-1], fs[-1])
        d = model.decoder(fused, fo, fs)
    assert torch.allclose(restored, m * opt + (1 - m) * d, atol=1e-5)  # Dirac skip = identity


def test_baseline_same_io():
    model = DSen2CR(width=8, blocks=2)
    opt, sar = torch.rand(2, 13, 20, 20), torch.rand(2, 2, 20, 20)
    restored, clear, kl = model(opt, sar)
    assert restored.shape == opt.shape and clear.shape == (2, 1, 20, 20) and float(kl) == 0
    restored.mean().backward()
    _grads_ok(model)
    model.eval()
    with torch.no_grad():
        r, c = model(opt, sar)
    assert float(c.abs().max()) == 0.0


def test_build_model_from_config():
    m = build_model("ibhfn", {"model": {"width": 4, "depth": 3, "gating": False}})
    assert isinstance(m, IBHFN) and m.size_multiple == 8 and m.gate is None
    assert isinstance(build_model("dsen2cr", {"model": {"width": 8, "blocks": 1}}), DSen2CR)
