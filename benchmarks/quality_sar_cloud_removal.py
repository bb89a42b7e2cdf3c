"""Quality of SAR-assisted cloud removal on the held-out SEN12MS-CR samples.

    python benchmarks/quality_sar_cloud_removal.py                    # bundled models
    python benchmarks/quality_sar_cloud_removal.py --train-ablations 300 --ablation-dir runs/ablations

Evaluates, on the held-out samples fixed in ``skyclear.models.ibhfn.splits.HELDOUT`` (never
used for training or validation): the cloudy input itself, the DSen2-CR-style baseline and
IB-HFN (plus IB-HFN with "keep clear pixels", and any ablation models), through the ONNX
files and the plugin's tile processor, with the card pre/postprocessing (output written as
uint16 DN like the plugin does). Metrics (``plugin/core/metrics/restoration.py``) on
reflectance = clip(DN, 0, 10000) / 10000: PSNR (data range 1), SSIM (11x11 Gaussian,
sigma 1.5), SAM (degrees), MAE; averaged over samples; over all pixels and over the cloudy
pixels (cloud_mask == 1) only.

``--train-ablations STEPS`` trains, with the small preset shortened to STEPS steps, four
runs with identical data/seed/budget: the full IB-HFN and the three ablations (no
bottleneck = plain concat fusion, no gating, no Dirac skip), exports them and adds them to
the table. ``--ablation NAME=PATH`` adds already exported ONNX files.
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
from skyclear.models.ibhfn.data import find_samples, read_tif
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

    def add(name, pred_dn, clear, mask):
        r = rows.setdefault(name, {"all": [], "cloudy": []})
        r["all"].append(restoration_metrics(refl(pred_dn), clear, 1.0))
        if mask.any():
            r["cloudy"].append(restoration_metrics(refl(pred_dn), clear, 1.0, mask))

    for sid in ids:
        f = files[sid]
        opt, sar, tgt = read_tif(f.s2_cloudy), read_tif(f.s1), read_tif(f.s2_cloudfree)
        mask = read_tif(f.cloud_mask)[0] > 0
        clear = refl(tgt)
        add("cloudy input", opt, clear, mask)
        for name, path in models:
            restored, clear_prob = run_model(path, opt, sar)
            add(name, restored, clear, mask)
            if name.startswith("IB-HFN (bundled") and keep_clear_threshold is not None:
                kept = keep_clear_pixels(restored, opt, cloud_probability(clear_prob), keep_clear_threshold)
                add(f"{name} + keep clear (p_cloud<{keep_clear_threshold})", kept, clear, mask)
    return ids, rows


def table(rows) -> str:
    head = ("| method | PSNR all | SSIM all | SAM° all | MAE all | PSNR cloudy | SSIM cloudy | SAM° cloudy | "
            "MAE cloudy |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for name, r in rows.items():
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
    args = ap.parse_args(argv)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
