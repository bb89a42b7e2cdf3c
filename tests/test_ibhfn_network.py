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


# ------------------------------------------------------------------------------------------
# 2.0 options: bottleneck placement, SAR skips, clear path, upsampling


def test_bottleneck_on_every_sar_path():
    torch.manual_seed(0)
    model = IBHFN(width=4, depth=2, bottleneck="all")
    assert len(model.skip_bottlenecks) == 2
    opt, sar = torch.rand(2, 13, 16, 16), torch.rand(2, 2, 16, 16)
    restored, _, kl = model(opt, sar)
    assert set(model.kl_terms) == {"deep", "skip0", "skip1"}
    assert float(kl) == pytest.approx(float(sum(model.kl_terms.values())) / 3, rel=1e-5)
    (restored.mean() + kl).backward()
    for vb in model.skip_bottlenecks:
        assert vb.mu.weight.grad is not None and vb.logvar.weight.grad is not None
    # eval: z = mu on every path, deterministic; the SAR skips really pass the bottleneck
    model.eval()
    with torch.no_grad():
        a, b = model(opt, sar)[0], model(opt, sar)[0]
        assert torch.equal(a, b)
        for vb in model.skip_bottlenecks:
            vb.mu.weight.zero_()
            vb.mu.bias.zero_()
        c = model(opt, sar)[0]
    assert not torch.allclose(a, c)


def test_deep_bottleneck_leaves_skips_unconstrained_and_bool_compat():
    assert IBHFN(width=4, bottleneck=True).bottleneck == "deep"
    assert IBHFN(width=4, bottleneck=False).bottleneck == "none"
    deep = IBHFN(width=4, bottleneck="deep")
    assert len(deep.skip_bottlenecks) == 0
    deep(torch.rand(1, 13, 16, 16), torch.rand(1, 2, 16, 16))
    assert set(deep.kl_terms) == {"deep"}
    with pytest.raises(ValueError):
        IBHFN(width=4, bottleneck="everywhere")


def test_without_sar_skips_sar_reaches_decoder_only_through_the_fusion():
    torch.manual_seed(0)
    model = IBHFN(width=4, depth=2, sar_skips=False, gating=False).eval()
    assert model.decoder.ups[0]["merge"][0].in_channels == 2 * 8
    opt, sar = torch.rand(1, 13, 16, 16), torch.rand(1, 2, 16, 16)
    with torch.no_grad():
        fo, fs = model.opt_encoder(opt), model.sar_encoder(sar)
        fused, _ = model.sibf(fo[-1], fs[-1])
        junk = [torch.randn_like(f) for f in fs]  # the decoder must ignore the SAR skip features
        assert torch.allclose(model.decoder(fused, fo, fs), model.decoder(fused, fo, junk))


@pytest.mark.parametrize("path", ["affine", "residual"])
def test_clear_path_is_identity_at_init_then_learns_a_correction(path):
    torch.manual_seed(0)
    model = IBHFN(width=4, depth=2, clear_path=path)
    opt, sar = torch.rand(2, 13, 16, 16), torch.rand(2, 2, 16, 16)
    ref = IBHFN(width=4, depth=2)
    ref.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("clear_head")})
    model.eval(), ref.eval()
    with torch.no_grad():
        assert torch.allclose(model(opt, sar)[0], ref(opt, sar)[0], atol=1e-6)
    # a global haze on the clear path can be learnt: fit restored = optical - 0.05 where the gate is open
    model.train()
    optim = torch.optim.Adam(model.clear_head.parameters(), lr=1e-2)
    for _ in range(60):
        restored, m, _ = model(opt, sar)
        loss = ((restored - (opt - 0.05)) ** 2 * m.detach()).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert float(model.clear_head.weight.abs().sum()) > 0
    assert float(loss) < 0.5 * float((((ref.train()(opt, sar)[0] - (opt - 0.05)) ** 2) * m.detach()).mean())


def test_bilinear_upsampling_and_unknown_options_fail_clearly():
    model = IBHFN(width=4, depth=2, upsample="bilinear")
    assert model(torch.rand(1, 13, 16, 16), torch.rand(1, 2, 16, 16))[0].shape == (1, 13, 16, 16)
    with pytest.raises(ValueError, match="upsample"):
        IBHFN(width=4, upsample="cubic")
    with pytest.raises(ValueError, match="clear_path"):
        IBHFN(width=4, clear_path="copy")
    with pytest.raises(ValueError, match="unknown ibhfn model option"):
        build_model("ibhfn", {"model": {"width": 4, "widht": 8}})


def test_old_state_dict_loads_into_default_network():
    """1.x checkpoints (and the shipped model's weights) keep loading: default options = 1.x graph."""
    old_keys = set(IBHFN(width=4, depth=2).state_dict())
    assert {"sibf.mu.weight", "sibf.logvar.weight", "skip.weight", "decoder.out.weight"} <= old_keys
    assert not any(k.startswith(("skip_bottlenecks", "clear_head")) for k in old_keys)
