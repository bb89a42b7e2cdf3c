"""Trainer for kinds ``ibhfn`` and ``dsen2cr`` (same data, losses, schedule and budget).

    python -m skyclear.models.train ibhfn --config models/configs/ibhfn-small.json \
        --data ../shared/data/sen12mscr --out runs/ibhfn-small
    python -m skyclear.models.export runs/ibhfn-small --out models/zoo/ibhfn_small.onnx

Config keys (see ``models/configs/ibhfn-*.json``): ``model`` (network options, see
``network.build_model``), ``steps``, ``batch_size``, ``crop``, ``lr``, ``min_lr``,
``loss`` ({weights, warmup, delay, shape, kl_warmup, sharp_mode, sharp_patch, sharp_tau,
gate_target, gate_tau}, see ``losses``), ``synthetic_p`` (probability of a synthetic cloud
composite per example), ``composite`` (null = 1.x additive paste, or options of
``data.composite_cloud_v2``), ``extra`` (null, or {clear, real, cloud_layers, exclude,
root, l2a_fit}: extra training sources, see ``sources.load_extra``), ``extra_p``
(probability that a synthetic background is an extra clear pair), ``real_extra_p``
(probability that a real example is an extra real triplet), ``train_ids`` / ``val_ids`` /
``test_ids`` (explicit split, e.g. a cross-validation fold; default ``splits.split_ids``),
``val_every``, ``log_every``, ``ckpt_every``, ``keep_every``, ``ema`` (0 = off),
``threads`` (torch threads, 0 = torch default), ``num_workers``, ``time_budget_min``
(optional wall-clock stop, checkpointed), ``name``, ``version``, ``tile_size``,
``default_overlap``.

Extra sources never show an evaluation triplet's place: every extra sample is checked
against the run's test and validation triplets (``sources.drop_overlapping``) and dropped
on a match; the run's ``config.json`` lists what was used and dropped.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Dict, List, Optional

import numpy as np
import torch

from ..common.run import EMA, RunDir, load_config, pick_device, set_seed
from . import splits
from .data import (S1_BANDS, S2_BANDS, StepSampler, TripletDataset, card_bands, find_samples, load_sample)
from .losses import LossSchedule, gate_target_for, total_loss
from .network import build_model

DEFAULTS = {
    "steps": 2000, "batch_size": 8, "crop": 64, "lr": 1e-3, "min_lr": 1e-5, "synthetic_p": 0.3,
    "val_every": 200, "log_every": 10, "ckpt_every": 100, "keep_every": 0, "ema": 0.0, "threads": 0,
    "num_workers": 0, "time_budget_min": 0, "tile_size": 256, "default_overlap": 32, "version": "1.0.0",
    "loss": {"warmup": 500, "delay": 0, "shape": "linear"}, "grad_clip": 1.0,
    "composite": None, "extra": None, "extra_p": 0.0, "real_extra_p": 0.0,
}


CONFIG_KEYS = set(DEFAULTS) | {"kind", "name", "version", "model", "weight_decay", "train_ids", "val_ids", "test_ids",
                               "data", "seed", "split"}
EXTRA_KEYS = {"clear", "real", "cloud_layers", "exclude", "root", "l2a_fit"}


def check_config_keys(config: Dict, where: str = "config") -> None:
    """Fail on keys the trainer would silently ignore (a typo must not change an experiment)."""
    from .data import COMPOSITE_DEFAULTS
    problems = [f"'{k}'" for k in config if k not in CONFIG_KEYS and not k.startswith("_")]  # "_x": comments
    problems += [f"'composite.{k}'" for k in (config.get("composite") or {}) if k not in COMPOSITE_DEFAULTS]
    problems += [f"'extra.{k}'" for k in (config.get("extra") or {}) if k not in EXTRA_KEYS]
    import inspect
    loss_keys = set(inspect.signature(LossSchedule.__init__).parameters) - {"self"}
    problems += [f"'loss.{k}'" for k in (config.get("loss") or {}) if k not in loss_keys]
    if problems:
        raise SystemExit(f"{where}: unknown key(s) {', '.join(problems)}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (overrides the config's 'threads'; 1 for shared machines)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _config_from_args(args) -> Dict:
    overrides = {}
    for item in getattr(args, "set", []) or []:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    if args.config:
        config = load_config(args.config)
    else:
        config = {"kind": args.kind}
    config = dict(DEFAULTS, **config)
    for key, value in overrides.items():  # dotted keys reach into nested dicts: model.width=8
        target = config
        parts = key.split(".")
        for p in parts[:-1]:
            target[p] = dict(target.get(p, {}))
            target = target[p]
        target[parts[-1]] = value
    check_config_keys(config, args.config or "config")
    config["kind"] = args.kind
    config["data"] = os.path.abspath(args.data)
    config["seed"] = args.seed
    if getattr(args, "threads", None) is not None:
        config["threads"] = args.threads
    return config


def _lr_at(step: int, config: Dict) -> float:
    """Cosine decay from lr to min_lr over ``steps`` with a short linear warm-up."""
    warm = max(1, min(100, config["steps"] // 20))
    if step < warm:
        return config["lr"] * (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, config["steps"] - warm))
    return config["min_lr"] + 0.5 * (config["lr"] - config["min_lr"]) * (1 + math.cos(math.pi * t))


def _batch_to(batch: Dict, device) -> Dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v).to(device) for k, v in batch.items()}


def _collate(items: List[Dict]) -> Dict[str, np.ndarray]:
    return {k: np.stack([it[k] for it in items]) for k in items[0]}


def _split(data_dir: str, config: Optional[Dict] = None):
    """(train, val, held-out) triplet files: the config's explicit ``train_ids``/``val_ids``/
    ``test_ids`` (a cross-validation fold) or the fixed split of ``splits``."""
    files = find_samples(data_dir)
    if not files:
        raise SystemExit(f"no SEN12MS-CR triplets found under {data_dir}")
    by_id = {f.id: f for f in files}
    config = config or {}
    if config.get("train_ids"):
        train_ids, val_ids = list(config["train_ids"]), list(config.get("val_ids") or [])
        held_ids = list(config.get("test_ids") or [])
        missing = [i for i in train_ids + val_ids + held_ids if i not in by_id]
        if missing:
            raise SystemExit(f"triplet id(s) {missing} of the config not found under {data_dir}")
        overlap = set(train_ids) & (set(val_ids) | set(held_ids))
        if overlap:
            raise SystemExit(f"triplet id(s) {sorted(overlap)} are both training and evaluation data")
    else:
        train_ids, val_ids, held_ids = splits.split_ids(by_id)
    return [by_id[i] for i in train_ids], [by_id[i] for i in val_ids], [by_id[i] for i in held_ids]


def _extra_sources(config: Dict, protected_files) -> Dict:
    """Extra training sources of the config, minus anything that shows a protected triplet's place."""
    spec = config.get("extra")
    if not spec:
        return {}
    from .sources import drop_overlapping, load_extra
    root = spec.get("root") or os.path.dirname(config["data"].rstrip(os.sep))
    extra = load_extra(root, spec)
    protected = [load_sample(f) for f in protected_files]
    log: List = []
    kept = {k: drop_overlapping(v, protected, log=log) for k, v in extra.items()}
    config["split"]["extra_used"] = {k: [s.id for s in v] for k, v in kept.items()}
    config["split"]["extra_dropped_for_overlap"] = sorted(
        {s.id for k, v in extra.items() for s in v} - {s.id for v in kept.values() for s in v})
    config["split"]["extra_overlap_max"] = {"nir": max([x[2] for x in log] or [0.0]),
                                            "sar": max([x[3] for x in log if x[3] is not None] or [0.0])}
    return kept


@torch.no_grad()
def _validate(model, val_samples, device, multiple: int) -> Dict[str, float]:
    model.eval()
    l1s, psnrs = [], []
    for s in val_samples:
        h = s.clear.shape[1] // multiple * multiple
        w = s.clear.shape[2] // multiple * multiple
        opt = torch.from_numpy(s.cloudy[None, :, :h, :w]).to(device)
        sar = torch.from_numpy(s.sar[None, :, :h, :w]).to(device)
        pred = model(opt, sar)[0].clamp(0, 1)
        tgt = torch.from_numpy(s.clear[None, :, :h, :w]).to(device)
        l1s.append(float((pred - tgt).abs().mean()))
        psnrs.append(float(10 * torch.log10(1.0 / ((pred - tgt) ** 2).mean())))
    model.train()
    return {"val_l1": float(np.mean(l1s)), "val_psnr": float(np.mean(psnrs))}


def train(args) -> str:
    config = _config_from_args(args)
    if config["threads"]:
        torch.set_num_threads(int(config["threads"]))
    run = RunDir(args.out)
    device = pick_device(args.device)
    set_seed(config["seed"])
    train_files, val_files, held_files = _split(config["data"], config)
    config["split"] = {"train": [f.id for f in train_files], "val": [f.id for f in val_files],
                       "heldout_never_used": [f.id for f in held_files]}
    extra = _extra_sources(config, held_files + val_files)
    state = None if args.no_resume else run.load_checkpoint(map_location=device)
    if state is not None:
        saved = run.config()
        for key in ("model", "kind"):
            if saved.get(key) != config.get(key):
                raise SystemExit(f"{args.out} holds a run with a different '{key}'; use --no-resume or another --out")
    run.save_config(config)

    model = build_model(config["kind"], config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config.get("weight_decay", 0.0))
    ema = EMA(model, config["ema"]) if config["ema"] else None
    schedule = LossSchedule(**config["loss"])
    sharp_options = schedule.sharp_options()
    start, train_seconds = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        start, train_seconds = int(state["step"]), float(state.get("train_seconds", 0.0))
    steps, bs = int(config["steps"]), int(config["batch_size"])
    dataset = TripletDataset(train_files, config["crop"], seed=config["seed"], synthetic_p=config["synthetic_p"],
                             extra=extra, composite=config.get("composite"), extra_p=float(config.get("extra_p") or 0),
                             real_extra_p=float(config.get("real_extra_p") or 0))
    loader = torch.utils.data.DataLoader(dataset, batch_size=bs, sampler=StepSampler(start * bs, steps * bs),
                                         num_workers=int(config["num_workers"]), collate_fn=_collate)
    val_samples = [load_sample(f) for f in val_files]
    multiple = getattr(model, "size_multiple", 1)
    use_gate = bool(getattr(model, "gating", False))
    budget_s = float(config.get("time_budget_min") or 0) * 60

    from tqdm import tqdm
    bar = tqdm(total=steps, initial=start, desc=f"{config['kind']}", disable=getattr(args, "quiet", False),
               dynamic_ncols=True)
    step = start
    model.train()
    t_last = time.time()
    stopped_early = False
    for batch in loader:
        b = _batch_to(batch, device)
        lr = _lr_at(step, config)
        for g in optimizer.param_groups:
            g["lr"] = lr
        weights = schedule(step)
        restored, clear_prob, kl = model(b["optical"], b["sar"])
        gate = gate_target_for(schedule.gate_target, b["optical"], b["target"], b["mask"], b["has_mask"],
                               schedule.gate_tau) if use_gate else None
        loss, logged = total_loss(restored, b["target"], kl, weights,
                                  clear_prob if gate is not None else None,
                                  None if gate is None else 1.0 - gate[0], None if gate is None else gate[1],
                                  sharp=sharp_options)
        for name, kl_term in (getattr(model, "kl_terms", None) or {}).items():
            logged[f"kl_{name}"] = float(kl_term.detach())
        if use_gate:
            logged["clear_prob_mean"] = float(clear_prob.detach().mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"])
        optimizer.step()
        if ema is not None:
            ema.update(model)
        step += 1
        now = time.time()
        train_seconds += now - t_last
        t_last = now
        bar.update(1)
        if step % config["log_every"] == 0 or step == steps:
            bar.set_postfix(loss=f"{logged['loss']:.4f}", l1=f"{logged['loss_l1']:.4f}")
            run.log(step, lr=lr, train_seconds=train_seconds, **logged)
        out_of_time = budget_s > 0 and train_seconds >= budget_s
        if step % config["val_every"] == 0 or step == steps or out_of_time:
            eval_model = _eval_copy(model, ema)
            metrics = _validate(eval_model, val_samples, device, multiple) if val_samples else {}
            run.log(step, train_seconds=train_seconds, **metrics)
            if metrics:
                bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            t_last = time.time()
        if step % config["ckpt_every"] == 0 or step == steps or out_of_time:
            _save(run, step, model, optimizer, ema, train_seconds, config)
            t_last = time.time()
        if out_of_time and step < steps:
            stopped_early = True
            bar.write(f"time budget of {config['time_budget_min']} min reached at step {step}/{steps}")
            break
    bar.close()
    if step == start and state is None:
        _save(run, step, model, optimizer, ema, train_seconds, config)
    run.log(step, train_seconds=train_seconds, finished=float(not stopped_early))
    return run.path


def _eval_copy(model, ema):
    if ema is None:
        return model
    import copy
    m = copy.deepcopy(model)
    m.load_state_dict(ema.state_dict())
    return m


def _save(run, step, model, optimizer, ema, train_seconds, config):
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "train_seconds": train_seconds}
    if ema is not None:
        state["ema"] = ema.state_dict()
    run.save_checkpoint(step, state, keep_every=int(config.get("keep_every") or 0))


# ------------------------------------------------------------------------------------------
# export


def load_trained(run_dir: str, use_ema: bool = True):
    """(model in eval mode on CPU, config, checkpoint state) of a run folder."""
    run = RunDir(run_dir)
    config = run.config()
    state = run.load_checkpoint(map_location="cpu")
    if state is None:
        raise SystemExit(f"{run_dir} has no checkpoint")
    model = build_model(config["kind"], config)
    model.load_state_dict(state["ema"] if use_ema and "ema" in state else state["model"])
    return model.eval(), config, state


@torch.no_grad()
def heldout_metrics(model, data_dir: str, heldout: Optional[List[str]] = None) -> Dict:
    """Restoration metrics on the held-out samples (reflectance, clipped to [0, 1], data range 1):
    over all pixels and over cloudy pixels (cloud_mask == 1), for the model and the cloudy input.
    ``heldout``: the run's own held-out ids (its config's split); default ``splits.HELDOUT``."""
    from ...plugin.core.metrics.restoration import restoration_metrics
    files = {f.id: f for f in find_samples(data_dir)}
    ids = [i for i in (splits.HELDOUT if heldout is None else heldout) if i in files]
    acc: Dict[str, Dict[str, List[float]]] = {}
    for sid in ids:
        s = load_sample(files[sid])
        pred = model(torch.from_numpy(s.cloudy[None]), torch.from_numpy(s.sar[None]))[0][0].clamp(0, 1).numpy()
        pred = np.rint(pred * 10000) / 10000  # as written to the uint16 output
        for name, img in (("model", pred), ("cloudy_input", s.cloudy)):
            acc.setdefault(f"{name}_all", {})
            for k, v in restoration_metrics(img, s.clear, 1.0).items():
                acc[f"{name}_all"].setdefault(k, []).append(v)
            if s.mask is not None and s.mask[0].any():
                acc.setdefault(f"{name}_cloudy", {})
                for k, v in restoration_metrics(img, s.clear, 1.0, s.mask[0] > 0).items():
                    acc[f"{name}_cloudy"].setdefault(k, []).append(v)
    out = {k: {m: round(float(np.mean(v)), 4) for m, v in d.items()} for k, d in acc.items()}
    out["samples"] = ids
    return out


# as reported in ../shared/data/README.md
_EXTRA_LICENCES = {"bigearthnet": "BigEarthNet (CDLA-Permissive-1.0 reported)", "ssl4eo": "SSL4EO-S12 (CC-BY-4.0)",
                   "sen12ms_s1s2": "SEN12MS (CC-BY-4.0 reported)", "sen12mscr_ts": "SEN12MS-CR-TS (CC-BY-4.0 reported)"}


def build_card(config: Dict, state: Dict, metrics: Optional[Dict], diff: Optional[float] = None) -> Dict:
    kind = config["kind"]
    multiple = 2 ** config.get("model", {}).get("depth", 2) if kind == "ibhfn" else 1
    gating = kind == "ibhfn" and config.get("model", {}).get("gating", True)
    name = config.get("name") or f"{kind}-custom"
    if kind == "ibhfn":
        mcfg = config.get("model", {})
        from .network import bottleneck_mode
        placement = {"deep": "on the deepest SAR features", "all": "on every SAR path that reaches the decoder",
                     "none": "off (plain concat)"}[bottleneck_mode(mcfg.get("bottleneck", True))]
        clear = {"identity": "a Dirac-initialised optical skip",
                 "affine": "a Dirac-initialised optical skip corrected by smooth per-band gain/offset maps",
                 "residual": "a Dirac-initialised optical skip plus a residual correction head"}[
            mcfg.get("clear_path", "identity")]
        description = ("IB-HFN SAR-assisted cloud removal: dual-stream SAR/optical encoders, variational "
                       f"information bottleneck {placement}, local-global clear-sky gating with {clear}. "
                       "Output = m*clear_path(optical) + (1-m)*decoder(fused).")
    else:
        description = ("DSen2-CR-style baseline: concat(S1, S2) -> residual blocks -> + S2. Has no cloud "
                       "estimate: clear_probability is a constant 0 (cloud probability 1 everywhere).")
    return {
        "schema_version": 1,
        "name": name,
        "version": str(config.get("version", "1.0.0")),
        "task": "sar_cloud_removal",
        "description": description,
        "inputs": [
            {"name": "optical", "role": "optical", "bands": card_bands(S2_BANDS), "resampling": "bilinear",
             "description": "cloudy Sentinel-2 L1C, 13 bands in SEN12MS order"},
            {"name": "sar", "role": "sar", "bands": card_bands(S1_BANDS), "resampling": "bilinear",
             "description": "Sentinel-1 GRD VV, VH backscatter in dB, aligned to the optical grid"},
        ],
        "outputs": [
            {"name": "restored", "role": "optical", "bands": card_bands(S2_BANDS), "dtype": "uint16", "nodata": 0,
             "description": "cloud-free Sentinel-2 L1C estimate, 13 bands, DN"},
            {"name": "clear_probability", "role": "auxiliary", "dtype": "float32",
             "bands": [{"name": "clear_probability", "meaning": "probability that the pixel is clear "
                        "(cloud probability = 1 - value)" + ("" if gating else "; constant 0: no cloud estimate"),
                        "clip": [0.0, 1.0], "scale": 1.0, "offset": 0.0}],
             "description": "clear-sky map m of the gating head" if gating else "constant 0 (no cloud estimate)"},
        ],
        "tiling": {"tile_size": int(config.get("tile_size", 256)), "size_multiple": multiple,
                   "default_overlap": int(config.get("default_overlap", 32))},
        "training": {
            "data": "SEN12MS-CR triplets from ../shared/data/sen12mscr (Oriolac/cloud-removal test patches, "
                    "256x256, no CRS)" if "sen12mscr" in config.get("data", "") else config.get("data", ""),
            "split": config.get("split", {}),
            "steps": int(state.get("step", 0)),
            "planned_steps": int(config.get("steps", 0)),
            "train_seconds": round(float(state.get("train_seconds", 0.0)), 1),
            "batch_size": config.get("batch_size"), "crop": config.get("crop"),
            "synthetic_cloud_p": config.get("synthetic_p"),
            "composite": config.get("composite"),
            "extra_sources": config.get("split", {}).get("extra_used", {}),
            "seed": config.get("seed"), "model": config.get("model", {}), "loss": config.get("loss", {}),
            "metrics": metrics or {},
            "metrics_note": "held-out samples never seen in training/validation; reflectance in [0,1], "
                            "PSNR data range 1, SSIM 11x11 Gaussian sigma 1.5, SAM degrees; "
                            "'cloudy' = pixels with cloud_mask == 1",
            "onnx_vs_torch_max_abs_diff": diff,
        },
        "license": "CC-BY-4.0 (trained on SEN12MS-CR samples, contains modified Copernicus Sentinel data)" + (
            "; extra training data: " + ", ".join(sorted({_EXTRA_LICENCES[i.split("/")[0]] for v in config.get(
                "split", {}).get("extra_used", {}).values() for i in v if i.split("/")[0] in _EXTRA_LICENCES}))
            if any(config.get("split", {}).get("extra_used", {}).values()) else ""),
        "extra": {"kind": kind, "published_anchor": "DSen2-CR on full SEN12MS-CR: 27.76 dB / SSIM 0.874 / SAM 9.47",
                  # the zoo should prefer IB-HFN over the baseline as the task's default model
                  "default_for_task": kind == "ibhfn", "baseline": kind == "dsen2cr"},
    }


def export(run_dir: str, out_path: str, args=None) -> float:
    from ..common.onnx_export import export_with_card
    model, config, state = load_trained(run_dir)
    data_dir = config.get("data", "")
    sample_path = getattr(args, "sample", None) if args is not None else None
    files = find_samples(sample_path) if sample_path else []
    heldout = config.get("split", {}).get("heldout_never_used")
    heldout = list(splits.HELDOUT) if heldout is None else list(heldout)
    if not files and os.path.isdir(data_dir):
        all_files = {f.id: f for f in find_samples(data_dir)}
        files = [all_files[i] for i in heldout if i in all_files] or list(all_files.values())
    multiple = getattr(model, "size_multiple", 1)
    if files:
        s = load_sample(files[0])
        t = min(256, s.clear.shape[1] // multiple * multiple, s.clear.shape[2] // multiple * multiple)
        example = {"optical": torch.from_numpy(s.cloudy[None, :, :t, :t].copy()),
                   "sar": torch.from_numpy(s.sar[None, :, :t, :t].copy())}
        sample_name = files[0].id
    else:  # no real data reachable: random example (reported as such)
        g = torch.Generator().manual_seed(0)
        example = {"optical": torch.rand(1, 13, 64, 64, generator=g), "sar": torch.rand(1, 2, 64, 64, generator=g)}
        sample_name = "random"
    metrics = heldout_metrics(model, data_dir, heldout) if os.path.isdir(data_dir) and heldout else {}
    card = build_card(config, state, metrics)
    diff = export_with_card(model, example, ["restored", "clear_probability"], card, out_path)
    card["training"]["onnx_vs_torch_max_abs_diff"] = diff
    card["training"]["onnx_check_sample"] = sample_name
    from ...plugin.core.model_card import read_card, write_card
    write_card(out_path, card)
    read_card(out_path)
    size_mb = os.path.getsize(out_path) / 2 ** 20
    md_path = os.path.splitext(out_path)[0] + ".md"
    with open(md_path, "w") as f:
        f.write(card_markdown(card, os.path.basename(out_path), size_mb))
    print(f"wrote {out_path} ({size_mb:.2f} MiB), ONNX vs torch max abs diff {diff:.3g} on {sample_name}")
    if metrics:
        print("held-out metrics:", json.dumps(metrics))
    return diff


def card_markdown(card: Dict, file_name: str, size_mb: float) -> str:
    """Human-readable model card (written beside the ONNX file as ``<model>.md``)."""
    tr = card["training"]
    lines = [f"# {card['name']} {card['version']} (`{file_name}`, {size_mb:.2f} MiB)", "",
             card["description"], "",
             f"- task: `{card['task']}`; tiling: tile {card['tiling']['tile_size']}, size multiple "
             f"{card['tiling']['size_multiple']}, default overlap {card['tiling']['default_overlap']}",
             "- inputs: " + "; ".join(f"`{t['name']}` ({t['role']}: " + ", ".join(
                 f"{b['name']} clip {b['clip']} -> (v - {b['offset']:g}) / {b['scale']:g}" for b in t["bands"][:2])
                 + (", ..." if len(t["bands"]) > 2 else "") + ")" for t in card["inputs"]),
             "- outputs: " + "; ".join(f"`{t['name']}` ({len(t['bands'])} band(s), {t.get('dtype')}, nodata "
                                       f"{t.get('nodata')})" for t in card["outputs"]),
             f"- training data: {tr.get('data')}",
             f"- split: train {tr.get('split', {}).get('train')}, validation {tr.get('split', {}).get('val')}, "
             f"held out (never seen) {tr.get('split', {}).get('heldout_never_used')}",
             f"- steps: {tr.get('steps')} of {tr.get('planned_steps')} planned, batch {tr.get('batch_size')}, "
             f"crop {tr.get('crop')}, synthetic cloud compositing p = {tr.get('synthetic_cloud_p')}, "
             f"seed {tr.get('seed')}, {tr.get('train_seconds')} s of training on CPU",
             f"- model options: `{json.dumps(tr.get('model'))}`",
             f"- loss: `{json.dumps(tr.get('loss'))}`",
             "- extra training sources (never an evaluation triplet's place): " + (
                 "; ".join(f"{k}: {', '.join(v)}" for k, v in tr.get("extra_sources", {}).items() if v) or "none"),
             f"- synthetic composites: `{json.dumps(tr.get('composite'))}` (null = 1.x additive paste)",
             f"- ONNX vs torch max abs diff: {tr.get('onnx_vs_torch_max_abs_diff')} (sample "
             f"{tr.get('onnx_check_sample')})", f"- license: {card['license']}", "",
             "## Held-out metrics (from the card)", "", tr.get("metrics_note", ""), "",
             "| | PSNR | SSIM | SAM (deg) | MAE |", "|---|---|---|---|---|"]
    for key, values in tr.get("metrics", {}).items():
        if isinstance(values, dict):
            lines.append(f"| {key} | {values.get('psnr')} | {values.get('ssim')} | {values.get('sam')} | "
                         f"{values.get('mae')} |")
    lines += ["", "Samples: " + ", ".join(tr.get("metrics", {}).get("samples", [])), ""]
    return "\n".join(lines)
