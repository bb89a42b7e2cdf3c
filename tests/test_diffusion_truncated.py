"""Issue 11: the DE stage that can only add.

Truncated sampling from q(x0_E, t_start) (numpy and torch twins, and through the plugin's
processor reading ``t_start`` from the card); eta = 1 reproduces E exactly; the E-conditioned,
residual CNP (shapes, "no change to E" at initialisation, ONNX round trip with t read at run time);
the WA loss on the sampler's own trajectory; the tiny CLI chain CNP -> WA -> joint -> validation
choice of eta -> export card."""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from skyclear.plugin.core.pipelines import optical_cloud_removal as ocr

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
ort = pytest.importorskip("onnxruntime")

from skyclear.models.common.run import RunDir  # noqa: E402
from skyclear.models.diffusion import gaussian  # noqa: E402
from skyclear.models.diffusion.data import PairDataset, find_pairs, read_image, to_net  # noqa: E402
from skyclear.models.diffusion.reference import build_reference  # noqa: E402
from skyclear.models.diffusion.splits import HELD_OUT  # noqa: E402
from skyclear.models.diffusion.trainer import DEFAULTS, compute_losses, export, train  # noqa: E402
from skyclear.models.diffusion.unet import ConditionalNoisePredictor, StepNet, WeightAllocationNet  # noqa: E402
from skyclear.plugin.core.model_card import read_card  # noqa: E402

from factories import jittered  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHAPE = (2, 3, 8, 8)


def _random_step(seed=0):
    """A deterministic stand-in for the step graph: eps and W in [0, 1] vary with x_t and t; records calls."""
    calls = []

    def step(x, t):
        x = np.asarray(x)
        calls.append((x.copy(), np.asarray(t).copy()))
        eps = np.tanh(x) * 0.7 + 0.2 * np.sin(np.asarray(t)[:, None, None, None] / 37.0 + seed)
        w = 0.5 + 0.45 * np.sin(3 * x + seed)
        return eps.astype(np.float32), w.astype(np.float32)
    return step, calls


def _torch_twin(step_np):
    def step(x, t):
        eps, w = step_np(x.numpy(), t.numpy())
        return torch.from_numpy(eps), torch.from_numpy(w)
    return step


# ------------------------------------------------------------------------------------ samplers


def test_truncated_sampler_starts_from_the_noised_reference():
    rng = np.random.default_rng(0)
    ref = rng.uniform(-1, 1, SHAPE).astype(np.float32)
    noise = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(6)]
    abar = ocr.alphas_cumprod()
    step, calls = _random_step()
    ocr.sample(step, ref, noise, steps=5, eta=0.3, t_start=300)
    assert [int(c[1][0]) for c in calls] == [300, 225, 150, 75, 0]
    want = np.sqrt(abar[300]) * ref.astype(np.float64) + np.sqrt(1 - abar[300]) * noise[0]
    assert np.abs(calls[0][0] - want).max() < 1e-6
    # without t_start: the old behaviour, pure noise at T-1
    step, calls = _random_step()
    ocr.sample(step, ref, noise, steps=5, eta=0.3)
    assert int(calls[0][1][0]) == 999 and np.array_equal(calls[0][0], noise[0])
    # the torch twin visits the same states and returns the same result
    for t_start in (None, 300):
        a = ocr.sample(_random_step()[0], ref, noise, 5, 0.3, t_start=t_start)
        b = gaussian.sample(_torch_twin(_random_step()[0]), torch.from_numpy(ref), [torch.from_numpy(n) for n in noise],
                            5, 0.3, t_start=t_start).numpy()
        assert np.abs(a - b).max() < 1e-5, t_start
    with pytest.raises(ValueError):
        ocr.sampling_timesteps(1000, 20, t_start=10)      # more steps than timesteps in [0, 10]
    with pytest.raises(ValueError):
        ocr.sampling_timesteps(1000, 5, t_start=1000)


@pytest.mark.parametrize("t_start", [None, 250])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_eta_one_reproduces_the_reference_exactly(t_start, sampler):
    rng = np.random.default_rng(1)
    ref = rng.uniform(-1, 1, SHAPE).astype(np.float32)
    noise = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(11)]
    out = ocr.sample(_random_step()[0], ref, noise, steps=10, eta=1.0, sampler=sampler, t_start=t_start)
    assert np.array_equal(out, ref)
    out_t = gaussian.sample(_torch_twin(_random_step()[0]), torch.from_numpy(ref),
                            [torch.from_numpy(n) for n in noise], 10, 1.0, sampler, t_start=t_start)
    assert np.array_equal(out_t.numpy(), ref)
    # and eta < 1 does change the output (so the equality above is not vacuous)
    other = ocr.sample(_random_step()[0], ref, noise, steps=10, eta=0.3, sampler=sampler, t_start=t_start)
    assert np.abs(other - ref).max() > 1e-3


# ------------------------------------------------------------------------------------ the CNP


def test_cnp_conditioning_shapes_and_residual_starts_at_reference():
    cnp = ConditionalNoisePredictor(3, {"preset": "cnp-tiny", "condition": "cloudy+reference",
                                        "prediction": "residual"})
    assert cnp.unet.input_conv.in_channels == 9 and cnp.uses_reference
    paper = ConditionalNoisePredictor(3, "cnp-tiny")
    assert paper.unet.input_conv.in_channels == 6 and not paper.uses_reference
    g = torch.Generator().manual_seed(0)
    x_t, y, ref = (torch.randn(2, 3, 16, 16, generator=g) * 0.5 for _ in range(3))
    t = torch.tensor([40.0, 250.0])
    eps = cnp(x_t, t, y, ref)
    assert eps.shape == (2, 3, 16, 16)
    # zero-initialised last conv: x0 implied by eps is x0_E exactly (up to float error)
    x0 = gaussian.GaussianDiffusion().x0_from_eps(x_t, t.long(), eps, clip=False)
    assert torch.abs(x0 - ref).max() < 1e-4
    with pytest.raises(ValueError):
        cnp(x_t, t, y)                 # the reference is required
    with pytest.raises(ValueError):
        ConditionalNoisePredictor(3, {"preset": "cnp-tiny", "prediction": "x0"})


@pytest.fixture(scope="module")
def truncated_models(data_dir, tmp_path_factory):
    """Tiny exported E + step graph with an E-conditioned residual CNP and t_start = 200."""
    tmp = tmp_path_factory.mktemp("de_truncated")
    data = str(data_dir / "rice1")
    torch.manual_seed(0)
    cnp_cfg = {"preset": "cnp-tiny", "condition": "cloudy+reference", "prediction": "residual"}
    ref = jittered(build_reference({"channels": 8, "blocks": 1}, 3))
    cnp = jittered(ConditionalNoisePredictor(3, cnp_cfg), 1)
    wa = jittered(WeightAllocationNet(3, {"preset": "wa-tiny"}), 2)
    RunDir(str(tmp / "ref")).save_config({"kind": "de-reference", "bands": 3, "data": data,
                                           "reference": {"channels": 8, "blocks": 1}})
    RunDir(str(tmp / "ref")).save_checkpoint(1, {"models": {"reference": ref.state_dict()}})
    step_run = RunDir(str(tmp / "wa"))
    step_run.save_config({"kind": "de-wa", "bands": 3, "cnp": cnp_cfg, "wa": {"preset": "wa-tiny"},
                          "diffusion": {"T": 1000, "beta_start": 1e-4, "beta_end": 0.02}, "eta": 0.3, "t_start": 200,
                          "sample_steps": 6, "reference_run": str(tmp / "ref"), "data": data})
    step_run.save_checkpoint(1, {"models": {"wa": wa.state_dict()}, "frozen": {"cnp": cnp.state_dict()}})
    args = argparse.Namespace(sample=None, size=64)
    export(str(tmp / "ref"), str(tmp / "ref.onnx"), args)
    export(str(tmp / "wa"), str(tmp / "step.onnx"), args)
    pair = [p for p in find_pairs(data) if p.pair_id == HELD_OUT["rice1"][0]][0]
    y = to_net(read_image(pair.cloudy))[:, :64, :128]
    y = np.stack([y[:, :, :64], y[:, :, 64:]])
    return {"ref": ref, "step": StepNet(cnp, wa).eval(), "ref_path": str(tmp / "ref.onnx"),
            "step_path": str(tmp / "step.onnx"), "y": y, "tmp": tmp}


def _session(path):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def test_export_round_trip_with_t_read_at_run_time(truncated_models):
    """The residual CNP converts x0 to eps with abar_t gathered from the graph's t input: ONNX and
    torch agree at timesteps the export never saw, and the interface is unchanged."""
    m = truncated_models
    card = read_card(m["step_path"])
    assert [t.name for t in card.inputs] == ["x_t", "t", "cloudy", "reference"]
    assert [t.name for t in card.outputs] == ["eps", "weight"]
    assert card.extra["t_start"] == 200 and card.extra["steps_default"] == 6
    assert card.extra["cnp_prediction"] == "residual" and card.extra["cnp_condition"] == "cloudy+reference"
    assert card.extra["eta"] == 0.3   # no validation selection in this run: the config value
    sess = _session(m["step_path"])
    y = torch.from_numpy(m["y"])
    with torch.no_grad():
        ref = m["ref"](y)
    g = torch.Generator().manual_seed(3)
    for t_value in (3.0, 57.0, 133.0):
        t = torch.full((2,), t_value)
        x_t = gaussian.GaussianDiffusion().q_sample(ref, t.long(), torch.randn(ref.shape, generator=g))
        with torch.no_grad():
            want_eps, want_w = m["step"](x_t, t, y, ref)
        eps, w = sess.run(["eps", "weight"], {"x_t": x_t.numpy(), "t": t.numpy(), "cloudy": m["y"],
                                              "reference": ref.numpy()})
        a = float(ocr.alphas_cumprod()[int(t_value)])
        # compare in x0 units (eps is amplified by 1/sqrt(1 - abar_t) at small t)
        assert np.abs((eps - want_eps.numpy()) * np.sqrt(1 - a) / np.sqrt(a)).max() < 1e-4, t_value
        assert np.abs(w - want_w.numpy()).max() < 1e-5


def test_processor_reads_t_start_from_the_card(truncated_models, tmp_path):
    m = truncated_models
    y, origins = m["y"], [(0, 0), (0, 64)]
    ref_s, step_s = _session(m["ref_path"]), _session(m["step_path"])
    proc = ocr.DiffusionProcessor(ref_s, step_s, steps=4, seed=7)
    assert proc.t_start == 200 and proc.eta == 0.3
    got = proc({"cloudy": y}, origins)["restored"]
    per_tile = [ocr.tile_noise(7, o, y.shape[1:], 5) for o in origins]
    noise = [torch.from_numpy(np.stack([t[i] for t in per_tile])) for i in range(5)]
    yt = torch.from_numpy(y)
    with torch.no_grad():
        x0_ref = m["ref"](yt)
    want = gaussian.sample(lambda x, t: m["step"](x, t, yt, x0_ref), x0_ref, noise, steps=4, eta=0.3,
                           t_start=200).numpy()
    assert np.abs(got - want).max() < 1e-3
    # deterministic and independent of the batching
    again = ocr.DiffusionProcessor(ref_s, step_s, steps=4, seed=7)({"cloudy": y[1:]}, origins[1:])["restored"]
    assert np.abs(again[0] - got[1]).max() < 1e-5
    # forcing the full trajectory gives something else
    full = ocr.DiffusionProcessor(ref_s, step_s, steps=4, seed=7, t_start=None)({"cloudy": y}, origins)["restored"]
    assert np.abs(full - got).max() > 1e-3
    # eta = 1 through onnxruntime is E's output, bit for bit
    e_out = ocr.ReferenceProcessor(ref_s)({"cloudy": y}, origins)["restored"]
    de_one = ocr.DiffusionProcessor(ref_s, step_s, steps=4, seed=7, eta=1.0)({"cloudy": y}, origins)["restored"]
    assert np.array_equal(de_one, e_out)
    with pytest.raises(ValueError):
        ocr.DiffusionProcessor(ref_s, step_s, steps=300)   # more steps than timesteps in [0, 200]


def test_samples_average_trajectories_from_independent_noise(truncated_models):
    """samples = K: the mean of K runs of the sampler, run k drawing its noise from the tile's
    stream k (stream 0 is the single-sample noise); progress counts every step call."""
    m = truncated_models
    y, origins = m["y"], [(0, 0), (0, 64)]
    ref_s, step_s = _session(m["ref_path"]), _session(m["step_path"])
    assert ocr.default_samples(step_s) == 1            # no selection in this run
    calls = []
    proc = ocr.DiffusionProcessor(ref_s, step_s, steps=2, seed=7, samples=3, on_step=lambda i, n: calls.append((i, n)))
    fractions = []
    proc.report_within_batch = fractions.append
    got = proc({"cloudy": y}, origins)["restored"]
    assert calls == [(i, 6) for i in range(6)]
    assert fractions == pytest.approx([(i + 1) / 6 for i in range(6)])
    x0_ref = ocr.ReferenceProcessor(ref_s)({"cloudy": y}, origins)["restored"]

    def step(x, t):
        return step_s.run(["eps", "weight"], {"x_t": x, "t": t, "cloudy": y, "reference": x0_ref})
    runs = []
    for k in range(3):
        per_tile = [ocr.tile_noise(7, o, y.shape[1:], 3, sample=k) for o in origins]
        noise = [np.stack([t[i] for t in per_tile]) for i in range(3)]
        runs.append(ocr.sample(step, x0_ref, noise, steps=2, eta=0.3, t_start=200))
    assert np.abs(got - np.mean(runs, axis=0)).max() < 1e-5
    assert min(np.abs(runs[0] - runs[k]).max() for k in (1, 2)) > 1e-3    # the runs differ
    one = ocr.DiffusionProcessor(ref_s, step_s, steps=2, seed=7)({"cloudy": y}, origins)["restored"]
    assert np.abs(one - runs[0]).max() < 1e-5
    with pytest.raises(ValueError, match="samples"):
        ocr.DiffusionProcessor(ref_s, step_s, steps=2, samples=0)
    assert ocr.steps_and_samples("2x5") == (2, 5) and ocr.steps_and_samples("10") == (10, 1)
    for bad in ("ten", "2x0", "0", "-1x5"):
        with pytest.raises(ValueError, match="2x5"):
            ocr.steps_and_samples(bad)


def test_old_cards_without_t_start_keep_the_full_trajectory(truncated_models):
    """A step model exported before t_start existed has no extra.t_start: full trajectory."""
    class NoCard:
        def __init__(self, s):
            self.s = s

        def get_modelmeta(self):
            raise RuntimeError("no metadata")

        def run(self, *a, **k):
            return self.s.run(*a, **k)

        def get_providers(self):
            return self.s.get_providers()

        def get_inputs(self):
            return self.s.get_inputs()
    step_s = NoCard(_session(truncated_models["step_path"]))
    assert ocr.default_t_start(step_s) is None and ocr.default_eta(step_s) == 0.3
    proc = ocr.DiffusionProcessor(_session(truncated_models["ref_path"]), step_s, steps=4)
    assert proc.t_start is None


# ------------------------------------------------------------------------------- the WA on trajectory


def test_wa_loss_on_the_samplers_own_states(data_dir):
    rice = PairDataset([str(data_dir / "rice1")], "train", 3)
    y_np, x_np = rice.batch(np.random.default_rng(1), 2, 32)
    y, x0 = torch.from_numpy(y_np), torch.from_numpy(x_np)
    torch.manual_seed(0)
    ref = build_reference({"channels": 8, "blocks": 1}, 3).eval()
    cnp = jittered(ConditionalNoisePredictor(3, {"preset": "cnp-tiny", "condition": "cloudy+reference",
                                                "prediction": "residual"}))
    wa = WeightAllocationNet(3, "wa-tiny")
    diffusion = gaussian.GaussianDiffusion()
    with torch.no_grad():
        x0_ref = ref(y)
    # the states are exactly those the inference sampler visits
    states = gaussian.sampler_states(lambda x, t: cnp(x, t, y, x0_ref), lambda x, t: wa(x, t, y, x0_ref), x0_ref,
                                     steps=5, eta=0.3, t_start=200, diffusion=diffusion,
                                     generator=torch.Generator().manual_seed(5))
    assert [int(s[1][0]) for s in states] == [200, 150, 100, 50, 0]
    start = torch.randn(x0_ref.shape, generator=torch.Generator().manual_seed(5))
    a = float(diffusion.abar[200])
    assert torch.abs(states[0][0] - (a ** 0.5 * x0_ref + (1 - a) ** 0.5 * start)).max() < 1e-5
    seen = []
    gaussian.sample(lambda x, t: (seen.append(x) or cnp(x, t, y, x0_ref), wa(x, t, y, x0_ref)), x0_ref, [start],
                    steps=5, eta=0.3, diffusion=diffusion, t_start=200)
    assert all(torch.equal(s[0], v) for s, v in zip(states, seen))

    config = dict(DEFAULTS, wa_trajectory=True, sample_steps=5, t_start=200, eta=0.3, trajectory_states=3)
    models, frozen = {"wa": wa}, {"reference": ref, "cnp": cnp.eval()}
    seen_t = []
    hook = wa.register_forward_hook(lambda module, inputs, output: seen_t.append(
        (torch.is_grad_enabled(), inputs[1].tolist())))
    losses = compute_losses("de-wa", config, models, frozen, diffusion, y, x0)
    hook.remove()
    # the graded WA call sees 3 of the 5 sampler timesteps, each for the whole batch
    graded = [t for grad, ts in seen_t if grad for t in ts]
    assert len(graded) == 3 * 2 and set(graded) <= {200.0, 150.0, 100.0, 50.0, 0.0}
    assert torch.isfinite(losses["loss"]) and 0 < float(losses["w_mean"]) < 1
    losses["loss"].backward()
    assert wa.unet.out[-1].bias.grad is not None and wa.unet.out[-1].bias.grad.abs().sum() > 0
    assert all(p.grad is None for p in cnp.parameters())
    # it is a real objective: a few steps on one batch lower it
    opt = torch.optim.Adam(wa.parameters(), lr=3e-3)

    def loss():
        torch.manual_seed(11)
        return compute_losses("de-wa", config, models, frozen, diffusion, y, x0)["loss"]
    with torch.no_grad():
        before = float(loss())
    for _ in range(12):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        assert float(loss()) < 0.95 * before
    # joint: the CNP gets its own (x0) objective, the WA the trajectory one
    joint = compute_losses("de-joint", config, {"cnp": cnp.train(), "wa": wa}, {"reference": ref}, diffusion, y, x0)
    assert {"l_wa", "l_x0", "loss"} <= set(joint)


def test_tiny_recipe_chain_selects_eta_on_validation_and_exports(data_dir, tmp_path):
    """de-reference -> de-cnp (E-conditioned residual, t <= 150, native crops) -> de-wa (trajectory)
    -> select_sampler on the validation pairs -> export: the card carries the chosen eta and t_start."""
    from skyclear.models.diffusion import select_sampler
    data = str(data_dir / "rice1")

    def run(kind, out, config, **sets):
        args = argparse.Namespace(kind=kind, config=str(REPO / "models" / "configs" / config), data=data, out=str(out),
                                  set=[f"{k}={json.dumps(v)}" for k, v in sets.items()], device="cpu", seed=0,
                                  no_resume=False)
        train(args)

    run("de-reference", tmp_path / "ref", "de-reference-tiny.json", steps=2)
    run("de-cnp", tmp_path / "cnp", "de-cnp-tiny.json", steps=3, coarse_size=None, crop_size=32, t_start=150,
        cnp_condition="cloudy+reference", cnp_prediction="residual", cache_reference=True,
        reference_run=str(tmp_path / "ref"))
    cnp_config = json.load(open(tmp_path / "cnp" / "config.json"))
    assert cnp_config["cnp"]["prediction"] == "residual" and cnp_config["t_start"] == 150
    run("de-wa", tmp_path / "wa", "de-wa-tiny.json", steps=2, wa_trajectory=True, sample_steps=3, eta=0.0,
        cnp_run=str(tmp_path / "cnp"))
    wa_config = json.load(open(tmp_path / "wa" / "config.json"))
    assert wa_config["t_start"] == 150 and wa_config["reference_run"] == str(tmp_path / "ref")
    assert select_sampler.main([str(tmp_path / "wa"), "--etas", "0", "0.5", "--crop", "32", "--max-pairs", "2",
                                "--t-starts", "150", "80", "--steps", "3", "1x3"]) == 0
    selection = json.load(open(tmp_path / "wa" / "sampler_selection.json"))
    assert len(selection["validation_pairs"]) == 2
    assert not set(p.split("/")[1] for p in selection["validation_pairs"]) & set(HELD_OUT["rice1"])
    assert len(selection["table"]) == 2 * 2 * 3      # 2 t_starts x 2 (steps, samples) x etas {0, 0.5, 1}
    assert {(r["steps"], r["samples"]) for r in selection["table"]} == {(3, 1), (1, 3)}
    e = selection["reference_E"]
    for row in selection["table"]:
        if row["eta"] == 1.0:
            assert row["psnr"] == pytest.approx(e["psnr"]) and row["ssim"] == pytest.approx(e["ssim"])
    chosen = selection["chosen"]
    best = [r for r in selection["table"] if (r["eta"], r["t_start"], r["steps"], r["samples"]) ==
            (chosen["eta"], chosen["t_start"], chosen["steps"], chosen["samples"])][0]
    assert best["psnr"] >= e["psnr"] - 1e-9 and best["ssim"] >= e["ssim"] - 1e-9 or best["eta"] == 1.0
    export(str(tmp_path / "wa"), str(tmp_path / "step.onnx"), argparse.Namespace(sample=None, size=32))
    card = read_card(str(tmp_path / "step.onnx"))
    assert card.extra["eta"] == chosen["eta"] and card.extra.get("t_start") == chosen["t_start"]
    assert (card.extra["steps_default"], card.extra["samples_default"]) == (chosen["steps"], chosen["samples"])
    assert card.raw["training"]["sampler_selection"]["reference_E"] == e


def test_choice_rule_never_trades_ssim_or_grain_for_psnr():
    from skyclear.models.diffusion.select_sampler import choose
    e = {"psnr": 25.0, "ssim": 0.80, "grain": 0.9}
    row = lambda eta, psnr, ssim, grain=0.9: {"eta": eta, "t_start": 200, "steps": 10, "psnr": psnr, "ssim": ssim,
                                              "grain": grain}
    rows = [row(0.0, 26.0, 0.79), row(0.2, 25.8, 0.81, grain=1.3), row(0.4, 25.5, 0.805), row(0.6, 25.5, 0.805),
            row(1.0, 25.0, 0.80)]
    assert choose(rows, e)["eta"] == 0.6                         # SSIM drop and grain excluded; tie -> larger eta
    assert choose(rows, e, grain_limit=False)["eta"] == 0.2
    worse = [row(0.0, 24.0, 0.70), row(0.5, 24.5, 0.81), row(1.0, 25.0, 0.80)]
    assert choose(worse, e)["eta"] == 1.0                        # nothing beats E: E itself
    # the same scores at another split of the step calls: the cheaper one; E itself is stored with one sample
    shaped = lambda r, steps, samples: dict(r, steps=steps, samples=samples)
    tie = [shaped(row(0.2, 26.0, 0.81), 2, 5), shaped(row(0.2, 26.0, 0.81), 1, 3)]
    assert (choose(tie, e)["steps"], choose(tie, e)["samples"]) == (1, 3)
    e_rows = [shaped(row(1.0, 25.0, 0.80), 2, 5), shaped(row(0.0, 24.0, 0.70), 2, 5)]
    assert choose(e_rows, e)["samples"] == 1


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_recipe_configs_use_known_keys(profile):
    """scripts/train_de.sh's configs: every key is a trainer key (a typo would be silently ignored)."""
    for stage in ("de-cnp", "de-wa", "de-joint"):
        config = json.load(open(REPO / "models" / "configs" / f"{stage}-{profile}.json"))
        assert config["kind"] == stage
        assert set(config) - {"kind"} <= set(DEFAULTS), (stage, set(config) - set(DEFAULTS))
        if stage == "de-cnp":
            assert config["coarse_size"] is None and config["t_start"] == 300
            assert config["cnp"]["prediction"] == "residual" and config["cnp"]["condition"] == "cloudy+reference"
        else:
            assert config["wa_trajectory"] is True and config["sample_steps"] == 10
    assert os.access(REPO / "scripts" / "train_de.sh", os.X_OK)


def test_read_image_without_gdal_gives_the_same_pixels(tmp_path, monkeypatch):
    """A GPU machine with torch but no GDAL trains from the same PNG pixels (Pillow stands in)."""
    from PIL import Image
    rgba = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(rgba[..., 0]).save(tmp_path / "grey.png")
    with_gdal = [read_image(str(tmp_path / name), bands) for name, bands in (("rgba.png", 3), ("grey.png", None))]
    monkeypatch.setitem(sys.modules, "rasterio", None)   # import rasterio -> ImportError
    without_gdal = [read_image(str(tmp_path / name), bands) for name, bands in (("rgba.png", 3), ("grey.png", None))]
    assert with_gdal[0].shape == (3, 5, 7) and with_gdal[1].shape == (1, 5, 7)
    for a, b in zip(with_gdal, without_gdal):
        np.testing.assert_array_equal(a, b)
