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

Stages (paper Sec. III-D): E with L1; CNP alone on images downscaled to ``coarse_size`` (64)
with L_DDPM (eq. 7); WA on the frozen CNP and frozen E with L_WA (eq. 16, stop-gradient on
x0_eps); joint fine-tuning of CNP and WA with lambda * L_DDPM + L_WA (eq. 17). ``--data`` may
list several folders separated by commas; pairs in ``splits.HELD_OUT`` are never used.
Config keys: see ``DEFAULTS``; ``max_minutes`` stops a stage early (checkpointed, resumable).
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
from .data import PairDataset, find_pairs, read_image, split_roots, to_net
from .gaussian import GaussianDiffusion, loss_ddpm, loss_wa
from .reference import build_reference, count_parameters
from .splits import HELD_OUT, is_held_out
from .unet import ConditionalNoisePredictor, StepNet, WeightAllocationNet

DEFAULTS: Dict[str, Any] = {
    "bands": 3,
    "steps": 1000,
    "max_minutes": None,
    "batch_size": 8,
    "crop_size": 128,          # de-reference / de-wa / de-joint crops; null = whole image
    "coarse_size": 64,         # de-cnp: images are resized to this (paper: 1/4 of 256)
    "lr": 2e-4,
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
    run = RunDir(path)
    config = run.config()
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
    cnp = ConditionalNoisePredictor(bands, config["cnp"])
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
        models["cnp"] = ConditionalNoisePredictor(bands, config["cnp"])
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
            models["cnp"], models["wa"] = cnp.train(), wa.train()
        else:
            if not (config.get("reference_run") and config.get("cnp_run")):
                raise SystemExit("de-wa needs --set reference_run='\"RUNDIR\"' --set cnp_run='\"RUNDIR\"'")
            cnp, _, cnp_config = load_cnp_wa(config["cnp_run"], bands)
            config["cnp"] = cnp_config["cnp"]
            frozen["cnp"] = cnp
            models["wa"] = WeightAllocationNet(bands, config["wa"], float(config["wa_init_bias"]))
        if not config.get("reference_run"):
            raise SystemExit(f"{kind} needs --set reference_run='\"RUNDIR\"' (a de-reference run)")
        reference, ref_config = load_reference(config["reference_run"], bands)
        config["reference"] = ref_config["reference"]
        frozen["reference"] = reference
    else:
        raise SystemExit(f"unknown DE kind {kind!r}")
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
    n_params = {name: count_parameters(m) for name, m in {**models, **frozen}.items()}
    print(f"[{kind}] {len(data)} training pairs; params {n_params}; device {device}", flush=True)
    total, max_minutes = int(config["steps"]), config.get("max_minutes")
    started = time.time()
    window = []

    def checkpoint():
        run.save_checkpoint(step, {
            "models": {n: m.state_dict() for n, m in models.items()},
            "ema": {n: e.state_dict() for n, e in emas.items()},
            "frozen": {n: m.state_dict() for n, m in frozen.items() if n != "reference"},
            "opt": opt.state_dict(), "data_rng": rng.bit_generator.state, "kind": kind,
        })

    while step < total:
        if max_minutes is not None and time.time() - started > 60.0 * float(max_minutes):
            print(f"[{kind}] stopping at step {step}: max_minutes={max_minutes} reached", flush=True)
            break
        size = None if kind == "de-cnp" else config["crop_size"]
        y_np, x_np = data.batch(rng, int(config["batch_size"]), size)
        y, x0 = torch.from_numpy(y_np).to(device), torch.from_numpy(x_np).to(device)
        losses = compute_losses(kind, config, models, frozen, diffusion, y, x0)
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
    checkpoint()
    print(f"[{kind}] done at step {step}; run folder {args.out}", flush=True)


def compute_losses(kind: str, config, models, frozen, diffusion: GaussianDiffusion, y, x0) -> Dict[str, torch.Tensor]:
    if kind == "de-reference":
        loss = (models["reference"](y) - x0).abs().mean()
        return {"loss": loss, "l1": loss.detach()}
    if kind == "de-cnp":
        size = int(config["coarse_size"])
        if y.shape[-1] != size:
            y = F.interpolate(y, size=(size, size), mode="area")
            x0 = F.interpolate(x0, size=(size, size), mode="area")
        t = diffusion.sample_t(y.shape[0], y.device)
        noise = torch.randn_like(x0)
        eps_hat = models["cnp"](diffusion.q_sample(x0, t, noise), t.float(), y)
        loss = loss_ddpm(noise, eps_hat)
        return {"loss": loss, "l_ddpm": loss.detach()}
    # de-wa / de-joint
    with torch.no_grad():
        x0_ref = frozen["reference"](y)
    t = diffusion.sample_t(y.shape[0], y.device)
    noise = torch.randn_like(x0)
    x_t = diffusion.q_sample(x0, t, noise)
    cnp = frozen.get("cnp") or models["cnp"]
    if kind == "de-wa":
        with torch.no_grad():
            eps_hat = cnp(x_t, t.float(), y)
    else:
        eps_hat = cnp(x_t, t.float(), y)
    x0_eps = diffusion.x0_from_eps(x_t, t, eps_hat)
    w = models["wa"](x_t, t.float(), y, x0_ref)
    l_wa = loss_wa(x0, x0_eps, x0_ref, w)
    out = {"l_wa": l_wa.detach(), "w_mean": w.detach().mean()}
    if kind == "de-wa":
        out["loss"] = l_wa
    else:
        l_ddpm = loss_ddpm(noise, eps_hat)
        out["loss"] = float(config["lambda"]) * l_ddpm + l_wa
        out["l_ddpm"] = l_ddpm.detach()
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
    summary = {"kind": config["kind"], "data": config["data"], "steps": int(state["step"]),
               "wall_s": round(wall + last, 1), "batch_size": config.get("batch_size"),
               "crop_size": config.get("coarse_size") if config["kind"] == "de-cnp" else config.get("crop_size"),
               "device": "cpu (shared, 1 thread)"}
    if metrics:
        tail = metrics[-5:]
        summary["final_losses_mean_of_last_5_logs"] = {
            k: round(float(np.mean([m[k] for m in tail])), 5) for k in tail[-1] if k not in ("step", "elapsed_s")}
        head = metrics[:1]
        summary["first_logged_losses"] = {k: round(v, 5) for k, v in head[0].items() if k not in ("step", "elapsed_s")}
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
            "schema_version": 1, "name": name, "version": "0.1.0", "task": "optical_cloud_removal_reference",
            "description": "DE reference model E (MSDA-CR-like multiscale dilated residual net), L1-trained; "
                           "also the x0_E input of the diffusion step graph.",
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
        with torch.no_grad():
            x0_ref = reference(cloudy)
            t = torch.tensor([999.0, 500.0, 20.0][: cloudy.shape[0]])
            if len(t) < cloudy.shape[0]:
                t = torch.full((cloudy.shape[0],), 500.0)
            g = torch.Generator().manual_seed(0)
            x_t = diffusion.q_sample(x0_ref, t.long(), torch.randn(cloudy.shape, generator=g))
        aux = lambda meaning: [{"name": b, "meaning": meaning, "scale": 1.0, "offset": 0.0}
                               for b in ["R", "G", "B", "N"][:bands]]
        card = {
            "schema_version": 1, "name": name, "version": "0.1.0", "task": "optical_cloud_removal_diffusion_step",
            "description": "One DE denoising step: conditional noise predictor (eps) and weight allocation "
                           "network (weight, sigmoid output in [0, 1]; clamp to [eta, 1] at inference). "
                           "Use with the reference model E; the sampling loop runs in the plugin.",
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
                         "metrics": _heldout_metrics(run_dir)},
            "license": "research use only (RICE data: no licence stated)",
            "extra": {**diffusion.schedule(), "eta": float(config.get("eta", 0.3)), "prediction": "eps",
                      "beta_schedule": "linear", "sampler_default": "ddim", "steps_default": 10,
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
