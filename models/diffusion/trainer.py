"""Training stages of DE and their export (kinds de-reference, de-cnp, de-wa, de-joint).

    python -m skyclear.models.train de-reference --config models/configs/de-reference-small.json \
        --data ../shared/data/rice1,../shared/data/rice2 --out runs/de_ref
    python -m skyclear.models.train de-cnp  --config models/configs/de-cnp-small.json  --data ... --out runs/de_cnp
    python -m skyclear.models.train de-wa   --config models/configs/de-wa-small.json   --data ... --out runs/de_wa \
        --set reference_run='"runs/de_ref"' --set cnp_run='"runs/de_cnp"'
    python -m skyclear.models.train de-joint --config models/configs/de-joint-small.json --data ... --out runs/de_joint \
        --set wa_run='"runs/de_wa"'
    python -m skyclear.models.export runs/de_ref   --out models/zoo/de_reference_rice.onnx
    python -m skyclear.models.export runs/de_joint --out models/zoo/de_step_rice.onnx

Stages (paper Sec. III-D): E with L1 (+ ``ssim_weight`` * (1 - SSIM)); CNP alone on images downscaled to ``coarse_size`` (64)
with L_DDPM (eq. 7); WA on the frozen CNP and frozen E with L_WA (eq. 16, stop-gradient on
x0_eps); joint fine-tuning of CNP and WA with lambda * L_DDPM + L_WA (eq. 17). ``--data`` may
list several folders separated by commas; pairs in ``splits.HELD_OUT`` are never used.
Config keys: see ``DEFAULTS``; ``max_minutes`` stops a stage early (checkpointed, resumable).

Switches beyond the paper (issue 11; each off by default, so the paper configs still mean the paper):
``t_start`` (CNP trained on t <= t_start; the sampler starts at q(x0_E, t_start)), ``cnp_condition``
(``"cloudy+reference"`` adds x0_E to the CNP input), ``cnp_prediction`` (``"residual"``: the CNP
predicts x0 - x0_E, trained with an MSE on x0), ``coarse_size: null`` (CNP on native-resolution
``crop_size`` crops instead of downscaled images), ``wa_trajectory`` (the WA is trained on the
states the DDIM sampler visits at inference: ``sample_steps`` steps from ``t_start``, run under
no_grad with the current WA and W clamped to ``eta``). The sampler settings are then chosen on the
validation pairs with ``python -m skyclear.models.diffusion.select_sampler RUN`` (written to
``RUN/sampler_selection.json``, read by the export). Recipe: ``scripts/train_de.sh``.
``lr_schedule: "cosine"`` decays the learning rate to 5 % after ``warmup_steps``. With
``val_every`` > 0 the EMA weights are scored on the validation pairs (``splits.py``) and the best
are kept as ``checkpoints/best.pt``; later stages and the export load ``best.pt`` when present.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..common.run import EMA, RunDir, load_config, pick_device, set_seed
from ...plugin.core.metrics.restoration import psnr
from .data import PairDataset, find_pairs, from_net, read_image, split_roots, to_net
from .gaussian import GaussianDiffusion, loss_ddpm, loss_wa, sampler_states
from .reference import build_reference, count_parameters
from .splits import HELD_OUT, is_held_out
from .unet import ConditionalNoisePredictor, StepNet, WeightAllocationNet

# 2.0.0: E that removes clouds + the truncated, residual, E-conditioned diffusion stage (issue 11)
CARD_VERSION = "2.2.0"

DEFAULTS: Dict[str, Any] = {
    "bands": 3,
    "steps": 1000,
    "max_minutes": None,
    "batch_size": 8,
    "crop_size": 128,          # de-reference / de-wa / de-joint crops; null = whole image
    "coarse_size": 64,         # de-cnp: images are resized to this (paper: 1/4 of 256)
    "lr": 2e-4,
    "lr_schedule": "constant",  # or "cosine" (after a linear warm-up)
    "warmup_steps": 0,
    "ssim_weight": 0.0,        # de-reference: loss = L1 + ssim_weight * (1 - SSIM)
    "val_every": 0,            # de-reference: validation PSNR of the EMA weights every N steps
    "weight_decay": 0.0,
    "grad_clip": 1.0,
    "ema_decay": 0.999,
    "log_every": 10,
    "ckpt_every": 100,
    "threads": None,           # torch.set_num_threads; 1 for background CPU runs
    "reference": {"channels": 16, "blocks": 3},
    "cnp": {"preset": "cnp-small"},
    "wa": {"preset": "wa-small"},
    "wa_init_bias": 0.0,
    "diffusion": {"T": 1000, "beta_start": 1e-4, "beta_end": 0.02},
    "eta": 0.3,
    "lambda": 1.0,
    "t_start": None,           # de-cnp: CNP trained on t <= t_start; sampling starts at q(x0_E, t_start)
    "cnp_condition": None,     # de-cnp: "cloudy" (paper) or "cloudy+reference" (stored in config["cnp"])
    "cnp_prediction": None,    # de-cnp: "eps" (paper) or "residual" (x0 - x0_E; stored in config["cnp"])
    "wa_trajectory": False,    # de-wa / de-joint: WA loss on the sampler's own states (see the docstring)
    "sample_steps": 10,        # inference DDIM steps: the WA trajectory and the card's steps_default
    "trajectory_states": None,  # states of each trajectory used for the WA loss (None = all)
    "cache_reference": False,  # de-cnp / de-wa / de-joint: run E once per whole training image and crop
                               # its output with the pair (instead of E on every batch of crops)
    "reference_run": None,
    "cnp_run": None,
    "wa_run": None,
}


def add_arguments(parser) -> None:
    """No extra flags: every setting is a config key (override with --set key=json)."""


def _overrides(items) -> Dict[str, Any]:
    out = {}
    for item in items or []:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _config(args) -> Dict[str, Any]:
    config = dict(DEFAULTS)
    if args.config:
        config.update(load_config(args.config))
    config.update(_overrides(getattr(args, "set", [])))
    config["kind"] = args.kind
    config["data"] = args.data
    config["seed"] = args.seed
    return config


# ---------------------------------------------------------------------------------------
# loading earlier stages


def _load_run(path: str):
    """Config and weights of a finished stage: the validation-selected ``best.pt`` if the run
    kept one, else ``last.pt``."""
    run = RunDir(path)
    config = run.config()
    path = os.path.join(run.checkpoint_dir, "best.pt")
    if not os.path.exists(path):
        path = os.path.join(run.checkpoint_dir, "last.pt")
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: train that stage first")
    state = torch.load(path, map_location="cpu", weights_only=False)  # no RNG restore here
    return config, state


def _weights(state, name: str):
    """EMA weights of ``name`` if present, else the raw ones."""
    for key in ("ema", "models", "frozen"):
        if name in state.get(key, {}):
            return state[key][name]
    raise KeyError(f"checkpoint has no weights for {name!r}")


def load_reference(run_path: str, bands: int):
    config, state = _load_run(run_path)
    model = build_reference(config["reference"], bands)
    model.load_state_dict(_weights(state, "reference"))
    return model.eval(), config


def load_cnp_wa(run_path: str, bands: int):
    """CNP (and WA if the run has one) from a de-cnp / de-wa / de-joint run."""
    config, state = _load_run(run_path)
    cnp = ConditionalNoisePredictor(bands, config["cnp"], config.get("diffusion"))
    cnp.load_state_dict(_weights(state, "cnp"))
    wa = None
    if "wa" in state.get("models", {}):
        wa = WeightAllocationNet(bands, config["wa"])
        wa.load_state_dict(_weights(state, "wa"))
    return cnp.eval(), wa, config


# ---------------------------------------------------------------------------------------
# training


def train(args) -> None:
    config = _config(args)
    kind = config["kind"]
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    run = RunDir(args.out)
    device = pick_device(args.device)
    set_seed(args.seed)
    bands = int(config["bands"])
    diffusion = GaussianDiffusion(**config["diffusion"])

    # frozen parts and trainable parts per stage
    frozen: Dict[str, torch.nn.Module] = {}
    models: Dict[str, torch.nn.Module] = {}
    if kind == "de-reference":
        models["reference"] = build_reference(config["reference"], bands)
    elif kind == "de-cnp":
        cnp_config = {"preset": config["cnp"]} if isinstance(config["cnp"], str) else dict(config["cnp"])
        for key, option in (("cnp_condition", "condition"), ("cnp_prediction", "prediction")):
            if config.get(key):
                cnp_config[option] = config[key]
        config["cnp"] = cnp_config
        models["cnp"] = ConditionalNoisePredictor(bands, cnp_config, config["diffusion"])
        if models["cnp"].uses_reference:
            if not config.get("reference_run"):
                raise SystemExit("this de-cnp config conditions on E: add --set reference_run='\"RUNDIR\"' "
                                 "(a de-reference run)")
            reference, ref_config = load_reference(config["reference_run"], bands)
            config["reference"] = ref_config["reference"]
            frozen["reference"] = reference
    elif kind in ("de-wa", "de-joint"):
        if kind == "de-joint":
            if not config.get("wa_run"):
                raise SystemExit("de-joint needs --set wa_run='\"RUNDIR\"' (a de-wa run)")
            cnp, wa, wa_config = load_cnp_wa(config["wa_run"], bands)
            if wa is None:
                raise SystemExit(f"{config['wa_run']} has no WA weights (is it a de-wa run?)")
            config["reference_run"] = config.get("reference_run") or wa_config.get("reference_run")
            config["cnp"], config["wa"] = wa_config["cnp"], wa_config["wa"]
            config["cnp_run"] = wa_config.get("cnp_run")
            config["diffusion"], config["t_start"] = wa_config["diffusion"], wa_config.get("t_start")
            models["cnp"], models["wa"] = cnp.train(), wa.train()
        else:
            if not config.get("cnp_run"):
                raise SystemExit("de-wa needs --set cnp_run='\"RUNDIR\"' (and reference_run unless the CNP "
                                 "run names one)")
            cnp, _, cnp_config = load_cnp_wa(config["cnp_run"], bands)
            config["cnp"] = cnp_config["cnp"]
            # the WA works on the CNP's schedule and timestep range, and with the E it was trained with
            config["diffusion"], config["t_start"] = cnp_config["diffusion"], cnp_config.get("t_start")
            config["reference_run"] = config.get("reference_run") or cnp_config.get("reference_run")
            frozen["cnp"] = cnp
            models["wa"] = WeightAllocationNet(bands, config["wa"], float(config["wa_init_bias"]))
        if not config.get("reference_run"):
            raise SystemExit(f"{kind} needs --set reference_run='\"RUNDIR\"' (a de-reference run)")
        reference, ref_config = load_reference(config["reference_run"], bands)
        config["reference"] = ref_config["reference"]
        frozen["reference"] = reference
    else:
        raise SystemExit(f"unknown DE kind {kind!r}")
    if config.get("t_start") is not None and not 0 < int(config["t_start"]) < int(config["diffusion"]["T"]):
        raise SystemExit(f"t_start must be in [1, T-1], got {config['t_start']}")
    diffusion = GaussianDiffusion(**config["diffusion"])
    run.save_config(config)

    for m in frozen.values():
        m.to(device).eval()
        for p in m.parameters():
            p.requires_grad_(False)
    for m in models.values():
        m.to(device).train()
    params = [p for m in models.values() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=float(config["lr"]), weight_decay=float(config["weight_decay"]))
    emas = {name: EMA(m, float(config["ema_decay"])) for name, m in models.items()}
    rng = np.random.default_rng(args.seed)
    step = 0

    state = None if args.no_resume else run.load_checkpoint()
    if state is not None:
        for name, m in models.items():
            m.load_state_dict(state["models"][name])
            emas[name].load_state_dict(state["ema"][name])
        opt.load_state_dict(state["opt"])
        rng.bit_generator.state = state["data_rng"]
        step = int(state["step"])
        print(f"[{kind}] resumed from step {step}", flush=True)

    data = PairDataset(split_roots(args.data), "train", bands)
    validation = PairDataset(split_roots(args.data), "validation", bands) if int(config["val_every"]) else None
    n_params = {name: count_parameters(m) for name, m in {**models, **frozen}.items()}
    print(f"[{kind}] {len(data)} training pairs; params {n_params}; device {device}", flush=True)
    total, max_minutes = int(config["steps"]), config.get("max_minutes")
    reference_cache = None
    if config.get("cache_reference") and "reference" in frozen and kind != "de-reference" and step < total:
        tick = time.time()
        reference_cache = reference_outputs(frozen["reference"], data, device)
        print(f"[{kind}] E run once on the {len(data)} whole training images ({time.time() - tick:.0f} s)",
              flush=True)
    started = time.time()
    window = []

    def checkpoint():
        run.save_checkpoint(step, {
            "models": {n: m.state_dict() for n, m in models.items()},
            "ema": {n: e.state_dict() for n, e in emas.items()},
            "frozen": {n: m.state_dict() for n, m in frozen.items() if n != "reference"},
            "opt": opt.state_dict(), "data_rng": rng.bit_generator.state, "kind": kind,
        })

    base_lr = float(config["lr"])
    while step < total:
        for group in opt.param_groups:
            group["lr"] = base_lr * lr_factor(config, step)
        if max_minutes is not None and time.time() - started > 60.0 * float(max_minutes):
            print(f"[{kind}] stopping at step {step}: max_minutes={max_minutes} reached", flush=True)
            break
        size = None if kind == "de-cnp" and config.get("coarse_size") else config["crop_size"]
        if reference_cache is not None:
            y_np, x_np, r_np = data.batch(rng, int(config["batch_size"]), size, extra=reference_cache)
            x0_ref = torch.from_numpy(r_np).to(device)
        else:
            y_np, x_np = data.batch(rng, int(config["batch_size"]), size)
            x0_ref = None
        y, x0 = torch.from_numpy(y_np).to(device), torch.from_numpy(x_np).to(device)
        losses = compute_losses(kind, config, models, frozen, diffusion, y, x0, x0_ref)
        loss = losses["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(params, float(config["grad_clip"]))
        opt.step()
        step += 1
        for name, m in models.items():
            emas[name].decay = min(float(config["ema_decay"]), (1 + step) / (10 + step))
            emas[name].update(m)
        window.append({k: float(v.detach()) for k, v in losses.items()})
        if step % int(config["log_every"]) == 0 or step == total:
            mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            window = []
            run.log(step, **mean)
            rate = (time.time() - started) / max(1, step - (int(state["step"]) if state else 0))
            print(f"[{kind}] step {step}/{total} " + " ".join(f"{k} {v:.4f}" for k, v in mean.items())
                  + f" ({rate:.2f} s/step)", flush=True)
        if step % int(config["ckpt_every"]) == 0:
            checkpoint()
        if validation is not None and (step % int(config["val_every"]) == 0 or step == total):
            _validate_reference(run, step, emas["reference"], config, bands, validation, device)
    checkpoint()
    print(f"[{kind}] done at step {step}; run folder {args.out}", flush=True)


def lr_factor(config, step: int) -> float:
    warmup = int(config.get("warmup_steps") or 0)
    if step < warmup:
        return (step + 1) / warmup
    if config.get("lr_schedule", "constant") == "cosine":
        progress = min(1.0, (step - warmup) / max(1, int(config["steps"]) - warmup))
        return 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * progress))
    return 1.0


@torch.no_grad()
def _validate_reference(run: RunDir, step: int, ema: EMA, config, bands: int, validation: PairDataset,
                        device) -> None:
    """PSNR (data range 255, on whole validation images) of the EMA weights; keeps ``best.pt``."""
    model = build_reference(config["reference"], bands).to(device).eval()
    model.load_state_dict(ema.state_dict())
    psnrs = []
    for cloudy, clear in zip(validation.cloudy, validation.clear):
        out = model(torch.from_numpy(to_net(cloudy))[None].to(device))[0].cpu().numpy()
        psnrs.append(psnr(from_net(out), clear, 255.0))
    score = float(np.mean(psnrs))
    best_path = os.path.join(run.checkpoint_dir, "best.pt")
    best = torch.load(best_path, map_location="cpu", weights_only=False)["val_psnr"] if os.path.exists(best_path) else None
    improved = best is None or score > best
    run.log(step, val_psnr=score, val_best=float(improved))
    print(f"[de-reference] step {step} validation PSNR {score:.3f} dB over {len(psnrs)} pairs"
          + (" (best so far)" if improved else f" (best {best:.3f})"), flush=True)
    if improved:
        torch.save({"ema": {"reference": ema.state_dict()}, "step": step, "val_psnr": score}, best_path + ".tmp")
        os.replace(best_path + ".tmp", best_path)


@torch.no_grad()
def reference_outputs(reference, data: PairDataset, device) -> list:
    """x0_E of every image of ``data`` (whole image, float16 (C, H, W) arrays)."""
    return [reference(torch.from_numpy(to_net(c))[None].to(device))[0].cpu().numpy().astype(np.float16)
            for c in data.cloudy]


def compute_losses(kind: str, config, models, frozen, diffusion: GaussianDiffusion, y, x0,
                   x0_ref: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """Losses of one batch; ``x0_ref`` = E's output for ``y`` when already known (cached), else
    the frozen E runs on ``y``."""
    if kind == "de-reference":
        out = models["reference"](y)
        l1 = (out - x0).abs().mean()
        weight = float(config.get("ssim_weight") or 0.0)
        if not weight:
            return {"loss": l1, "l1": l1.detach()}
        from torchmetrics.functional.image import structural_similarity_index_measure
        ssim = structural_similarity_index_measure(out, x0, data_range=2.0)
        return {"loss": l1 + weight * (1 - ssim), "l1": l1.detach(), "ssim": ssim.detach()}
    t_max = int(config["t_start"]) + 1 if config.get("t_start") is not None else None
    if kind == "de-cnp":
        if x0_ref is None and "reference" in frozen:
            with torch.no_grad():
                x0_ref = frozen["reference"](y)  # E sees the full-resolution input
        size = config.get("coarse_size")
        if size and y.shape[-1] != int(size):
            size = (int(size), int(size))
            y, x0 = F.interpolate(y, size=size, mode="area"), F.interpolate(x0, size=size, mode="area")
            x0_ref = None if x0_ref is None else F.interpolate(x0_ref, size=size, mode="area")
        name, loss = cnp_loss(models["cnp"], diffusion, x0, y, x0_ref, t_max)
        return {"loss": loss, name: loss.detach()}
    # de-wa / de-joint
    if x0_ref is None:
        with torch.no_grad():
            x0_ref = frozen["reference"](y)
    cnp = frozen.get("cnp") or models["cnp"]
    if config.get("wa_trajectory"):
        return _trajectory_losses(kind, config, models, cnp, diffusion, y, x0, x0_ref, t_max)
    t = diffusion.sample_t(y.shape[0], y.device, t_max)
    noise = torch.randn_like(x0)
    x_t = diffusion.q_sample(x0, t, noise)
    if kind == "de-wa":
        with torch.no_grad():
            raw = cnp.raw(x_t, t.float(), y, x0_ref)
    else:
        raw = cnp.raw(x_t, t.float(), y, x0_ref)
    eps_hat = _eps(cnp, raw, x_t, t, x0_ref)
    x0_eps = diffusion.x0_from_eps(x_t, t, eps_hat)
    w = models["wa"](x_t, t.float(), y, x0_ref)
    l_wa = loss_wa(x0, x0_eps, x0_ref, w)
    out = {"l_wa": l_wa.detach(), "w_mean": w.detach().mean()}
    if kind == "de-wa":
        out["loss"] = l_wa
    else:
        name, l_cnp = _cnp_objective(cnp, raw, noise, x0, x0_ref)
        out["loss"] = float(config["lambda"]) * l_cnp + l_wa
        out[name] = l_cnp.detach()
    return out


def _eps(cnp, raw, x_t, t, x0_ref):
    """eps implied by the CNP's raw output (itself, or from x0 = x0_E + residual)."""
    return raw if cnp.prediction == "eps" else cnp.eps_from_x0(x_t, t.float(), x0_ref + raw)


def _cnp_objective(cnp, raw, noise, x0, x0_ref):
    """L_DDPM (eq. 7) for eps prediction; for the residual form the MSE of x0_E + r against x0
    (an x0 loss: an eps loss would weight the small t, where r barely matters, by SNR_t)."""
    if cnp.prediction == "eps":
        return "l_ddpm", loss_ddpm(noise, raw)
    return "l_x0", (x0_ref + raw - x0).pow(2).mean()


def cnp_loss(cnp, diffusion: GaussianDiffusion, x0, y, x0_ref, t_max: Optional[int] = None):
    """(name, loss) of the CNP on a fresh q_sample at uniform t in [0, t_max)."""
    t = diffusion.sample_t(x0.shape[0], x0.device, t_max)
    noise = torch.randn_like(x0)
    raw = cnp.raw(diffusion.q_sample(x0, t, noise), t.float(), y, x0_ref)
    return _cnp_objective(cnp, raw, noise, x0, x0_ref)


def _trajectory_losses(kind, config, models, cnp, diffusion, y, x0, x0_ref, t_max):
    """L_WA at the states the inference sampler visits (DDIM, ``sample_steps`` steps from
    ``t_start`` or T, W clamped to ``eta``), produced under no_grad with the current networks; the
    CNP (joint stage) keeps its own objective on fresh q_samples."""
    wa = models["wa"]
    eta = config.get("eta")
    t_start = None if config.get("t_start") is None else int(config["t_start"])
    states = sampler_states(lambda x, t: cnp(x, t, y, x0_ref), lambda x, t: wa(x, t, y, x0_ref), x0_ref,
                            int(config["sample_steps"]), None if eta is None else float(eta), t_start, diffusion)
    k = int(config.get("trajectory_states") or len(states))
    pick = sorted(torch.randperm(len(states))[:k].tolist())
    x_t = torch.cat([states[i][0] for i in pick])
    t = torch.cat([states[i][1] for i in pick])
    eps = torch.cat([states[i][2] for i in pick])
    rep = lambda a: a.repeat(len(pick), 1, 1, 1)
    x0_eps = diffusion.x0_from_eps(x_t, t, eps)
    w = wa(x_t, t.float(), rep(y), rep(x0_ref))
    l_wa = loss_wa(rep(x0), x0_eps, rep(x0_ref), w)
    out = {"l_wa": l_wa.detach(), "w_mean": w.detach().mean()}
    if kind == "de-wa":
        out["loss"] = l_wa
    else:
        name, l_cnp = cnp_loss(models["cnp"], diffusion, x0, y, x0_ref, t_max)
        out["loss"] = float(config["lambda"]) * l_cnp + l_wa
        out[name] = l_cnp.detach()
    return out


# ---------------------------------------------------------------------------------------
# export


def _rgb_bands(bands: int, scale=127.5, offset=127.5, clip=(0, 255)):
    from ...plugin.core.model_card import band
    names = [("R", "red"), ("G", "green"), ("B", "blue"), ("N", "near infrared")][:bands]
    return [band(n, m, clip, scale, offset) for n, m in names]


def _sample_pairs(run_config, args, n: int = 2):
    """Real held-out pairs for the ONNX check: ``--sample`` (a pair folder or a cloudy file) or
    the first held-out pairs of the training data folders."""
    sample = getattr(args, "sample", None)
    if sample:
        if os.path.isdir(sample):
            return [read_image(p.cloudy, run_config["bands"]) for p in find_pairs(sample)[:n]]
        return [read_image(sample, run_config["bands"])]
    out = []
    for root in split_roots(run_config["data"]):
        for p in find_pairs(root):
            if is_held_out(root, p.pair_id):
                out.append(read_image(p.cloudy, run_config["bands"]))
                break
    if not out:
        raise SystemExit("no real sample for the ONNX check: pass --sample PATH")
    return out[:n]


def _crop_stack(images, size=256):
    h = min(min(i.shape[1] for i in images), size)
    w = min(min(i.shape[2] for i in images), size)
    h, w = h - h % 8, w - w % 8
    return torch.from_numpy(np.stack([to_net(i[:, :h, :w]) for i in images]))


def _training_summary(run_path: str) -> Dict[str, Any]:
    run = RunDir(run_path)
    metrics = list(run.metrics())
    config = run.config()
    # elapsed_s restarts at every (resumed) invocation: sum the segments
    wall, last = 0.0, 0.0
    for entry in metrics:
        if entry["elapsed_s"] < last:
            wall += last
        last = entry["elapsed_s"]
    _, state = _load_run(run_path)
    last_state = run.load_checkpoint()
    summary = {"kind": config["kind"], "data": config["data"], "steps": int(last_state["step"]),
               "selected_step": int(state["step"]), "selected_by": "validation PSNR"
               if "val_psnr" in state else "last step",
               "wall_s": round(wall + last, 1), "batch_size": config.get("batch_size"),
               "crop_size": (config.get("coarse_size") or config.get("crop_size")) if config["kind"] == "de-cnp"
               else config.get("crop_size"),
               "device": "cpu (shared, 1 thread)"}
    losses = [m for m in metrics if "loss" in m]
    if losses:
        tail = losses[-5:]
        summary["final_losses_mean_of_last_5_logs"] = {
            k: round(float(np.mean([m[k] for m in tail])), 5) for k in tail[-1] if k not in ("step", "elapsed_s")}
        summary["first_logged_losses"] = {k: round(v, 5) for k, v in losses[0].items()
                                          if k not in ("step", "elapsed_s")}
    validation = [m for m in metrics if "val_psnr" in m]
    if validation:
        summary["validation_psnr"] = {"first": round(validation[0]["val_psnr"], 3),
                                      "best": round(max(m["val_psnr"] for m in validation), 3)}
    return summary


def _heldout_metrics(run_dir: str):
    """``<run>/heldout_metrics.json`` (written by the quality benchmark with --metrics-json) or a pointer."""
    path = os.path.join(run_dir, "heldout_metrics.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return "see benchmarks/quality_optical_cloud_removal.py (held-out pairs)"


def export(run_dir: str, out_path: str, args) -> None:
    from .splits import HELD_OUT as held
    from ..common.onnx_export import export_with_card
    run = RunDir(run_dir)
    config = run.config()
    kind, bands = config["kind"], int(config["bands"])
    held_out = {k: len(v) for k, v in held.items()}
    name = os.path.splitext(os.path.basename(out_path))[0]
    images = _sample_pairs(config, args)
    cloudy = _crop_stack(images, int(getattr(args, "size", None) or 256))
    if kind == "de-reference":
        model, _ = load_reference(run_dir, bands)
        card = {
            "schema_version": 1, "name": name, "version": CARD_VERSION, "task": "optical_cloud_removal_reference",
            "description": "DE reference model E (MSDA-CR-like multiscale dilated residual net), trained with "
                           f"L1{' + SSIM' if config.get('ssim_weight') else ''}; also the x0_E input of the "
                           "diffusion step graph.",
            "inputs": [{"name": "cloudy", "role": "optical", "bands": _rgb_bands(bands)}],
            "outputs": [{"name": "restored", "role": "optical", "bands": _rgb_bands(bands), "dtype": None}],
            "tiling": {"tile_size": 256, "size_multiple": 8, "default_overlap": 32},
            "training": {**_training_summary(run_dir), "held_out_pairs": held_out,
                         "params": count_parameters(model),
                         "metrics": _heldout_metrics(run_dir)},
            "license": "research use only (RICE data: no licence stated)",
            "extra": {"architecture": config["reference"]},
        }
        diff = export_with_card(model, {"cloudy": cloudy}, ["restored"], card, out_path)
    elif kind in ("de-wa", "de-joint"):
        cnp, wa, _ = load_cnp_wa(run_dir, bands)
        reference, _ = load_reference(config["reference_run"], bands)
        step_net = StepNet(cnp, wa).eval()
        diffusion = GaussianDiffusion(**config["diffusion"])
        t_top = diffusion.T - 1 if config.get("t_start") is None else int(config["t_start"])
        sampler = _sampler_settings(run_dir, config)
        with torch.no_grad():
            x0_ref = reference(cloudy)
            t = torch.tensor([float(t_top), float(t_top // 2), 20.0][: cloudy.shape[0]])
            if len(t) < cloudy.shape[0]:
                t = torch.full((cloudy.shape[0],), float(t_top // 2))
            g = torch.Generator().manual_seed(0)
            x_t = diffusion.q_sample(x0_ref, t.long(), torch.randn(cloudy.shape, generator=g))
        aux = lambda meaning: [{"name": b, "meaning": meaning, "scale": 1.0, "offset": 0.0}
                               for b in ["R", "G", "B", "N"][:bands]]
        card = {
            "schema_version": 1, "name": name, "version": CARD_VERSION, "task": "optical_cloud_removal_diffusion_step",
            "description": "One DE denoising step: conditional noise predictor (eps) and weight allocation "
                           "network (weight, sigmoid output in [0, 1]; clamp to [eta, 1] at inference). "
                           "Use with the reference model E; the sampling loop runs in the plugin"
                           + ("." if config.get("t_start") is None else
                              f", starting from the reference noised to t_start={int(config['t_start'])}.")
                           + (f" By default it averages {sampler['samples']} runs of {sampler['steps']} steps "
                              "from independent noise (chosen on the validation pairs)."
                              if sampler["samples"] > 1 else "")
                           + (" The CNP sees x0_E as well" if cnp.condition == "cloudy+reference" else "")
                           + (" and predicts the residual x0 - x0_E (converted to eps in the graph)."
                              if cnp.prediction == "residual" else ""),
            "inputs": [
                {"name": "x_t", "role": "auxiliary", "bands": aux("noisy state x_t (network units)")},
                {"name": "t", "role": "auxiliary", "bands": [{"name": "t", "meaning": "timestep index in [0, T), float32 (B,)"}]},
                {"name": "cloudy", "role": "optical", "bands": _rgb_bands(bands)},
                {"name": "reference", "role": "auxiliary", "bands": aux("x0_E = output of the reference model (network units)")},
            ],
            "outputs": [
                {"name": "eps", "role": "auxiliary", "bands": aux("predicted noise")},
                {"name": "weight", "role": "auxiliary", "bands": aux("fusion weight W of x0_E")},
            ],
            "tiling": {"tile_size": 256, "size_multiple": max(8, cnp.size_multiple, wa.size_multiple),
                       "default_overlap": 32},
            "training": {**_training_summary(run_dir), "held_out_pairs": held_out,
                         "stages": {k: _training_summary(config[k]) for k in ("reference_run", "cnp_run", "wa_run")
                                    if config.get(k) and os.path.exists(os.path.join(config[k], "config.json"))},
                         "params": {"cnp": count_parameters(cnp), "wa": count_parameters(wa)},
                         "sampler_selection": sampler["selection"],
                         "metrics": _heldout_metrics(run_dir)},
            "license": "research use only (RICE data: no licence stated)",
            "extra": {**diffusion.schedule(), "eta": sampler["eta"], "prediction": "eps",
                      "beta_schedule": "linear", "sampler_default": "ddim", "steps_default": sampler["steps"],
                      "samples_default": sampler["samples"],
                      **({"t_start": sampler["t_start"]} if sampler["t_start"] is not None else {}),
                      "cnp_condition": cnp.condition, "cnp_prediction": cnp.prediction,
                      "cnp": config["cnp"], "wa": config["wa"]},
        }
        diff = export_with_card(step_net, {"x_t": x_t, "t": t, "cloudy": cloudy, "reference": x0_ref},
                                ["eps", "weight"], card, out_path)
    else:
        raise SystemExit(f"{kind} runs are not exported on their own: export the de-reference run "
                         "and a de-wa or de-joint run (the step graph needs both CNP and WA)")
    size_mb = os.path.getsize(out_path) / 1e6
    print(f"wrote {out_path} ({size_mb:.2f} MB); ONNX vs torch max abs diff {diff:.3g} "
          f"on {cloudy.shape[0]} real sample(s) {tuple(cloudy.shape)}")
    write_markdown_card(out_path, card, diff)


def _sampler_settings(run_dir: str, config) -> Dict[str, Any]:
    """eta / t_start / steps / samples for the card: the validation choice of ``select_sampler`` when the run
    has ``sampler_selection.json``, else the training config's values (said so in the card)."""
    path = os.path.join(run_dir, "sampler_selection.json")
    t_start = None if config.get("t_start") is None else int(config["t_start"])
    if not os.path.exists(path):
        return {"eta": float(config.get("eta", 0.3)), "t_start": t_start, "steps": int(config.get("sample_steps") or 10),
                "samples": 1,
                "selection": "none: eta/t_start/steps are the training config's values (run "
                             "python -m skyclear.models.diffusion.select_sampler on this run to choose them "
                             "on the validation pairs)"}
    with open(path) as f:
        selection = json.load(f)
    chosen = selection["chosen"]
    summary = {k: selection[k] for k in ("criterion", "validation_pairs", "crop", "reference_E", "chosen_scores")
               if k in selection}
    return {"eta": float(chosen["eta"]), "t_start": None if chosen.get("t_start") is None else int(chosen["t_start"]),
            "steps": int(chosen["steps"]), "samples": int(chosen.get("samples", 1)), "selection": summary}


def write_markdown_card(onnx_path: str, card: Dict[str, Any], diff: Optional[float] = None) -> str:
    md = os.path.splitext(onnx_path)[0] + ".md"
    lines = [f"# {card['name']} ({card['task']})", "", card.get("description", ""), ""]
    lines.append("| tensor | direction | role | bands (clip, offset, scale) |")
    lines.append("|---|---|---|---|")
    for direction in ("inputs", "outputs"):
        for t in card[direction]:
            bands = ", ".join(f"{b['name']} ({b.get('clip')}, {b.get('offset', 0)}, {b.get('scale', 1)})"
                              for b in t["bands"])
            lines.append(f"| `{t['name']}` | {direction[:-1]} | {t['role']} | {bands} |")
    lines += ["", f"Tiling: {json.dumps(card['tiling'])}", "",
              "## Training", "", "```json", json.dumps(card["training"], indent=2), "```", "",
              "## Extra", "", "```json", json.dumps(card.get("extra", {}), indent=2), "```", ""]
    if diff is not None:
        lines.append(f"ONNX vs torch max abs difference on real held-out data at export: {diff:.3g}.")
    lines += ["", f"Held-out pairs (never trained on): see `models/diffusion/splits.py` "
              f"({', '.join(f'{k}: {len(v)}' for k, v in HELD_OUT.items())}).",
              f"License: {card.get('license', '')}", ""]
    with open(md, "w") as f:
        f.write("\n".join(lines))
    return md
