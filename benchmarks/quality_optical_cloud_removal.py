"""Quality and CPU speed of optical-only cloud removal (DE) on held-out RICE pairs.

    .venv/bin/python benchmarks/quality_optical_cloud_removal.py \
        [--reference models/zoo/de_reference_rice.onnx] [--step models/zoo/de_step_rice.onnx] \
        [--data ../shared/data] [--de-pairs 3] [--steps 5 10 25 50] [--threads 2]

Rows: the cloudy input itself, the reference model E alone, and DE with 5/10/25/50 DDIM steps
(eta = 0.3, seed 0). PSNR/SSIM use plugin/core/metrics/restoration.py on uint8 with data range
255 (the output is rounded to uint8 as the plugin writes it). Pairs are exactly those of
``models/diffusion/splits.HELD_OUT`` (never trained on). DE is slow on CPU, so it runs on the
first ``--de-pairs`` held-out pairs of each folder; E and the input are also reported on all
held-out pairs. Seconds per 256x256 tile = wall time of the tile processor (onnxruntime CPU).
Runs without torch.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from typing import Dict, List

import numpy as np

from skyclear.models.diffusion.splits import HELD_OUT  # torch-free module
from skyclear.plugin.core.engine import postprocess, to_network
from skyclear.plugin.core.metrics.restoration import psnr, ssim
from skyclear.plugin.core.model_card import card_from_session
from skyclear.plugin.core.raster_io import to_dtype
from skyclear.plugin.core.pipelines.optical_cloud_removal import DiffusionProcessor, ReferenceProcessor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZOO = os.path.join(REPO, "models", "zoo")


def read_uint8(path: str) -> np.ndarray:
    import rasterio
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as src:
            return src.read()[:3]


def to_net(a: np.ndarray, card) -> np.ndarray:
    """The engine's own scaling from the reference model's card (no hard-coded constants)."""
    spec = card.inputs[0]
    return to_network(a.astype(np.float32), np.ones(a.shape[1:], bool), spec)[None].astype(np.float32)


def to_uint8(x: np.ndarray, card) -> np.ndarray:
    return to_dtype(postprocess(x[0], card.outputs[0]), "uint8")


def session(path: str, threads: int):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", default=os.path.join(ZOO, "de_reference_rice.onnx"))
    p.add_argument("--step", default=os.path.join(ZOO, "de_step_rice.onnx"))
    p.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data"))
    p.add_argument("--de-pairs", type=int, default=3, help="held-out pairs per folder for DE (0 = all)")
    p.add_argument("--steps", type=int, nargs="+", default=[5, 10, 25, 50])
    p.add_argument("--eta", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--folders", nargs="+", default=["rice1", "rice2"], choices=["rice1", "rice2"])
    p.add_argument("--rows-out", help="write the per-pair rows as JSON (to merge runs made in parallel)")
    p.add_argument("--merge", nargs="+", help="only print the tables of earlier --rows-out files")
    p.add_argument("--metrics-json", help="also write the summary as JSON (e.g. RUN/heldout_metrics.json, "
                                          "which the DE export puts into the model card)")
    args = p.parse_args(argv)

    if args.merge:
        import json
        rows: Dict[str, List[dict]] = {}
        seconds = 0.0
        for path in args.merge:
            with open(path) as f:
                part = json.load(f)
            for m, entries in part["rows"].items():
                rows.setdefault(m, []).extend(entries)
            seconds = max(seconds, part.get("seconds", 0.0))
            args.threads = part.get("threads", args.threads)
        methods = list(rows)
        print(f"(merged {len(args.merge)} runs made in parallel; wall time of the longest)")
        report(args, rows, methods, seconds)
        return 0
    ref_sess, step_sess = session(args.reference, args.threads), session(args.step, args.threads)
    reference = ReferenceProcessor(ref_sess)
    card = card_from_session(ref_sess, args.reference)
    de = {s: DiffusionProcessor(ref_sess, step_sess, steps=s, eta=args.eta, seed=args.seed) for s in args.steps}
    methods = ["cloudy input", "reference E"] + [f"DE {s} steps" for s in args.steps]
    rows: Dict[str, List[dict]] = {m: [] for m in methods}
    started = time.time()
    for folder in args.folders:
        ids = HELD_OUT[folder]
        for k, pair_id in enumerate(ids):
            base = os.path.join(args.data, folder, pair_id)
            cloudy, clear = read_uint8(base + "_cloudy.png"), read_uint8(base + "_clear.png")
            y = to_net(cloudy, card)

            def record(method, out_u8, seconds):
                rows[method].append({"folder": folder, "id": pair_id, "psnr": psnr(out_u8, clear, 255.0),
                                     "ssim": ssim(out_u8, clear, 255.0), "s": seconds})

            record("cloudy input", cloudy, 0.0)
            tick = time.time()
            out = reference({"cloudy": y}, [(0, 0)])["restored"]
            record("reference E", to_uint8(out, card), time.time() - tick)
            if args.de_pairs and k >= args.de_pairs:
                continue
            for s in args.steps:
                tick = time.time()
                out = de[s]({"cloudy": y}, [(0, 0)])["restored"]
                record(f"DE {s} steps", to_uint8(out, card), time.time() - tick)
                print(f"  {folder}/{pair_id} DE {s:>2} steps: PSNR {rows[f'DE {s} steps'][-1]['psnr']:.2f} "
                      f"(E {rows['reference E'][-1]['psnr']:.2f}, input {rows['cloudy input'][-1]['psnr']:.2f}); "
                      f"mean W {np.mean(de[s].last_weights):.3f}", flush=True)

    if args.rows_out:
        import json
        with open(args.rows_out, "w") as f:
            json.dump({"rows": rows, "seconds": time.time() - started, "threads": args.threads}, f)
    report(args, rows, methods, time.time() - started)
    return 0


def report(args, rows, methods, seconds) -> None:
    def summary(entries, folder=None):
        e = [r for r in entries if folder is None or r["folder"] == folder]
        if not e:
            return "–", "–", 0
        return f"{np.mean([r['psnr'] for r in e]):.2f}", f"{np.mean([r['ssim'] for r in e]):.4f}", len(e)

    de_ids = {(r["folder"], r["id"]) for r in rows[methods[-1]]}
    print(f"\nHeld-out RICE pairs (models/diffusion/splits.py); onnxruntime CPU, {args.threads} threads; "
          f"eta {args.eta}, DDIM, seed {args.seed}; total {seconds:.0f} s\n")
    n_a1 = sum(1 for r in rows["cloudy input"] if r["folder"] == "rice1")
    print(f"Table A: all held-out pairs ({len(rows['cloudy input'])}: "
          f"{n_a1} RICE1 + {len(rows['cloudy input']) - n_a1} RICE2)\n")
    print("| method | RICE1 PSNR | RICE1 SSIM | RICE2 PSNR | RICE2 SSIM | all PSNR | all SSIM | s / 256² tile |")
    print("|---|---|---|---|---|---|---|---|")
    for m in methods[:2]:
        a, b, c = summary(rows[m], "rice1"), summary(rows[m], "rice2"), summary(rows[m])
        secs = np.mean([r["s"] for r in rows[m]])
        print(f"| {m} | {a[0]} | {a[1]} | {b[0]} | {b[1]} | {c[0]} | {c[1]} | {secs:.3f} |")
    n1 = sum(1 for f, _ in de_ids if f == "rice1")
    print(f"\nTable B: the DE subset, same pairs for every row ({len(de_ids)}: {n1} RICE1 + "
          f"{len(de_ids) - n1} RICE2: {sorted(de_ids)})\n")
    print("| method | RICE1 PSNR | RICE1 SSIM | RICE2 PSNR | RICE2 SSIM | all PSNR | all SSIM | s / 256² tile |")
    print("|---|---|---|---|---|---|---|---|")
    for m in methods:
        sub = [r for r in rows[m] if (r["folder"], r["id"]) in de_ids]
        a, b, c = summary(sub, "rice1"), summary(sub, "rice2"), summary(sub)
        secs = np.mean([r["s"] for r in sub])
        print(f"| {m} | {a[0]} | {a[1]} | {b[0]} | {b[1]} | {c[0]} | {c[1]} | {secs:.3f} |")
    if args.metrics_json:
        import json
        out = {"pairs": "models/diffusion/splits.py HELD_OUT", "data_range": 255, "eta": args.eta, "seed": args.seed,
               "all_heldout": {}, "de_subset": {"pairs": sorted(f"{f}/{i}" for f, i in de_ids)}}
        for m in methods:
            for key, subset in (("all_heldout", None), ("de_subset", de_ids)):
                sub = [r for r in rows[m] if subset is None or (r["folder"], r["id"]) in subset]
                if sub and (key == "de_subset" or m in methods[:2]):
                    out[key][m] = {"psnr": round(float(np.mean([r["psnr"] for r in sub])), 3),
                                   "ssim": round(float(np.mean([r["ssim"] for r in sub])), 4), "n": len(sub),
                                   "s_per_tile_cpu": round(float(np.mean([r["s"] for r in sub])), 3)}
        with open(args.metrics_json, "w") as f:
            json.dump(out, f, indent=2)
    def mean_of(m, key):
        return float(np.mean([r[key] for r in rows[m] if (r["folder"], r["id"]) in de_ids]))

    e_psnr, e_ssim = mean_of("reference E", "psnr"), mean_of("reference E", "ssim")
    print(f"\nDE minus E on these {len(de_ids)} pairs:")
    for m in methods[2:]:
        print(f"- {m}: PSNR {mean_of(m, 'psnr') - e_psnr:+.2f} dB, SSIM {mean_of(m, 'ssim') - e_ssim:+.4f}")
    best = max(methods[2:], key=lambda m: mean_of(m, "psnr"))
    wins = mean_of(best, "psnr") > e_psnr and mean_of(best, "ssim") > e_ssim
    print(f"Verdict: the paper's claim (DE improves on its own reference model) "
          f"{'holds' if wins else 'does NOT hold'} here: the best DE setting by PSNR ({best}) "
          f"{'beats' if wins else 'does not beat'} E on both PSNR and SSIM.")


if __name__ == "__main__":
    raise SystemExit(main())
