"""Trainer for kinds ``fusion-cyclegan`` (stage 1) and ``fusion`` (stage 2).

    python -m skyclear.models.train fusion-cyclegan --config models/configs/fusion-cyclegan-small.json \
        --data ../shared/data --out runs/cyc
    python -m skyclear.models.train fusion --config models/configs/fusion-small.json \
        --data ../shared/data --out runs/fus --set cyclegan_run='"runs/cyc"'
    python -m skyclear.models.export runs/fus --out models/zoo/fusion_hier_small.onnx

The fusion stage loads the frozen CycleGAN generators from ``cyclegan_run`` (null = no
pseudo-modal inputs, the shipped model's setting) and, at export, puts them into the ONNX graph,
so the model takes only the real optical and SAR images. Every ``val_every`` steps the EMA
weights are scored on the validation pairs (``splits.py``) against the guided filter and the
Laplacian pyramid (``selection_score``); the best checkpoint is kept as ``checkpoints/best.pt``
and exported. Held-out pairs are never trained on and never used for a choice: only the card's
metrics (and the optional ``eval_every`` held-out losses) are computed on them.

Objective (config ``objective``): ``content`` (2.0.0) minimises the weighted terms of ``weights``;
``margin`` (``fusion-small-v3.json``) adds the selection score itself as a loss: a smooth minimum over
Qabf, VIF and SSIM of the relative margin over the better of the guided filter and the Laplacian
pyramid on the same crops (``losses.margin_losses``). ``lr_schedule``: ``constant`` or ``cosine``.

Card variants (config key ``card_variant`` or ``--variant`` of
``python -m skyclear.models.fusion.trainer export``):
``uint8`` (default): 8-bit SAR and RGB, clip [0, 255], offset 127.5, scale 127.5;
``s1s2``: Sentinel-1 VV in dB (clip [-25, 0], offset -12.5, scale 12.5) + Sentinel-2 DN
B4, B3, B2 (clip [0, 3000], offset 1500, scale 1500). The same weights serve both: training
maps both kinds of data to [-1, 1] the same way.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Dict, Optional

import numpy as np
import torch

from ..common.run import EMA, RunDir, load_config, pick_device, set_seed
from . import data as fdata
from .cyclegan import CycleGAN, PatchDiscriminator, lsgan
from .losses import classical_references, content_losses, margin_losses
from . import splits
from .guided_base import MIN_TILE, GuidedFusionBase
from .network import FusionPipeline, HierarchicalFusionNet, count_params, luminance

CYCLEGAN_DEFAULTS: Dict[str, Any] = {
    "kind": "fusion-cyclegan", "patch": 64, "batch": 4, "steps": 1000, "lr": 2e-4,
    "width": 16, "blocks": 3, "d_width": 16, "d_layers": 3, "norm": "batch",
    "lambda_cycle": 10.0, "lambda_identity": 5.0, "log_every": 10, "ckpt_every": 100,
    "threads": 1, "time_limit_s": 0, "sources": ["cfog", "sen12mscr", "ssl4eo"],
}
FUSION_DEFAULTS: Dict[str, Any] = {
    "kind": "fusion", "patch": 128, "batch": 4, "steps": 1000, "lr": 2e-4, "d_lr": 2e-4,
    "width": 8, "blocks": [1, 1, 1, 1], "cbam_levels": [3, 4, 5], "aspp_dilations": [1, 2, 4, 8],
    "use_base": True, "norm": "group", "cyclegan_run": None,
    "weights": {"intensity": 0.5, "gradient": 1.0, "ssim": 1.0, "vif": 1.0, "qabf": 1.0},
    "intensity_mode": "optical", "gwpl_window": 3, "lambda_adv": 0.0, "d_width": 16, "d_layers": 3,
    "ema": 0.99, "log_every": 10, "ckpt_every": 50, "eval_every": 0, "val_every": 100, "threads": 1,
    "time_limit_s": 0, "sources": list(fdata.SOURCES), "include_validation": False,
    "scale_range": [0.7, 1.5], "tile_size": 512, "default_overlap": 192, "card_variant": "uint8",
    "name": "fusion-hier", "version": "2.0.0",
    # "content": minimise the weighted terms of ``weights`` (2.0.0). "margin": also minimise the smooth
    # minimum of the relative margins over the better classical method (guided filter, Laplacian
    # pyramid) on the same crops, i.e. the selection score itself (``losses.margin_losses``).
    "objective": "content", "margin_temperature": 0.003,
    # "constant" (2.0.0) or "cosine": lr * (1 + cos(pi * step / steps)) / 2, a function of the step
    # (so resuming needs no scheduler state)
    "lr_schedule": "constant",
}
OBJECTIVES = ("content", "margin")
LR_SCHEDULES = ("constant", "cosine")
# what the selection score compares against on the validation pairs
SELECT_METRICS = ("qabf", "vif", "ssim")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Nothing beyond the common options; every setting is a config key (``--set``)."""


# ---------------------------------------------------------------------------------------
# config and models


def _config(args, defaults: Dict[str, Any]) -> Dict[str, Any]:
    overrides = {}
    for item in getattr(args, "set", []) or []:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    run = RunDir(args.out)
    resuming = os.path.exists(run.config_path) and not getattr(args, "no_resume", False)
    if resuming:
        config = dict(defaults, **run.config())
        config.update(overrides)
    elif args.config:
        config = dict(defaults, **load_config(args.config, overrides))
    else:
        config = dict(defaults, **overrides)
    config["kind"] = args.kind
    config["data"] = os.path.abspath(args.data)
    run.save_config(config)
    return config


def build_cyclegan(config: Dict[str, Any]) -> CycleGAN:
    return CycleGAN(config["width"], config["blocks"], config["d_width"], config["d_layers"], config["norm"])


def load_generators(cyclegan_run: str):
    """Frozen (eval, no grad) G_s2o, G_o2s from a stage-1 run folder."""
    run = RunDir(cyclegan_run)
    config = dict(CYCLEGAN_DEFAULTS, **run.config())
    state = torch.load(os.path.join(run.checkpoint_dir, "last.pt"), map_location="cpu", weights_only=False)
    gan = build_cyclegan(config)
    gan.load_state_dict(state["model"])
    for g in (gan.G_s2o, gan.G_o2s):
        g.eval()
        for p in g.parameters():
            p.requires_grad_(False)
    return gan.G_s2o, gan.G_o2s


def build_fusion_net(config: Dict[str, Any]) -> HierarchicalFusionNet:
    return HierarchicalFusionNet(config["width"], config["blocks"], config["cbam_levels"],
                                 config["aspp_dilations"], use_pseudo=bool(config.get("cyclegan_run")),
                                 use_base=bool(config.get("use_base", True)), norm=config.get("norm", "group"))


def _tensors(batch, device):
    return tuple(torch.from_numpy(b).to(device) for b in batch)


def _progress(total: int, start: int, desc: str):
    try:
        from tqdm import tqdm
        return tqdm(total=total, initial=start, desc=desc, dynamic_ncols=True, mininterval=2.0)
    except ImportError:  # pragma: no cover
        return None


# ---------------------------------------------------------------------------------------
# stage 1


class CycleGANTrainer:
    def __init__(self, config: Dict[str, Any], device):
        self.config, self.device = config, device
        self.model = build_cyclegan(config).to(device)
        g_params = list(self.model.G_s2o.parameters()) + list(self.model.G_o2s.parameters())
        d_params = list(self.model.D_o.parameters()) + list(self.model.D_s.parameters())
        self.opt_g = torch.optim.Adam(g_params, lr=config["lr"], betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(d_params, lr=config["lr"], betas=(0.5, 0.999))

    def step(self, sar, opt) -> Dict[str, float]:
        y = luminance(opt)
        self.model.train()
        losses, fake_o, fake_s = self.model.generator_losses(
            sar, y, self.config["lambda_cycle"], self.config["lambda_identity"])
        self.opt_g.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.opt_g.step()
        d_loss = self.model.discriminator_loss(sar, y, fake_o, fake_s)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        out = {f"g_{k}": v.item() for k, v in losses.items()}
        out["d"] = d_loss.item()
        return out

    def state(self):
        return {"model": self.model.state_dict(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}

    def load(self, state):
        self.model.load_state_dict(state["model"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])


# ---------------------------------------------------------------------------------------
# stage 2


class FusionTrainer:
    def __init__(self, config: Dict[str, Any], device, generators=None):
        self.config, self.device = config, device
        self.net = build_fusion_net(config).to(device)
        if self.net.use_pseudo:
            generators = generators or load_generators(config["cyclegan_run"])
            self.G_s2o, self.G_o2s = (g.to(device) for g in generators)
        else:
            self.G_s2o = self.G_o2s = None
        self.D = PatchDiscriminator(1, config["d_width"], config["d_layers"]).to(device)
        self.opt_g = torch.optim.Adam(self.net.parameters(), lr=config["lr"], betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=config["d_lr"], betas=(0.5, 0.999))
        self.ema = EMA(self.net, config["ema"]) if config.get("ema") else None
        self.objective = config.get("objective", "content")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown fusion objective {self.objective!r}; choose one of {OBJECTIVES}")
        if config.get("lr_schedule", "constant") not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {config.get('lr_schedule')!r}; choose one of {LR_SCHEDULES}")
        # the margin objective needs the guided filter of each crop even when the net has no base path
        self.gff = GuidedFusionBase().to(device) if self.objective == "margin" and not self.net.use_base else None

    def set_step(self, step: int) -> float:
        """Learning rate for ``step`` (0-based) under ``lr_schedule``; returns it."""
        lr = float(self.config["lr"])
        if self.config.get("lr_schedule", "constant") == "cosine":
            lr *= 0.5 * (1.0 + math.cos(math.pi * min(step, self.config["steps"]) / max(1, self.config["steps"])))
        for group in self.opt_g.param_groups:
            group["lr"] = lr
        return lr

    def pseudo(self, sar, y):
        if not self.net.use_pseudo:
            return None, None
        with torch.no_grad():
            return self.G_o2s(y), self.G_s2o(sar)

    def losses(self, sar, opt, terms=None):
        y = luminance(opt)
        ps, po = self.pseudo(sar, y)
        fused, base = self.net.forward_with_base(sar, y, ps, po)
        losses = content_losses(fused, y, sar, self.config["weights"], self.config["intensity_mode"],
                                self.config["gwpl_window"], terms=terms)
        if self.objective == "margin":
            with torch.no_grad():
                if base is None:
                    base = self.gff(0.5 * (y + 1.0), 0.5 * (sar + 1.0)) * 2.0 - 1.0
                refs = classical_references(y, sar, base, laplacian_fusion(y, sar))
            losses.update(margin_losses(fused, y, sar, refs, float(self.config.get("margin_temperature", 0.003))))
        return fused, y, losses

    def step(self, sar, opt) -> Dict[str, float]:
        self.net.train()
        fused, y, losses = self.losses(sar, opt)
        lam = self.config["lambda_adv"]
        out = {}
        if lam > 0:
            self.D.train()
            real = torch.cat([y, sar], 0)
            d_loss = 0.5 * (lsgan(self.D(real), True) + lsgan(self.D(fused.detach()), False))
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            losses["adv"] = lsgan(self.D(fused), True)
            out["d"] = d_loss.item()
            total = losses["content"] + lam * losses["adv"]
        else:
            total = losses["content"]
        if "margin" in losses:
            total = total + losses["margin"]
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.opt_g.step()
        if self.ema is not None:
            self.ema.update(self.net)
        out.update({k: v.item() for k, v in losses.items()})
        out["total"] = total.item()
        return out

    def eval_net(self) -> HierarchicalFusionNet:
        net = build_fusion_net(self.config)
        net.load_state_dict(self.ema.state_dict() if self.ema is not None else self.net.state_dict())
        return net.eval()

    def pipeline(self) -> FusionPipeline:
        return FusionPipeline(self.eval_net(), self.G_s2o, self.G_o2s).eval()

    def state(self):
        s = {"net": self.net.state_dict(), "D": self.D.state_dict(), "opt_g": self.opt_g.state_dict(),
             "opt_d": self.opt_d.state_dict()}
        if self.ema is not None:
            s["ema"] = self.ema.state_dict()
        return s

    def load(self, state):
        self.net.load_state_dict(state["net"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])


def laplacian_fusion(y: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
    """The plugin's Laplacian-pyramid fusion of each crop (numpy, no gradient), (B, 1, H, W) in [-1, 1]."""
    from ...plugin.core.fusion_classical import fuse_laplacian
    yn = 0.5 * (y.detach().cpu().double().numpy() + 1.0)
    sn = 0.5 * (sar.detach().cpu().double().numpy() + 1.0)
    out = np.stack([fuse_laplacian(yn[i, 0], sn[i, 0]) for i in range(yn.shape[0])])[:, None] * 2.0 - 1.0
    return torch.from_numpy(out).to(y)


def run_pipeline(pipe: FusionPipeline, sar: np.ndarray, opt: np.ndarray, tile: int = 0) -> np.ndarray:
    """Whole-image inference (reflect-padded to the size multiple): (1,H,W), (3,H,W) in [-1,1] -> (3,H,W)."""
    m = pipe.size_multiple
    h, w = sar.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    s = torch.from_numpy(np.pad(sar, ((0, 0), (0, ph), (0, pw)), mode="reflect"))[None]
    o = torch.from_numpy(np.pad(opt, ((0, 0), (0, ph), (0, pw)), mode="reflect"))[None]
    with torch.no_grad():
        out = pipe(o.float(), s.float())[0, :, :h, :w].numpy()
    return out


def _to8(x):
    """[-1, 1] network units -> rounded 8-bit values, as the engine writes uint8 output."""
    return np.rint((np.clip(x, -1, 1) + 1) * 127.5)


def pairs_metrics(pipe: Optional[FusionPipeline], pairs, method: Optional[str] = None) -> Dict[str, Any]:
    """Fusion metrics (plugin core definitions, 8-bit grey) of the network (or of a classical
    ``method`` run in numpy) on ``pairs``, per pair and averaged."""
    from ...plugin.core.fusion_classical import fuse_rgb
    from ...plugin.core.metrics.fusion import fusion_metrics
    per = {}
    for name, sar, opt in pairs:
        if method is None:
            fused = run_pipeline(pipe, sar, opt)
        else:
            fused = fuse_rgb((opt + 1) / 2, (sar[0] + 1) / 2, method) * 2 - 1
        per[name] = {k: float(v) for k, v in fusion_metrics(_to8(fused), _to8(sar), _to8(opt)).items()}
    keys = sorted({k for v in per.values() for k in v})
    mean = {k: float(np.nanmean([v[k] for v in per.values()])) for k in keys}
    return {"pairs": len(per), "mean": mean, "per_pair": per}


def heldout_metrics(pipe: FusionPipeline, root: str) -> Dict[str, Any]:
    """Metrics on the held-out pairs (``splits.py``), averaged; for the card only, never for choices."""
    return pairs_metrics(pipe, fdata.load_heldout_pairs(root))


def selection_score(mean: Dict[str, float], reference: Dict[str, float]) -> float:
    """Smallest relative margin over the best classical value, across Qabf, VIF and SSIM:
    positive only when the network beats every reference on all three."""
    return float(min((mean[k] - reference[k]) / abs(reference[k]) for k in SELECT_METRICS))


def classical_reference(pairs) -> Dict[str, Any]:
    """Guided-filter and Laplacian metrics on ``pairs`` and, per metric, the better of the two."""
    gff, lap = pairs_metrics(None, pairs, "guided"), pairs_metrics(None, pairs, "laplacian")
    best = {k: max(gff["mean"][k], lap["mean"][k]) for k in SELECT_METRICS}
    return {"guided": gff["mean"], "laplacian": lap["mean"], "best": best}


def _eval_losses(trainer: FusionTrainer, pairs, device) -> Dict[str, float]:
    """Held-out content losses on fixed centre crops (training-mode-free, EMA weights not used)."""
    trainer.net.eval()
    totals: Dict[str, float] = {}
    with torch.no_grad():
        for _, sar, opt in pairs:
            h, w = sar.shape[-2:]
            size = min(128, h - h % 16, w - w % 16)
            y0, x0 = (h - size) // 2, (w - size) // 2
            s = torch.from_numpy(sar[None, :, y0:y0 + size, x0:x0 + size].copy()).to(device)
            o = torch.from_numpy(opt[None, :, y0:y0 + size, x0:x0 + size].copy()).to(device)
            _, _, losses = trainer.losses(s, o)
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + float(v) / len(pairs)
    return {f"heldout_{k}": v for k, v in totals.items()}


def _validate(trainer: FusionTrainer, validation, reference, run: RunDir, step: int, sampler) -> float:
    """Metrics of the exported (EMA) weights on the validation pairs; keeps ``best.pt``, the
    checkpoint with the best ``selection_score`` so far (validation only, never held-out)."""
    metrics = pairs_metrics(trainer.pipeline(), validation)["mean"]
    score = selection_score(metrics, reference["best"])
    best_path = os.path.join(run.checkpoint_dir, "best.pt")
    best = None
    if os.path.exists(best_path):
        best = torch.load(best_path, map_location="cpu", weights_only=False).get("val_score")
    improved = best is None or score > best
    run.log(step, val_score=score, val_best=1.0 if improved else 0.0,
            **{f"val_{k}": metrics[k] for k in ("qabf", "vif", "ssim", "en", "sd", "ag", "sf", "mi")})
    if improved:
        state = dict(trainer.state(), sampler=sampler.state(), step=step, val_score=score, val_metrics=metrics)
        torch.save(state, best_path + ".tmp")
        os.replace(best_path + ".tmp", best_path)
    return score


# ---------------------------------------------------------------------------------------
# the loop


def train(args) -> str:
    defaults = CYCLEGAN_DEFAULTS if args.kind == "fusion-cyclegan" else FUSION_DEFAULTS
    config = _config(args, defaults)
    run = RunDir(args.out)
    device = pick_device(getattr(args, "device", "auto"))
    if device.type == "cpu" and config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    set_seed(getattr(args, "seed", 0))
    if args.kind == "fusion-cyclegan":
        pairs = fdata.load_training_pairs(args.data, tuple(config["sources"]))
    else:
        pairs = fdata.load_training_pairs(args.data, tuple(config["sources"]),
                                          include_validation=bool(config.get("include_validation")))
    sampler = fdata.PatchSampler(pairs, config["patch"], seed=getattr(args, "seed", 0),
                                 scale_range=config.get("scale_range", (1.0, 1.0)))
    if args.kind == "fusion-cyclegan":
        trainer = CycleGANTrainer(config, device)
        n_params = count_params(trainer.model.G_s2o) + count_params(trainer.model.G_o2s)
        heldout = []
    else:
        trainer = FusionTrainer(config, device)
        n_params = count_params(trainer.net)
        heldout = fdata.load_heldout_pairs(args.data) if fdata.is_shared_layout(args.data) else []
    validation = (fdata.load_validation_pairs(args.data)
                  if args.kind == "fusion" and config.get("val_every") and fdata.is_shared_layout(args.data) else [])
    reference = classical_reference(validation) if validation else None
    if reference:
        run.log(0, **{f"val_ref_{m}_{k}": reference[m][k] for m in ("guided", "laplacian") for k in SELECT_METRICS})
    start = 0
    state = None if getattr(args, "no_resume", False) else run.load_checkpoint(map_location=device)
    if state is not None:
        trainer.load(state)
        sampler.set_state(state["sampler"])
        start = int(state["step"])
    print(f"{args.kind}: {len(pairs)} training pairs, {n_params:,} generator parameters, "
          f"device {device}, steps {start}->{config['steps']}", file=sys.stderr)
    if validation and start == 0:
        _validate(trainer, validation, reference, run, 0, sampler)
    bar = _progress(config["steps"], start, args.kind)
    t0 = time.time()
    limit = float(config.get("time_limit_s") or 0)
    step = start
    save = lambda s: run.save_checkpoint(s, dict(trainer.state(), sampler=sampler.state()))  # noqa: E731
    while step < config["steps"]:
        sar, opt = _tensors(sampler.batch(config["batch"]), device)
        lr = trainer.set_step(step) if hasattr(trainer, "set_step") else None
        values = trainer.step(sar, opt)
        if lr is not None:
            values["lr"] = lr
        step += 1
        if not all(math.isfinite(v) for v in values.values()):
            raise RuntimeError(f"non-finite loss at step {step}: {values}")
        if step % config["log_every"] == 0 or step == config["steps"]:
            run.log(step, **values)
        if heldout and config.get("eval_every") and step % config["eval_every"] == 0:
            run.log(step, **_eval_losses(trainer, heldout, device))
        if validation and (step % config["val_every"] == 0 or step == config["steps"]):
            _validate(trainer, validation, reference, run, step, sampler)
        if step % config["ckpt_every"] == 0:
            save(step)
        if bar is not None:
            bar.update(1)
            if step % config["log_every"] == 0:
                bar.set_postfix({k: f"{v:.3f}" for k, v in values.items() if k in ("total", "g_total", "d", "content", "g_cycle")})
        if limit and time.time() - t0 > limit:
            print(f"time limit {limit:.0f}s reached at step {step}", file=sys.stderr)
            run.log(step, stopped_at_time_limit=1.0)
            break
    if bar is not None:
        bar.close()
    save(step)
    if heldout:
        run.log(step, **_eval_losses(trainer, heldout, device))
    print(f"done: {step} steps in {time.time() - t0:.0f}s; checkpoint {run.checkpoint_dir}/last.pt", file=sys.stderr)
    return run.path


# ---------------------------------------------------------------------------------------
# export

def _band(name, meaning, clip, scale, offset):
    from ...plugin.core.model_card import band
    return band(name, meaning, clip, scale, offset)


def card_tensors(variant: str):
    if variant == "uint8":
        sar_bands = [_band("SAR", "SAR intensity, 8-bit display values (0-255)", [0, 255], 127.5, 127.5)]
        rgb = [_band(c, f"{c} 8-bit", [0, 255], 127.5, 127.5) for c in ("R", "G", "B")]
    elif variant == "s1s2":
        sar_bands = [_band("VV", "Sentinel-1 VV backscatter in dB", [-25, 0], 12.5, -12.5)]
        rgb = [_band(b, f"Sentinel-2 {b} DN (reflectance x 10000)", [0, 3000], 1500, 1500)
               for b in ("B4", "B3", "B2")]
    else:
        raise ValueError(f"unknown card variant {variant!r} (uint8 or s1s2)")
    inputs = [
        {"name": "optical", "role": "optical", "resampling": "bilinear", "bands": rgb,
         "description": "optical R, G, B (the output grid; a grey image may be given as R = G = B)"},
        {"name": "sar", "role": "sar", "resampling": "bilinear", "bands": sar_bands,
         "description": "SAR, one band, resampled onto the optical grid"},
    ]
    outputs = [{"name": "fused", "role": "optical", "dtype": None, "bands": rgb,
                "description": "fused R, G, B: optical colours (Cb, Cr) with the fused luminance"}]
    return inputs, outputs


def _example_pair(args, m: int):
    sample = getattr(args, "sample", None)
    if sample and os.path.isdir(sample) and not fdata.is_shared_layout(sample):
        _, sar, opt = fdata.load_folder_pairs(sample, limit=1)[0]
    else:
        root = sample if sample and os.path.isdir(sample) else None
        root = root or _default_data_root(args)
        _, sar, opt = fdata.load_heldout_pairs(root)[0]
    size = min(256, (sar.shape[1] // m) * m, (sar.shape[2] // m) * m)
    return (torch.from_numpy(opt[None, :, :size, :size].copy()),
            torch.from_numpy(sar[None, :, :size, :size].copy()))


def _default_data_root(args) -> str:
    run_dir = getattr(args, "run_dir", None)
    if run_dir and os.path.exists(os.path.join(run_dir, "config.json")):
        with open(os.path.join(run_dir, "config.json")) as f:
            root = json.load(f).get("data")
        if root and os.path.isdir(root):
            return root
    return os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")


def _checkpoint_for_export(run: RunDir, config: Dict[str, Any]):
    """``best.pt`` (best validation score, see ``_validate``) unless ``export_last``; else ``last.pt``."""
    best = os.path.join(run.checkpoint_dir, "best.pt")
    if config["kind"] == "fusion" and not config.get("export_last") and os.path.exists(best):
        return torch.load(best, map_location="cpu", weights_only=False), "best"
    return torch.load(os.path.join(run.checkpoint_dir, "last.pt"), map_location="cpu", weights_only=False), "last"


def _data_description(config, data_root) -> str:
    if not fdata.is_shared_layout(data_root):
        return (f"folder of SAR/optical pairs {os.path.basename(os.path.normpath(data_root))}; "
                "random crops + 8 flips/rotations")
    names = [p[0] for p in fdata.load_training_pairs(data_root, tuple(config["sources"]),
                                                     bool(config.get("include_validation")))]
    lo, hi = config.get("scale_range", (1, 1))
    return (f"{len(names)} SAR/optical pairs of the shared data ({', '.join(names)}); held-out pairs "
            f"excluded{'' if config.get('include_validation') else ', validation pairs excluded'}; random "
            f"{config['patch']}x{config['patch']} crops at scale {lo}-{hi} + 8 flips/rotations")


def export(run_dir: str, out: str, args=None) -> float:
    from ..common.onnx_export import export_with_card
    args = args or argparse.Namespace()
    args.run_dir = run_dir
    run = RunDir(run_dir)
    config = run.config()
    if config["kind"] == "fusion-cyclegan":
        state = torch.load(os.path.join(run.checkpoint_dir, "last.pt"), map_location="cpu", weights_only=False)
        return _export_cyclegan(config, state, out, args, run)
    config = dict(FUSION_DEFAULTS, **config)
    state, which = _checkpoint_for_export(run, config)
    trainer = FusionTrainer(config, torch.device("cpu"))
    trainer.load(state)
    pipe = trainer.pipeline()
    m = pipe.size_multiple
    variant = getattr(args, "variant", None) or config.get("card_variant", "uint8")
    inputs, outputs = card_tensors(variant)
    steps = int(state["step"])
    last_steps = int(torch.load(os.path.join(run.checkpoint_dir, "last.pt"), map_location="cpu",
                                weights_only=False)["step"])
    n_net = count_params(pipe.net)
    n_gen = sum(count_params(g) for g in (pipe.G_s2o, pipe.G_o2s) if g is not None)
    data_root = config.get("data") or _default_data_root(args)
    metrics = {}
    if getattr(args, "metrics", True) and fdata.is_shared_layout(data_root):
        try:
            metrics = heldout_metrics(pipe, data_root)
        except Exception as exc:  # metrics are informative, never block an export
            metrics = {"error": str(exc)}
    base = ("a correction added to the guided-filtering fusion (GFF) of the same tile, computed inside the "
            "graph (zero-initialised head: untrained, the model returns the classical result)"
            if pipe.net.use_base else "the fused luminance directly")
    card = {
        "schema_version": 1,
        "name": config.get("name", "fusion-hier"),
        "version": str(config.get("version", "2.0.0")),
        "task": "sar_optical_fusion",
        "description": ("Hierarchical SAR-optical fusion after Yan et al. 2025 (Remote Sens. 17:2466): ResNet-50-style "
                        "dual encoder, CBAM/addition level fusion, DenseASPP, LSNF decoder, "
                        f"{'GroupNorm' if pipe.net.norm == 'group' else pipe.net.norm + ' normalisation'}, "
                        f"predicting {base}. Fuses the optical luminance (Y of YCbCr, BT.601) with SAR and "
                        "recomposes RGB with the optical Cb, Cr inside the graph, so colours are kept. Trained "
                        f"from scratch at width {config['width']} ({n_net:,} parameters"
                        + (f" + {n_gen:,} CycleGAN generator parameters" if n_gen else ", no CycleGAN stage")
                        + ")."),
        "inputs": inputs,
        "outputs": outputs,
        "tiling": {"tile_size": int(config["tile_size"]), "size_multiple": int(m),
                   "default_overlap": int(config["default_overlap"])},
        "training": {
            "data": _data_description(config, data_root),
            "steps": steps, "steps_run": last_steps, "checkpoint": which,
            "batch": config["batch"], "patch": config["patch"],
            "losses": {k: v for k, v in config["weights"].items() if v},
            "objective": config.get("objective", "content"),
            **({"margin_temperature": config.get("margin_temperature")}
               if config.get("objective") == "margin" else {}),
            "lr_schedule": config.get("lr_schedule", "constant"),
            "intensity_mode": config.get("intensity_mode"),
            "validation_score": state.get("val_score"),
            "validation_metrics": {k: state.get("val_metrics", {}).get(k) for k in SELECT_METRICS},
            "cyclegan_run_steps": _cyclegan_steps(config),
            "wall_s": _wall(run_dir),
            "hardware": config.get("hardware", str(getattr(args, "hardware", "") or "")),
            "metrics": metrics.get("mean", metrics),
            "metrics_per_pair": metrics.get("per_pair", {}),
            "metrics_note": ("held-out (never trained on, never used for a choice): CFOG Stest3 bottom third + "
                             f"SEN12MS-CR {', '.join(splits.SEN12MSCR_HELDOUT)}, {metrics.get('pairs', 0)} pairs; "
                             "plugin.core.metrics.fusion conventions (8-bit grey, A = SAR, B = optical luminance); "
                             "mean over pairs; raw SAR"),
        },
        "license": ("research use only (CFOG and WHU-OPT-SAR data: research/academic use; SEN12MS-CR, "
                    "SSL4EO-S12: CC-BY-4.0; BigEarthNet: CDLA-Permissive-1.0)"),
        "extra": {"width": config["width"], "blocks": config["blocks"], "cbam_levels": config["cbam_levels"],
                  "aspp_dilations": config["aspp_dilations"], "norm": pipe.net.norm,
                  "classical_base": "guided" if pipe.net.use_base else None, "fusion_net_params": n_net,
                  "cyclegan_generator_params": n_gen, "card_variant": variant,
                  "uses_pseudo_modal_inputs": bool(pipe.net.use_pseudo),
                  "min_tile": MIN_TILE,
                  "note": ("The in-graph guided filter looks 96 px away and CBAM / GroupNorm pool over the tile: "
                           "keep the default overlap (192 px) so tiles blend seamlessly. For Sentinel-1 dB + "
                           "Sentinel-2 DN data export with variant s1s2 (same weights).")},
    }
    opt, sar = _example_pair(args, m)
    diff = export_with_card(pipe, {"optical": opt, "sar": sar}, ["fused"], card, out)
    print(f"exported {out} ({which} checkpoint, step {steps} of {last_steps}): size_multiple {m}, ONNX vs torch "
          f"max abs diff {diff:.3g} on a real {sar.shape[-2]}x{sar.shape[-1]} held-out sample; held-out metrics "
          f"{json.dumps(metrics.get('mean', metrics))}")
    return diff


def _wall(run_dir) -> Optional[float]:
    """Training wall time of a run folder (last logged elapsed time)."""
    if not run_dir or not os.path.isdir(run_dir):
        return None
    entries = list(RunDir(run_dir).metrics())
    return max((e.get("elapsed_s", 0.0) for e in entries), default=None)


def _cyclegan_steps(config) -> Optional[int]:
    run_dir = config.get("cyclegan_run")
    if not run_dir:
        return None
    try:
        s = torch.load(os.path.join(run_dir, "checkpoints", "last.pt"), map_location="cpu", weights_only=False)
        return int(s["step"])
    except Exception:
        return None


def _export_cyclegan(config, state, out, args, run) -> float:
    """Stage 1 alone: export G_s2o (SAR -> pseudo-optical luminance) as a generic model."""
    from ..common.onnx_export import export_with_card
    config = dict(CYCLEGAN_DEFAULTS, **config)
    gan = build_cyclegan(config)
    gan.load_state_dict(state["model"])
    g = gan.G_s2o.eval()
    sar_b = [_band("SAR", "SAR intensity, 8-bit display values", [0, 255], 127.5, 127.5)]
    card = {"schema_version": 1, "name": "fusion-cyclegan-s2o", "version": "1.0.0", "task": "generic",
            "description": "Stage-1 CycleGAN generator: SAR -> pseudo-optical luminance",
            "inputs": [{"name": "sar", "role": "sar", "bands": sar_b}],
            "outputs": [{"name": "pseudo_optical", "role": "optical", "dtype": None,
                         "bands": [_band("Y", "pseudo-optical luminance", [0, 255], 127.5, 127.5)]}],
            "tiling": {"tile_size": 256, "size_multiple": 4, "default_overlap": 32},
            "training": {"steps": int(state["step"])}, "license": "research use only"}
    _, sar = _example_pair(args, 4)
    diff = export_with_card(g, {"sar": sar}, ["pseudo_optical"], card, out)
    print(f"exported {out}: ONNX vs torch max abs diff {diff:.3g}")
    return diff


def main(argv=None) -> int:
    """``python -m skyclear.models.fusion.trainer export RUN --out X.onnx [--variant s1s2] [--sample DIR]``"""
    parser = argparse.ArgumentParser(prog="python -m skyclear.models.fusion.trainer")
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export")
    e.add_argument("run_dir")
    e.add_argument("--out", required=True)
    e.add_argument("--variant", choices=["uint8", "s1s2"])
    e.add_argument("--sample")
    args = parser.parse_args(argv)
    export(args.run_dir, args.out, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
