"""k-fold cross-validation of IB-HFN against the DSen2-CR-style baseline over the SEN12MS-CR triplets.

    python -m skyclear.models.ibhfn.cv --folds 5 --minutes-per-model 7 --out /work/runs/ibhfn-cv
    python benchmarks/quality_sar_cloud_removal.py --cv /work/runs/ibhfn-cv

One process, torch with one thread, resumable: run the same command again after a stop and
finished folds/models are skipped, an interrupted training resumes from its checkpoint.

- Folds: the triplets sorted by cloud fraction (then id) and dealt in snake order, so each
  fold mixes clear and cloudy samples (15 triplets, 5 folds -> 3 per fold). Written to
  ``<out>/plan.json`` on the first run and reused.
- Per fold, every model (``ibhfn``, ``baseline`` and any ``--variant``/``--ablations``) is
  trained on the other folds' triplets (+ the configs' extra sources, minus anything that
  shows a test triplet's place, see ``sources.drop_overlapping``) with the same seed, hence
  the same batches where the data recipe is the same, and the **same number of steps**.
  The step count is fixed once: ``--steps N``, or from ``--minutes-per-model M`` as
  M * 60 / (the slowest model's measured seconds per step), so every model gets identical
  steps and the slowest takes about M minutes. Warm-up/delay of the loss schedule are scaled
  from the configs' ``steps`` to this count. No validation set, no early stopping: the final
  (EMA) weights are evaluated.
- Evaluation on the fold's held-out triplets (never seen in its training), full 256x256,
  outputs rounded to uint16 DN: one JSON file per (fold, model) with per-sample rows
  (``evaluate.sample_row`` + ``stripe_index``), plus the cloudy input and the target's SAR
  edge correlation, and clear scenes reserved from training (``--clear-scene``, default
  the snowy BigEarthNet patch 57_38, excluded from the configs' extra sources) evaluated as
  "do no harm" checks: there input = clear image, so any change is harm. Outputs are scored as
  the tool writes them by default (``as_the_tool_writes``: the snow test keeps snow and ice);
  the raw network's PSNR is kept beside (``raw_psnr``, ``raw_psnr_vs_input``).
  ``--reevaluate`` scores the finished models again after a change of the evaluation.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIGS = os.path.join(REPO, "models", "configs")
DEFAULT_DATA = os.path.join(REPO, "..", "shared", "data", "sen12mscr")

# name -> overrides of the ibhfn config (each undoes one 2.0 change); --ablations picks by key
ABLATIONS: Dict[str, Tuple[str, List[str]]] = {
    "gate-mask": ("gate target: s2cloudless mask (1.x)", ['loss.gate_target="mask"']),
    "gate-none": ("gate target: none", ['loss.gate_target="none"']),
    "clear-identity": ("clear path: identity (1.x)", ['model.clear_path="identity"']),
    "clear-residual": ("clear path: residual head", ['model.clear_path="residual"']),
    "composite-v1": ("composites: 1.x additive paste", ["composite=null"]),
    "bottleneck-deep": ("bottleneck: deepest level only (1.x)", ['model.bottleneck="deep"']),
    # ibhfn-small.json went back to "deep" after the session-19 CV; this is the 2.0 placement it was tested against
    "bottleneck-all": ("bottleneck: every SAR path (2.0 as cross-validated)", ['model.bottleneck="all"']),
    "no-sar-skips": ("bottleneck: deep only, SAR skips removed", ['model.bottleneck="deep"', "model.sar_skips=false"]),
    "sharp-ratio": ("sharpness: 1.x ratio", ['loss.sharp_mode="ratio"']),
    "no-extra": ("no extra sources", ["extra=null", "extra_p=0", "real_extra_p=0"]),
}


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S "), msg, flush=True)


def assign_folds(cloud_fraction: Dict[str, float], k: int) -> List[List[str]]:
    """Sort ids by (cloud fraction, id) and deal them to ``k`` folds in snake order."""
    if k < 2 or k > len(cloud_fraction):
        raise SystemExit(f"--folds must be between 2 and the number of triplets ({len(cloud_fraction)}), got {k}")
    order = sorted(cloud_fraction, key=lambda i: (cloud_fraction[i], i))
    folds: List[List[str]] = [[] for _ in range(k)]
    for n, sid in enumerate(order):
        r, c = divmod(n, k)
        folds[c if r % 2 == 0 else k - 1 - c].append(sid)
    return [sorted(f) for f in folds]


def _set(config: Dict, key: str, value) -> None:
    target = config
    parts = key.split(".")
    for p in parts[:-1]:
        target[p] = dict(target.get(p) or {})
        target = target[p]
    target[parts[-1]] = value


def apply_overrides(config: Dict, items: Sequence[str]) -> Dict:
    config = json.loads(json.dumps(config))
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"override {item!r} is not KEY=JSON")
        try:
            _set(config, key.strip(), json.loads(value))
        except json.JSONDecodeError as e:
            raise SystemExit(f"override {item!r}: value is not JSON ({e})") from None
    return config


def parse_variant(text: str) -> Tuple[str, List[str]]:
    """``NAME=key=json;key=json`` -> (NAME, [key=json, ...])."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"--variant {text!r} is not NAME=key=json[;key=json...]")
    return name.strip(), [x for x in rest.split(";") if x.strip()]


def _load_json(path: str) -> Dict:
    with open(path) as f:
        return json.load(f)


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, default=float)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------


def make_plan(args) -> Dict:
    from .data import find_samples, read_tif
    files = find_samples(args.data)
    if not files:
        raise SystemExit(f"no SEN12MS-CR triplets under {args.data}")
    fractions = {}
    for f in files:
        if not f.cloud_mask:
            raise SystemExit(f"triplet {f.id} has no cloud_mask.tif: folds and cloudy-pixel metrics need it")
        fractions[f.id] = float((read_tif(f.cloud_mask)[0] > 0).mean())
    ibhfn = apply_overrides(_load_json(args.ibhfn_config), args.set + args.ibhfn_set)
    baseline = apply_overrides(_load_json(args.baseline_config), args.set + args.baseline_set)
    models = {"ibhfn": {"kind": "ibhfn", "label": "IB-HFN", "config": ibhfn},
              "baseline": {"kind": "dsen2cr", "label": "DSen2-CR-style baseline", "config": baseline}}
    plan = {"data": os.path.abspath(args.data), "folds": assign_folds(fractions, args.folds),
            "cloud_fraction": fractions, "seed": args.seed, "models": models, "clear_scenes": list(args.clear_scene),
            "steps": args.steps or None, "minutes_per_model": args.minutes_per_model,
            "budget": "same number of steps for every model"}
    for m in models.values():
        _reserve_clear_scenes(m["config"], plan["clear_scenes"])
    add_variants(plan, args)
    return plan


def _reserve_clear_scenes(config: Dict, scenes: Sequence[str]) -> None:
    extra = config.get("extra")
    if extra:  # the clear scenes are for the do-no-harm check: never training data
        extra["exclude"] = sorted(set(extra.get("exclude", [])) | set(scenes))


def add_variants(plan: Dict, args) -> List[str]:
    """Add the ``--variant``/``--ablations`` models not yet in the plan (IB-HFN's config of the
    plan + overrides); returns the new names. Variants can be added to a finished CV later:
    they get the plan's folds, seed and step count."""
    variants = [parse_variant(v) for v in args.variant]
    for key in [a.strip() for a in args.ablations.split(",") if a.strip()]:
        if key not in ABLATIONS:
            raise SystemExit(f"unknown ablation {key!r}; known: {', '.join(ABLATIONS)}")
        variants.append((key, ABLATIONS[key][1]))
    added = []
    for name, items in variants:
        if name in plan["models"]:
            if plan["models"][name].get("overrides") != items:
                raise SystemExit(f"variant name {name!r} is taken in {args.out} with other overrides")
            continue
        label = ABLATIONS[name][0] if name in ABLATIONS and ABLATIONS[name][1] == items else name
        config = apply_overrides(plan["models"]["ibhfn"]["config"], items)
        _reserve_clear_scenes(config, plan["clear_scenes"])
        plan["models"][name] = {"kind": "ibhfn", "label": label, "overrides": items, "config": config}
        added.append(name)
    return added


def measure_seconds_per_step(plan: Dict, train_ids: List[str], steps: int = 8,
                             device: str = "cpu") -> Dict[str, float]:
    """Median seconds per training step (data + forward + backward + optimiser) of each model."""
    import torch
    from .data import TripletDataset, find_samples
    from .losses import LossSchedule, gate_target_for, total_loss
    from .network import build_model
    from .sources import load_extra
    by_id = {f.id: f for f in find_samples(plan["data"])}
    out = {}
    for name, m in plan["models"].items():
        cfg = m["config"]
        extra = load_extra(os.path.dirname(plan["data"].rstrip(os.sep)), cfg["extra"]) if cfg.get("extra") else {}
        ds = TripletDataset([by_id[i] for i in train_ids], cfg["crop"], seed=plan["seed"],
                            synthetic_p=cfg.get("synthetic_p", 0.3), extra=extra, composite=cfg.get("composite"),
                            extra_p=cfg.get("extra_p", 0), real_extra_p=cfg.get("real_extra_p", 0))
        for i in range(len(ds.files)):   # load (and cache) the triplets first: not part of a step
            ds.sample(i)
        torch.manual_seed(0)
        model = build_model(m["kind"], cfg).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        schedule = LossSchedule(**cfg["loss"])
        w = schedule(10 ** 6)
        times = []
        for s in range(steps + 1):
            t = time.perf_counter()
            items = [ds[s * cfg["batch_size"] + j] for j in range(cfg["batch_size"])]
            b = {k: torch.as_tensor(np.stack([it[k] for it in items])).to(device) for k in items[0]}
            restored, clear, kl = model(b["optical"], b["sar"])
            gate = gate_target_for(schedule.gate_target, b["optical"], b["target"], b["mask"], b["has_mask"]) \
                if getattr(model, "gating", False) else None
            loss, _ = total_loss(restored, b["target"], kl, w, clear if gate is not None else None,
                                 None if gate is None else 1 - gate[0], None if gate is None else gate[1],
                                 sharp=schedule.sharp_options())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if s:
                times.append(time.perf_counter() - t)
        out[name] = float(np.median(times))
    return out


def run_config(plan: Dict, name: str, fold: int, steps: int, workers: int = 0) -> Dict:
    """The trainer config of model ``name`` in ``fold`` (explicit split, scaled schedule, no validation)."""
    m = plan["models"][name]
    cfg = json.loads(json.dumps(m["config"]))
    scale = steps / max(1, int(cfg.get("steps") or steps))
    loss = dict(cfg.get("loss", {}))
    for key in ("warmup", "delay", "kl_warmup"):
        if key in loss and loss[key] is not None:
            loss[key] = int(round(loss[key] * scale))
    test = plan["folds"][fold]
    train_ids = sorted(i for f in plan["folds"] for i in f if i not in test)
    cfg.update({"kind": m["kind"], "loss": loss, "steps": steps, "val_every": steps, "time_budget_min": 0,
                "threads": 1, "num_workers": workers, "train_ids": train_ids, "val_ids": [], "test_ids": list(test),
                "ckpt_every": max(10, min(int(cfg.get("ckpt_every") or 100), steps)), "name": f"{name}-fold{fold}"})
    return cfg


def train_one(run_dir: str, config: Dict, data: str, seed: int, device: str = "cpu") -> None:
    from .trainer import train
    os.makedirs(run_dir, exist_ok=True)
    cfg_path = os.path.join(run_dir, "cv_config.json")
    _write_json(cfg_path, config)
    ns = argparse.Namespace(config=cfg_path, kind=config["kind"], data=data, out=run_dir, set=[], device=device,
                            seed=seed, no_resume=False, threads=config.get("threads", 1), quiet=True)
    train(ns)


def evaluate_fold(plan: Dict, fold: int, run_dir: Optional[str]) -> Dict:
    """Rows of one trained model (``run_dir``) or of the cloudy input (``run_dir`` None)."""
    from .data import find_samples, load_sample
    from .evaluate import quantise, sample_row, stripe_index, torch_predictor
    by_id = {f.id: f for f in find_samples(plan["data"])}
    predict = None
    info: Dict = {}
    if run_dir is not None:
        from .trainer import load_trained
        model, config, state = load_trained(run_dir)
        predict = torch_predictor(model)
        info = {"steps": int(state.get("step", 0)), "train_seconds": float(state.get("train_seconds", 0.0)),
                "extra_used": config.get("split", {}).get("extra_used", {}),
                "extra_dropped_for_overlap": config.get("split", {}).get("extra_dropped_for_overlap", []),
                "train_ids": config.get("split", {}).get("train", [])}
    rows = []
    for sid in plan["folds"][fold]:
        s = load_sample(by_id[sid])
        mask = s.mask[0] if s.mask is not None else None
        if predict is None:
            row = sample_row(s.cloudy, s.cloudy, s.clear, s.sar, mask)
            row["target_sar_edge_corr"] = sample_row(s.clear, s.cloudy, s.clear, s.sar, mask)["sar_edge_corr"]
        else:
            raw = predict(s.cloudy, s.sar)
            out = as_the_tool_writes(raw, s.cloudy)
            row = sample_row(out, s.cloudy, s.clear, s.sar, mask)
            row["stripe_index"] = stripe_index(predict, s.cloudy, s.sar, raw)
            row["raw_psnr"] = sample_row(raw, s.cloudy, s.clear, s.sar, mask)["all"]["psnr"]
        row["sample"] = sid
        row["cloud_fraction"] = plan["cloud_fraction"][sid]
        rows.append(row)
    clear_rows = []
    if predict is not None:
        from ...plugin.core.metrics.restoration import restoration_metrics
        for scene in _clear_scenes(plan):
            raw = predict(scene.clear, scene.sar)
            m = restoration_metrics(quantise(as_the_tool_writes(raw, scene.clear)), quantise(scene.clear), 1.0)
            m_raw = restoration_metrics(quantise(raw), quantise(scene.clear), 1.0)
            clear_rows.append({"scene": scene.id, "psnr_vs_input": m["psnr"], "sam_vs_input": m["sam"],
                               "mae_vs_input": m["mae"], "ssim_vs_input": m["ssim"],
                               "raw_psnr_vs_input": m_raw["psnr"], "raw_sam_vs_input": m_raw["sam"]})
    return dict(info, fold=fold, rows=rows, clear_scenes=clear_rows, postprocess=POSTPROCESS)


POSTPROCESS = "snow test (the tool's KEEP_SNOW default)"
# clear scenes kept out of every training config ("exclude") for the do-no-harm check: a snowy winter patch
DEFAULT_CLEAR_SCENES = ("bigearthnet/57_38",)


def as_the_tool_writes(pred: np.ndarray, optical: np.ndarray) -> np.ndarray:
    """The job's default post-processing of a (13, H, W) reflectance prediction: snow and ice keep
    the input (``keep_snow``), so the benchmark scores what a user gets."""
    from ...plugin.core.pipelines.sar_cloud_removal import keep_snow, snow_weight
    from ...plugin.core.tools import S2_BANDS
    weight = snow_weight(optical, S2_BANDS)
    return pred if weight is None else keep_snow(pred, optical, weight)[0]


_CLEAR_CACHE: Dict[str, list] = {}


def _clear_scenes(plan: Dict):
    key = ",".join(plan["clear_scenes"])
    if key not in _CLEAR_CACHE:
        from .sources import load_bigearthnet
        root = os.path.dirname(plan["data"].rstrip(os.sep))
        scenes = []
        for sid in plan["clear_scenes"]:
            if not sid.startswith("bigearthnet/"):
                raise SystemExit(f"clear scene {sid!r}: only bigearthnet/<patch> scenes are supported")
            found = [s for s in load_bigearthnet(os.path.join(root, "bigearthnet_s1s2")) if s.id == sid]
            if not found:
                raise SystemExit(f"clear scene {sid!r} not found under {root}/bigearthnet_s1s2")
            scenes += found
        _CLEAR_CACHE[key] = scenes
    return _CLEAR_CACHE[key]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m skyclear.models.ibhfn.cv", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="CV folder (created; an existing one is resumed)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--minutes-per-model", type=float, default=7.0,
                    help="training minutes of the slowest model per fold (sets the common step count)")
    ap.add_argument("--steps", type=int, default=0, help="common step count (overrides --minutes-per-model)")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--ibhfn-config", default=os.path.join(CONFIGS, "ibhfn-small.json"))
    ap.add_argument("--baseline-config", default=os.path.join(CONFIGS, "dsen2cr-small.json"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                    help="override for IB-HFN and the baseline (data recipe, crop, batch, ...)")
    ap.add_argument("--ibhfn-set", action="append", default=[], metavar="KEY=JSON",
                    help="override for IB-HFN (and its variants) only, e.g. model.width=24")
    ap.add_argument("--baseline-set", action="append", default=[], metavar="KEY=JSON",
                    help="override for the baseline only")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=JSON[;KEY=JSON]",
                    help="an extra IB-HFN model with these overrides (ablation)")
    ap.add_argument("--ablations", default="", help="comma list of predefined ablations: " + ", ".join(ABLATIONS))
    ap.add_argument("--clear-scene", action="append", default=None, metavar="bigearthnet/PATCH",
                    help="clear georeferenced scene kept out of training for the do-no-harm check "
                         "(default bigearthnet/57_38, a snowy winter patch)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only-folds", default="", help="comma list of fold numbers to run now (default all)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]; evaluation always runs on the CPU")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers (0 on the shared CPU machine)")
    ap.add_argument("--reevaluate", action="store_true",
                    help="only evaluate again every finished (fold, model) from its saved weights (after a change "
                         "of the evaluation); trains nothing")
    args = ap.parse_args(argv)
    if args.clear_scene is None:
        args.clear_scene = list(DEFAULT_CLEAR_SCENES)

    import torch
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    plan_path = os.path.join(args.out, "plan.json")
    if os.path.exists(plan_path):
        plan = _load_json(plan_path)
        added = add_variants(plan, args)
        if added:
            _write_json(plan_path, plan)
        log(f"resuming {args.out}: {len(plan['folds'])} folds, models {list(plan['models'])}"
            f"{f' (added {added})' if added else ''}, {plan['steps']} steps each (the plan is fixed: "
            "--set/--*-config/--steps/--minutes-per-model of this command are ignored)")
    else:
        plan = make_plan(args)
        _write_json(plan_path, plan)
        log(f"new plan in {plan_path}: folds {plan['folds']}")
    if not plan.get("steps"):
        first_train = sorted(i for f in plan["folds"][1:] for i in f)
        sps = measure_seconds_per_step(plan, first_train, device=args.device)
        plan["seconds_per_step_measured"] = sps
        plan["steps"] = max(10, int(plan["minutes_per_model"] * 60 / max(sps.values())))
        _write_json(plan_path, plan)
        log(f"seconds per step {json.dumps({k: round(v, 3) for k, v in sps.items()})} -> "
            f"{plan['steps']} steps per model ({plan['minutes_per_model']} min for the slowest)")
    steps = int(plan["steps"])
    only = {int(x) for x in args.only_folds.split(",") if x.strip()}
    t0 = time.time()
    for fold in range(len(plan["folds"])):
        if only and fold not in only:
            continue
        fold_dir = os.path.join(args.out, f"fold{fold}")
        os.makedirs(fold_dir, exist_ok=True)
        inp = os.path.join(fold_dir, "cloudy_input.json")
        if not os.path.exists(inp):
            _write_json(inp, dict(evaluate_fold(plan, fold, None), model="cloudy input"))
        for name in plan["models"]:
            result = os.path.join(fold_dir, f"{name}.json")
            if args.reevaluate:
                if os.path.exists(result):
                    res = evaluate_fold(plan, fold, os.path.join(fold_dir, name))
                    _write_json(result, dict(res, model=name, label=plan["models"][name]["label"]))
                    log(f"fold {fold} {name}: evaluated again")
                continue
            if os.path.exists(result):
                log(f"fold {fold} {name}: done, skipped")
                continue
            run_dir = os.path.join(fold_dir, name)
            t = time.time()
            log(f"fold {fold} {name}: training {steps} steps on {len(plan['folds']) - 1} folds, "
                f"test {plan['folds'][fold]}")
            train_one(run_dir, run_config(plan, name, fold, steps, args.workers), plan["data"], plan["seed"],
                      args.device)
            res = evaluate_fold(plan, fold, run_dir)
            res.update(model=name, label=plan["models"][name]["label"])
            _write_json(result, res)
            psnr = np.mean([r["all"]["psnr"] for r in res["rows"]])
            per = ", ".join("%s %.2f" % (r["sample"], r["all"]["psnr"]) for r in res["rows"])
            log(f"fold {fold} {name}: {time.time() - t:.0f} s, held-out PSNR {psnr:.2f} dB ({per})")
    log(f"finished in {time.time() - t0:.0f} s; table: python benchmarks/quality_sar_cloud_removal.py --cv {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
