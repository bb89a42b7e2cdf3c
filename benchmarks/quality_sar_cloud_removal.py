"""Quality of SAR-assisted cloud removal on the held-out SEN12MS-CR samples.

    python benchmarks/quality_sar_cloud_removal.py                    # bundled models
    python benchmarks/quality_sar_cloud_removal.py --train-ablations 300 --ablation-dir runs/ablations

Evaluates, on the held-out samples fixed in ``skyclear.models.ibhfn.splits.HELDOUT`` (never
used for training or validation): the cloudy input itself, the DSen2-CR-style baseline and
IB-HFN (plus IB-HFN with "keep clear pixels", and any ablation models), through the ONNX
files and the plugin's tile processor, with the card pre/postprocessing (output written as
uint16 DN like the plugin does, after the tool's default snow test). Metrics (``plugin/core/metrics/restoration.py``) on
reflectance = clip(DN, 0, 10000) / 10000: PSNR (data range 1), SSIM (11x11 Gaussian,
sigma 1.5), SAM (degrees), MAE; averaged over samples; over all pixels and over the cloudy
pixels (cloud_mask == 1) only. Then "do no harm": every model on clear scenes that no training run
sees (``cv.DEFAULT_CLEAR_SCENES``), scored against their own input.

``--train-ablations STEPS`` trains, with the small preset shortened to STEPS steps, four
runs with identical data/seed/budget: the full IB-HFN and the three ablations (no
bottleneck = plain concat fusion, no gating, no Dirac skip), exports them and adds them to
the table. ``--ablation NAME=PATH`` adds already exported ONNX files.

``--cv DIR`` prints the cross-validation tables of a ``python -m skyclear.models.ibhfn.cv``
folder instead (every triplet held out once): per-sample paired differences (IB-HFN -
baseline, each - cloudy input) with a bootstrap 95 % CI (10 000 resamples of the samples),
PSNR/SSIM/SAM on all and on cloudy pixels; "do no harm" (triplets with < 5 % cloud: PSNR
- cloudy input; clear scenes kept out of training: PSNR of the output against the clear
input); SAR structure under cloud (``models/ibhfn/evaluate.py``); the stripe index; the
ablation table of any variants; per-sample PSNR. Works on a partial run (finished folds).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from skyclear.models.ibhfn import splits
from skyclear.models.ibhfn.cv import DEFAULT_CLEAR_SCENES, as_the_tool_writes
from skyclear.models.ibhfn.data import S1_BANDS, find_samples, preprocess, read_tif
from skyclear.models.ibhfn.evaluate import hf_anisotropy, sar_edge_correlation
from skyclear.plugin.core.engine import postprocess, to_network
from skyclear.plugin.core.metrics.restoration import restoration_metrics
from skyclear.plugin.core.model_card import read_card
from skyclear.plugin.core.raster_io import to_dtype
from skyclear.plugin.core.pipelines.sar_cloud_removal import (SarCloudRemovalProcessor, cloud_probability,
                                                              keep_clear_pixels)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "sen12mscr"
ABLATIONS = {
    "ibhfn (same short budget)": [],
    "no bottleneck (concat fusion)": ["model.bottleneck=false"],
    "no gating": ["model.gating=false"],
    "no Dirac skip": ["model.dirac_skip=false"],
}


def card_pre(raw: np.ndarray, spec) -> np.ndarray:
    """The engine's own input scaling (non-finite pixels enter as 0, as in the plugin)."""
    raw = raw.astype(np.float32)
    return to_network(raw, np.isfinite(raw).all(axis=0), spec)


def card_post(net: np.ndarray, spec) -> np.ndarray:
    """The engine's own output scaling and cast, as the plugin writes it."""
    return to_dtype(postprocess(net.astype(np.float32), spec), spec.dtype or "float32")


def refl(dn: np.ndarray) -> np.ndarray:
    return np.clip(dn.astype(np.float64), 0, 10000) / 10000.0


def run_model(path: str, raw_opt: np.ndarray, raw_sar: np.ndarray):
    import onnxruntime as ort
    card = read_card(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    proc = SarCloudRemovalProcessor(session, card)
    opt_spec, sar_spec = card.inputs_with_role("optical")[0], card.inputs_with_role("sar")[0]
    out = proc({opt_spec.name: card_pre(raw_opt, opt_spec)[None], sar_spec.name: card_pre(raw_sar, sar_spec)[None]},
               [(0, 0)])
    restored = card_post(out[proc.restored_name][0], card.output(proc.restored_name))
    clear = out[proc.clear_name][0] if proc.clear_name else np.zeros((1,) + restored.shape[1:], np.float32)
    return restored, clear


def evaluate(models, data_dir, keep_clear_threshold=0.5):
    files = {f.id: f for f in find_samples(str(data_dir))}
    ids = [i for i in splits.HELDOUT if i in files]
    if not ids:
        raise SystemExit(f"none of the held-out samples {splits.HELDOUT} found under {data_dir}")
    rows = {}

    def add(name, pred_dn, clear, mask, sar_net=None, stripes=None):
        r = rows.setdefault(name, {"all": [], "cloudy": [], "edge": [], "stripes": []})
        r["all"].append(restoration_metrics(refl(pred_dn), clear, 1.0))
        if mask.any():
            r["cloudy"].append(restoration_metrics(refl(pred_dn), clear, 1.0, mask))
        if sar_net is not None:
            r["edge"].append(sar_edge_correlation(refl(pred_dn), sar_net, mask))
        if stripes is not None:
            r["stripes"].append(stripes)

    for sid in ids:
        f = files[sid]
        opt, sar, tgt = read_tif(f.s2_cloudy), read_tif(f.s1), read_tif(f.s2_cloudfree)
        mask = read_tif(f.cloud_mask)[0] > 0
        clear = refl(tgt)
        sar_net = preprocess(sar, S1_BANDS)
        add("cloudy input", opt, clear, mask, sar_net)
        add("cloud-free target (reference)", tgt, clear, mask, sar_net)
        for name, path in models:
            restored, clear_prob = run_model(path, opt, sar)
            restored = np.rint(as_the_tool_writes(refl(restored), refl(opt)) * 10000.0)
            flipped, _ = run_model(path, np.ascontiguousarray(opt.transpose(0, 2, 1)),
                                   np.ascontiguousarray(sar.transpose(0, 2, 1)))
            stripes = 0.5 * (hf_anisotropy(refl(restored)) - hf_anisotropy(refl(flipped).transpose(0, 2, 1)))
            add(name, restored, clear, mask, sar_net, stripes)
            if name.startswith("IB-HFN (bundled") and keep_clear_threshold is not None:
                kept = keep_clear_pixels(restored, opt, cloud_probability(clear_prob), keep_clear_threshold)
                add(f"{name} + keep clear (p_cloud<{keep_clear_threshold})", kept, clear, mask)
    return ids, rows


def clear_scene_rows(models, data_dir, scenes=DEFAULT_CLEAR_SCENES):
    """Do no harm: each model on clear scenes kept out of every training run (input = the clear
    image, so any change is harm); PSNR/SAM of the output against its input, raw and as written."""
    from skyclear.models.ibhfn.sources import l2a_to_l1c
    root = Path(data_dir).resolve().parent / "bigearthnet_s1s2"
    rows = []
    for sid in scenes:
        folder = root / sid.split("/", 1)[1]
        if not (folder / "s2.tif").exists():
            print(f"(clear scene {sid} not found under {root}: skipped)")
            continue
        opt, sar = l2a_to_l1c(read_tif(str(folder / "s2.tif"))), read_tif(str(folder / "s1.tif"))
        for name, path in models:
            raw = refl(run_model(path, opt, sar)[0])
            written = as_the_tool_writes(raw, refl(opt))
            m_raw, m = (restoration_metrics(x, refl(opt), 1.0) for x in (raw, written))
            rows.append((sid, name, m_raw, m))
    return rows


def table(rows) -> str:
    head = ("| method | PSNR all | SSIM all | SAM° all | MAE all | PSNR cloudy | SSIM cloudy | SAM° cloudy | "
            "MAE cloudy |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for name, r in rows.items():
        if name.startswith("cloud-free target"):
            continue
        cells = []
        for part in ("all", "cloudy"):
            ms = r[part]
            for k, fmt in (("psnr", "{:.2f}"), ("ssim", "{:.3f}"), ("sam", "{:.2f}"), ("mae", "{:.4f}")):
                cells.append(fmt.format(np.mean([m[k] for m in ms])) if ms else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_sample_table(ids, rows) -> str:
    lines = ["| method | " + " | ".join(ids) + " |", "|---|" + "---|" * len(ids)]
    for name, r in rows.items():
        if name.startswith("cloud-free target"):
            continue
        lines.append(f"| {name} | " + " | ".join(f"{m['psnr']:.2f}" for m in r["all"]) + " |")
    return "\n".join(lines)


def train_ablations(steps: int, out_dir: Path, data_dir: Path, config: Path, jobs: int):
    py = sys.executable
    out_dir.mkdir(parents=True, exist_ok=True)
    procs, models = [], []
    for i, (name, sets) in enumerate(ABLATIONS.items()):
        run = out_dir / f"abl{i}"
        cmd = [py, "-m", "skyclear.models.train", "ibhfn", "--config", str(config), "--data", str(data_dir),
               "--out", str(run), "--quiet", "--threads", "1", "--set", f"steps={steps}",
               "--set", "time_budget_min=0", "--set", f"val_every={steps}",
               "--set", f"loss.warmup={max(1, steps // 4)}", "--set", f"loss.delay={steps // 12}"]
        for s in sets:
            cmd += ["--set", s]
        procs.append((name, run, subprocess.Popen(cmd, stdout=open(str(run) + ".log", "w"), stderr=subprocess.STDOUT)))
        if len([p for p in procs if p[2].poll() is None]) >= jobs:
            while len([p for p in procs if p[2].poll() is None]) >= jobs:
                time.sleep(2)
    for name, run, p in procs:
        if p.wait() != 0:
            raise SystemExit(f"ablation run {run} failed, see {run}.log")
        onnx = str(run) + ".onnx"
        subprocess.check_call([py, "-m", "skyclear.models.export", str(run), "--out", onnx],
                              stdout=subprocess.DEVNULL)
        models.append((f"ablation: {name}", onnx))
    return models


# ------------------------------------------------------------------------------------------
# cross-validation tables

CV_METRICS = (("psnr", "PSNR dB", "{:+.2f}", "{:.2f}", True), ("ssim", "SSIM", "{:+.3f}", "{:.3f}", True),
              ("sam", "SAM deg", "{:+.2f}", "{:.2f}", False))


def bootstrap_ci(diffs, n: int = 10000, seed: int = 0, level: float = 0.95):
    """(mean, low, high): percentile bootstrap over samples of the mean of paired differences."""
    d = np.asarray([x for x in diffs if np.isfinite(x)], np.float64)
    if d.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, (n, d.size))].mean(1)
    a = (1 - level) / 2
    return float(d.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def load_cv(cv_dir):
    """(plan, {model: {sample: row}}, {model: [clear-scene rows]}, {model: [fold result]})
    over the folds whose files exist."""
    import json
    cv_dir = Path(cv_dir)
    plan_path = cv_dir / "plan.json"
    if not plan_path.exists():
        raise SystemExit(f"{cv_dir} is not a cross-validation folder (no plan.json)")
    plan = json.loads(plan_path.read_text())
    rows, clear, results = {}, {}, {}
    for fold in range(len(plan["folds"])):
        for name in ["cloudy input"] + list(plan["models"]):
            path = cv_dir / f"fold{fold}" / ("cloudy_input.json" if name == "cloudy input" else f"{name}.json")
            if not path.exists():
                continue
            res = json.loads(path.read_text())
            results.setdefault(name, []).append(res)
            for r in res["rows"]:
                rows.setdefault(name, {})[r["sample"]] = r
            clear.setdefault(name, []).extend(dict(c, fold=fold) for c in res.get("clear_scenes", []))
    return plan, rows, clear, results


def _value(row, part, metric):
    sub = row.get(part)
    return float(sub[metric]) if sub and metric in sub and sub[metric] is not None else float("nan")


def _paired(rows, a, b, part, metric):
    common = sorted(set(rows.get(a, {})) & set(rows.get(b, {})))
    d = [_value(rows[a][s], part, metric) - _value(rows[b][s], part, metric) for s in common]
    return [x for x in d if np.isfinite(x)]


def _ci_cell(diffs, fmt, higher_better):
    mean, lo, hi = bootstrap_ci(diffs)
    if not np.isfinite(mean):
        return "-", "-"
    wins = sum((x > 0) if higher_better else (x < 0) for x in diffs)
    return f"{fmt.format(mean)} [{fmt.format(lo)}, {fmt.format(hi)}]", f"{wins}/{len(diffs)}"


def cv_report(cv_dir) -> str:
    plan, rows, clear, results = load_cv(cv_dir)
    out = []
    models = [m for m in plan["models"] if m in rows]
    done = {m: len(results.get(m, [])) for m in plan["models"]}
    out.append(f"Cross-validation {cv_dir}: {len(plan['folds'])} folds of {plan['data']}, "
               f"{plan.get('steps')} training steps per model (same for all; seed {plan.get('seed')}); "
               f"seconds/step measured: {plan.get('seconds_per_step_measured')}")
    out.append("Folds finished per model: " + ", ".join(f"{m} {done[m]}/{len(plan['folds'])}" for m in done))
    for m in models:
        secs = [r.get("train_seconds", 0) for r in results[m]]
        used = results[m][0].get("extra_used", {}) if results[m] else {}
        dropped = sorted({x for r in results[m] for x in r.get("extra_dropped_for_overlap", [])})
        out.append(f"- {m} ({plan['models'][m]['label']}): mean training {np.mean(secs):.0f} s/fold; extra sources "
                   f"{ {k: len(v) for k, v in used.items()} }; dropped for place overlap with a test triplet: "
                   f"{dropped or 'none'}")
    post = sorted({r.get("postprocess") or "none (raw network)" for m in results for r in results[m]
                   if r.get("model") != "cloudy input"})
    out.append(f"Outputs scored after: {'; '.join(post)}.")
    out.append("Reflectance = DN/10000 clipped to [0,1], outputs rounded to uint16 DN; PSNR data range 1; SSIM 11x11 "
               "Gaussian sigma 1.5; SAM degrees; 'cloudy' = cloud_mask == 1 pixels (samples with a non-empty mask). "
               "Differences are per-sample paired, mean [bootstrap 95 % CI]; wins = samples where the first is better.")
    if "ibhfn" not in rows or "baseline" not in rows:
        out.append("\n(no finished fold with both IB-HFN and the baseline yet)")
        return "\n".join(out)
    inp = "cloudy input"
    out += ["", "| metric | pixels | n | cloudy input | baseline | IB-HFN | IB-HFN - baseline | wins | "
            "IB-HFN - input | wins | baseline - input | wins |", "|---" * 12 + "|"]
    for metric, label, dfmt, vfmt, hb in CV_METRICS:
        for part in ("all", "cloudy"):
            common = sorted(set(rows["ibhfn"]) & set(rows["baseline"]) & set(rows.get(inp, {})))
            vals = {m: [_value(rows[m][s], part, metric) for s in common] for m in (inp, "baseline", "ibhfn")}
            n = sum(np.isfinite(vals["ibhfn"]))
            means = {m: vfmt.format(np.nanmean(v)) if np.isfinite(v).any() else "-" for m, v in vals.items()}
            cells = []
            for a, b in (("ibhfn", "baseline"), ("ibhfn", inp), ("baseline", inp)):
                cells += _ci_cell(_paired(rows, a, b, part, metric), dfmt, hb)
            out.append(f"| {label}{'' if hb else ' (lower is better)'} | {part} | {n} | {means[inp]} | "
                       f"{means['baseline']} | {means['ibhfn']} | " + " | ".join(cells) + " |")

    # do no harm
    out += ["", "Do no harm: triplets with cloud fraction < 5 % (PSNR dB, all pixels; model - cloudy input):", "",
            "| sample | cloud fraction | cloudy input | " + " | ".join(models) + " |",
            "|---|---|---|" + "---|" * len(models)]
    clear_ids = sorted(s for s, f in plan["cloud_fraction"].items() if f < 0.05 and s in rows.get(inp, {}))
    worst = {m: [] for m in models}
    for sid in clear_ids:
        base = _value(rows[inp][sid], "all", "psnr")
        cells = []
        for m in models:
            if sid in rows[m]:
                d = _value(rows[m][sid], "all", "psnr") - base
                worst[m].append(d)
                cells.append(f"{_value(rows[m][sid], 'all', 'psnr'):.2f} ({d:+.2f})")
            else:
                cells.append("-")
        out.append(f"| {sid} | {plan['cloud_fraction'][sid]:.3f} | {base:.2f} | " + " | ".join(cells) + " |")
    out.append("| worst (model - input) | | | " + " | ".join(f"{min(v):+.2f}" if v else "-" for v in worst.values())
               + " |")
    if any(clear.get(m) for m in models):
        out += ["", "Clear scenes kept out of training (input = clear image, so the output should equal it): "
                "PSNR / SAM of the output against the input, mean over folds (min PSNR); 'raw network' = "
                "without the tool's default snow test:", "",
                "| scene | output | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
        for scene in sorted({c["scene"] for m in models for c in clear.get(m, [])}):
            for label, prefix in (("as the tool writes it", ""), ("raw network", "raw_")):
                cells = []
                for m in models:
                    cs = [c for c in clear.get(m, []) if c["scene"] == scene and prefix + "psnr_vs_input" in c]
                    psnr = [c[prefix + "psnr_vs_input"] for c in cs]
                    sam = [c[prefix + "sam_vs_input"] for c in cs]
                    cells.append(f"{np.mean(psnr):.2f} dB / {np.mean(sam):.2f} deg (min {min(psnr):.2f})"
                                 if cs else "-")
                out.append(f"| {scene} | {label} | " + " | ".join(cells) + " |")

    # SAR structure under cloud
    out += ["", "SAR structure under cloud: correlation of output edge strength with SAR edge strength inside cloudy "
            "pixels (models/ibhfn/evaluate.py; the cloud-free target's own value is the reference):", "",
            "| | n | cloudy input | target (reference) | " + " | ".join(models) + " | IB-HFN - baseline | wins |",
            "|---|---|---|---|" + "---|" * len(models) + "---|---|"]
    common = sorted(s for s in rows.get(inp, {}) if np.isfinite(rows[inp][s].get("sar_edge_corr", float("nan"))))
    def val(m, key="sar_edge_corr"):
        return [rows[m][s].get(key, float("nan")) for s in common if s in rows[m]]
    d = [rows["ibhfn"][s]["sar_edge_corr"] - rows["baseline"][s]["sar_edge_corr"] for s in common
         if s in rows["ibhfn"] and s in rows["baseline"]]
    ci, wins = _ci_cell(d, "{:+.3f}", True)
    out.append(f"| edge correlation | {len(d)} | {np.nanmean(val(inp)):.3f} | "
               f"{np.nanmean(val(inp, 'target_sar_edge_corr')):.3f} | "
               + " | ".join(f"{np.nanmean(val(m)):.3f}" for m in models) + f" | {ci} | {wins} |")

    # stripes
    out += ["", "Stripe index (frame-tied high-frequency anisotropy, models/ibhfn/evaluate.py; ~0 = none, "
            "IB-HFN 1.1.0 reached 2.4): mean / max |value| over held-out samples:", "",
            "| " + " | ".join(models) + " |", "|" + "---|" * len(models)]
    out.append("| " + " | ".join(
        f"{np.mean([r['stripe_index'] for r in rows[m].values()]):+.2f} / "
        f"{np.max(np.abs([r['stripe_index'] for r in rows[m].values()])):.2f}" for m in models) + " |")

    # ablations
    variants = [m for m in models if m not in ("ibhfn", "baseline")]
    if variants:
        out += ["", "Ablations (each undoes one change of IB-HFN; same folds, data seed and steps): "
                "variant - IB-HFN, mean [bootstrap 95 % CI] over samples:", "",
                "| variant | n | PSNR all | variant - IB-HFN | PSNR cloudy - IB-HFN | SAM all - IB-HFN | "
                "variant - baseline (PSNR all) | edge corr | stripe index |", "|---|---|---|---|---|---|---|---|---|"]
        for m in ["ibhfn"] + variants:
            n = len(set(rows[m]) & set(rows["ibhfn"]))
            cells = [f"{np.mean([_value(r, 'all', 'psnr') for r in rows[m].values()]):.2f}"]
            if m == "ibhfn":
                cells += ["-", "-", "-"]
            else:
                cells += [_ci_cell(_paired(rows, m, "ibhfn", "all", "psnr"), "{:+.2f}", True)[0],
                          _ci_cell(_paired(rows, m, "ibhfn", "cloudy", "psnr"), "{:+.2f}", True)[0],
                          _ci_cell(_paired(rows, m, "ibhfn", "all", "sam"), "{:+.2f}", False)[0]]
            cells.append(_ci_cell(_paired(rows, m, "baseline", "all", "psnr"), "{:+.2f}", True)[0])
            cells.append(f"{np.nanmean([r['sar_edge_corr'] for r in rows[m].values()]):.3f}")
            cells.append(f"{np.mean([r['stripe_index'] for r in rows[m].values()]):+.2f}")
            out.append(f"| {m}: {plan['models'][m]['label']} | {n} | " + " | ".join(cells) + " |")

    # per sample
    samples = sorted(rows.get(inp, {}), key=lambda s: plan["cloud_fraction"][s])
    fold_of = {s: i for i, f in enumerate(plan["folds"]) for s in f}
    out += ["", "PSNR (dB, all pixels) per held-out sample (fold in brackets), sorted by cloud fraction:", "",
            "| model | " + " | ".join(f"{s.replace('oriolac_', '')} ({fold_of[s]})" for s in samples) + " |",
            "|---|" + "---|" * len(samples)]
    for m in [inp] + models:
        out.append(f"| {m} | " + " | ".join(f"{_value(rows[m][s], 'all', 'psnr'):.2f}" if s in rows.get(m, {})
                                             else "-" for s in samples) + " |")
    out.append("| cloud fraction | " + " | ".join(f"{plan['cloud_fraction'][s]:.2f}" for s in samples) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--ibhfn", default=str(REPO / "models" / "zoo" / "ibhfn_small.onnx"))
    ap.add_argument("--baseline", default=str(REPO / "models" / "zoo" / "dsen2cr_small.onnx"))
    ap.add_argument("--ablation", action="append", default=[], metavar="NAME=PATH")
    ap.add_argument("--train-ablations", type=int, default=0, metavar="STEPS")
    ap.add_argument("--ablation-dir", default=str(REPO / "runs" / "ablations"))
    ap.add_argument("--ablation-config", default=str(REPO / "models" / "configs" / "ibhfn-small.json"))
    ap.add_argument("--jobs", type=int, default=2, help="ablation runs in parallel (1 thread each)")
    ap.add_argument("--keep-clear-threshold", type=float, default=0.5)
    ap.add_argument("--cv", metavar="DIR", help="print the tables of a cross-validation folder instead")
    args = ap.parse_args(argv)
    if args.cv:
        print(cv_report(args.cv))
        return 0
    models = []
    if os.path.exists(args.baseline):
        models.append(("DSen2-CR-style baseline (bundled)", args.baseline))
    if os.path.exists(args.ibhfn):
        models.append(("IB-HFN (bundled)", args.ibhfn))
    for item in args.ablation:
        name, _, path = item.partition("=")
        models.append((f"ablation: {name}", path))
    if args.train_ablations:
        models += train_ablations(args.train_ablations, Path(args.ablation_dir), Path(args.data),
                                  Path(args.ablation_config), args.jobs)
    ids, rows = evaluate(models, args.data, args.keep_clear_threshold)
    print(f"Held-out SEN12MS-CR samples ({len(ids)}, never used in training/validation): {', '.join(ids)}")
    print("Reflectance = clip(DN,0,10000)/10000; PSNR data range 1; SSIM 11x11 Gaussian sigma 1.5; SAM degrees; "
          "mean over samples; 'cloudy' = cloud_mask == 1 pixels.")
    for name, path in models:
        card = read_card(path)
        tr = card.training
        print(f"- {name}: {path} ({os.path.getsize(path) / 2**20:.2f} MiB), {tr.get('steps')} steps, "
              f"{tr.get('train_seconds')} s training")
    print()
    print(table(rows))
    print()
    print("PSNR (dB, all pixels) per held-out sample:")
    print()
    print(per_sample_table(ids, rows))
    print()
    print("SAR structure under cloud (correlation of output and SAR edge strength in cloudy pixels) and stripe "
          "index (frame-tied high-frequency anisotropy, ~0 = none), models/ibhfn/evaluate.py; mean over samples:")
    print()
    print("| method | edge correlation | stripe index (mean / max abs) |\n|---|---|---|")
    for name, r in rows.items():
        edge = [e for e in r.get("edge", []) if np.isfinite(e)]
        st = r.get("stripes", [])
        if not edge:
            continue
        print(f"| {name} | {np.mean(edge):.3f} | " + (f"{np.mean(st):+.2f} / {np.max(np.abs(st)):.2f}" if st else "-")
              + " |")
    clear = clear_scene_rows(models, args.data)
    if clear:
        print()
        print("Do no harm on clear scenes kept out of training (input = clear image; output vs input):")
        print()
        print("| scene | method | PSNR as written (snow test) | SAM° as written | PSNR raw network | SAM° raw |\n"
              "|---|---|---|---|---|---|")
        for sid, name, m_raw, m in clear:
            print(f"| {sid} | {name} | {m['psnr']:.2f} | {m['sam']:.2f} | {m_raw['psnr']:.2f} | {m_raw['sam']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
