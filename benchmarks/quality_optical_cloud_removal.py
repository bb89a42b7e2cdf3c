"""Quality, grain and CPU speed of optical-only cloud removal (DE) on the held-out RICE pairs.

    .venv/bin/python benchmarks/quality_optical_cloud_removal.py \
        [--reference models/zoo/de_reference_rice.onnx] [--step models/zoo/de_step_rice.onnx] \
        [--data ../shared/data] [--de-pairs 0] [--steps 5 10 [25 50 2x5]] [--eta CARD] [--t-start CARD] \
        [--threads 2] [--metrics-json RUN/heldout_metrics.json]

Methods: the cloudy input itself, the reference model E alone, and DE (E + the DDIM sampling loop
of the plugin, seed 0) at each ``--steps``: STEPS, or STEPSxSAMPLES for the mean of SAMPLES runs
from independent noise (the tools' ``SAMPLES``); the step model's own default (card
``extra.steps_default`` x ``extra.samples_default``) is always added. ``eta`` and ``t_start`` default to the step model's card
(``extra.eta``, chosen on the validation pairs at export; ``extra.t_start``; absent = full trajectory
from pure noise), so the benchmark scores what a user gets. Pairs are exactly those of
``models/diffusion/splits.HELD_OUT`` (never trained on, never used for selection); ``--de-pairs N``
limits DE to the first N of each folder (0 = all, the default).

Metrics, per image, on the uint8 output as the plugin writes it (the card's own scaling):
PSNR and SSIM (plugin/core/metrics/restoration.py, data range 255) and the grain ratio
(plugin/core/metrics/grain.py: high-pass RMS of the output over that of the clear image, floored
at 0.5 DN, on the clear image's flattest 30 % of pixels; 1 = as much fine texture as the truth,
> 1 = added grain, < 1 = smoother than the truth).

Paired differences DE - E: the mean over images of (DE - E) per folder and overall, with a 95 %
percentile-bootstrap confidence interval of that mean (10 000 resamples of the images, seed 0).

Speed: seconds per 256x256 tile (one tile, batch 1, median of ``--time-repeats`` runs, after one
warm-up run) for E alone and for each DE setting (E included), onnxruntime CPU with
``--threads`` threads. Times of a loaded machine are not comparable: run it when the CPU is quiet.
Runs without torch.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from skyclear.models.diffusion.splits import HELD_OUT  # torch-free module
from skyclear.plugin.core.engine import postprocess, to_network
from skyclear.plugin.core.metrics.grain import grain
from skyclear.plugin.core.metrics.restoration import psnr, ssim
from skyclear.plugin.core.model_card import card_from_session
from skyclear.plugin.core.raster_io import to_dtype
from figures import save_panels  # benchmarks/figures.py
from skyclear.plugin.core.pipelines.optical_cloud_removal import (DiffusionProcessor, ReferenceProcessor,
                                                                  default_eta, default_samples, default_steps,
                                                                  default_t_start, steps_and_samples)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZOO = os.path.join(REPO, "models", "zoo")
FOLDERS = ("rice1", "rice2")
METRICS = ("psnr", "ssim", "grain")


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


def bootstrap_ci(values: Sequence[float], n_boot: int = 10000, level: float = 0.95,
                 seed: int = 0) -> Tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` and the percentile-bootstrap ``level`` interval of
    that mean (``n_boot`` resamples with replacement, fixed seed). NaNs for no values."""
    v = np.asarray([x for x in values], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(int(n_boot), v.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(v.mean()), float(low), float(high)


def paired_differences(rows: Dict[str, List[dict]], method: str, baseline: str = "reference E",
                       key: str = "psnr", folder: Optional[str] = None) -> List[float]:
    """Per-image ``method - baseline`` of ``key`` over the images both were run on."""
    base = {(r["folder"], r["id"]): r[key] for r in rows[baseline]}
    return [r[key] - base[(r["folder"], r["id"])] for r in rows[method]
            if (r["folder"], r["id"]) in base and (folder is None or r["folder"] == folder)]


def time_tile(processor, y: np.ndarray, repeats: int) -> float:
    """Median wall time of ``processor`` on one tile (after one warm-up call)."""
    processor({"cloudy": y}, [(0, 0)])
    times = []
    for _ in range(max(1, repeats)):
        tick = time.perf_counter()
        processor({"cloudy": y}, [(0, 0)])
        times.append(time.perf_counter() - tick)
    return float(np.median(times))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", default=os.path.join(ZOO, "de_reference_rice.onnx"))
    p.add_argument("--step", default=os.path.join(ZOO, "de_step_rice.onnx"))
    p.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data"))
    p.add_argument("--de-pairs", type=int, default=0, help="held-out pairs per folder for DE (0 = all)")
    p.add_argument("--steps", nargs="+", type=steps_and_samples, default=[(5, 1), (10, 1)],
                   help="DE settings: STEPS or STEPSxSAMPLES (e.g. 5 10 25 50 2x5); the card's default is added")
    p.add_argument("--eta", type=float, help="W clamp; default: the step model's card (extra.eta)")
    p.add_argument("--t-start", default="card",
                   help="truncated start t0; default: the card's extra.t_start; 'none' = full trajectory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--folders", nargs="+", default=list(FOLDERS), choices=list(FOLDERS))
    p.add_argument("--boot", type=int, default=10000, help="bootstrap resamples")
    p.add_argument("--time-repeats", type=int, default=3, help="timed runs per method on one 256² tile (0 = skip)")
    p.add_argument("--rows-out", help="write the per-pair rows as JSON (to merge runs made in parallel)")
    p.add_argument("--merge", nargs="+", help="only print the tables of earlier --rows-out files")
    p.add_argument("--figure", help="PNG: cloudy | E | DE | clear on the first held-out pair of each folder "
                                    "(DE with the step model's default setting)")
    p.add_argument("--metrics-json", help="also write the summary as JSON (e.g. RUN/heldout_metrics.json, "
                                          "which the DE export puts into the model card)")
    args = p.parse_args(argv)

    if args.merge:
        rows: Dict[str, List[dict]] = {}
        seconds, timing, info = 0.0, {}, {}
        for path in args.merge:
            with open(path) as f:
                part = json.load(f)
            for m, entries in part["rows"].items():
                rows.setdefault(m, []).extend(entries)
            seconds = max(seconds, part.get("seconds", 0.0))
            timing = timing or part.get("timing", {})
            info = info or part.get("info", {})
        print(f"(merged {len(args.merge)} runs made in parallel; wall time of the longest)")
        report(args, rows, list(rows), seconds, timing, info)
        return 0

    ref_sess, step_sess = session(args.reference, args.threads), session(args.step, args.threads)
    card = card_from_session(ref_sess, args.reference)
    eta = default_eta(step_sess) if args.eta is None else float(args.eta)
    choice = str(args.t_start).lower()
    t_start = default_t_start(step_sess) if choice == "card" else None if choice == "none" else int(choice)
    info = {"eta": eta, "t_start": t_start, "seed": args.seed, "threads": args.threads,
            "reference": os.path.basename(args.reference), "step": os.path.basename(args.step)}
    reference = ReferenceProcessor(ref_sess)

    shapes = list(args.steps)
    card_shape = (default_steps(step_sess), default_samples(step_sess))
    shapes += [card_shape] if card_shape not in shapes else []
    info["card_default"] = de_label(*card_shape)

    def diffusion(shape):
        return DiffusionProcessor(ref_sess, step_sess, steps=shape[0], samples=shape[1], eta=eta, seed=args.seed,
                                  t_start=t_start)
    de = {de_label(*shape): diffusion(shape) for shape in shapes}
    info["shapes"] = {de_label(*shape): list(shape) for shape in shapes}
    methods = ["cloudy input", "reference E"] + list(de)
    rows: Dict[str, List[dict]] = {m: [] for m in methods}
    started = time.time()
    first_y = None
    figure_method = info["card_default"]
    figure_rows = []
    for folder in args.folders:
        for k, pair_id in enumerate(HELD_OUT[folder]):
            base = os.path.join(args.data, folder, pair_id)
            cloudy, clear = read_uint8(base + "_cloudy.png"), read_uint8(base + "_clear.png")
            y = to_net(cloudy, card)
            first_y = y if first_y is None else first_y

            def record(method, out_u8, seconds):
                rows[method].append({"folder": folder, "id": pair_id, "psnr": psnr(out_u8, clear, 255.0),
                                     "ssim": ssim(out_u8, clear, 255.0), "grain": grain(out_u8, clear)["ratio"],
                                     "s": seconds})

            record("cloudy input", cloudy, 0.0)
            tick = time.time()
            out = reference({"cloudy": y}, [(0, 0)])["restored"]
            record("reference E", to_uint8(out, card), time.time() - tick)
            if args.figure and k == 0:
                figure_rows.append([(f"{folder}/{pair_id} cloudy", cloudy), ("reference E", to_uint8(out, card))])
            if args.de_pairs and k >= args.de_pairs:
                continue
            for method, processor in de.items():
                tick = time.time()
                out = processor({"cloudy": y}, [(0, 0)])["restored"]
                record(method, to_uint8(out, card), time.time() - tick)
                if args.figure and k == 0 and method == figure_method:
                    figure_rows[-1] += [(method, to_uint8(out, card)), ("clear (target)", clear)]
                r, e = rows[method][-1], rows["reference E"][-1]
                print(f"  {folder}/{pair_id} {method}: PSNR {r['psnr']:.2f} (E {e['psnr']:.2f}, input "
                      f"{rows['cloudy input'][-1]['psnr']:.2f}) SSIM {r['ssim']:.4f} (E {e['ssim']:.4f}) "
                      f"grain {r['grain']:.2f} (E {e['grain']:.2f}); mean W {np.mean(processor.last_weights):.3f}",
                      flush=True)

    timing = {}
    if args.time_repeats and first_y is not None:
        tile = np.ascontiguousarray(first_y[:, :, :256, :256])
        timing["reference E"] = time_tile(reference, tile, args.time_repeats)
        for method, processor in de.items():
            timing[method] = time_tile(processor, tile, args.time_repeats)
    if args.rows_out:
        with open(args.rows_out, "w") as f:
            json.dump({"rows": rows, "seconds": time.time() - started, "timing": timing, "info": info}, f)
    report(args, rows, methods, time.time() - started, timing, info)
    if args.figure:
        save_panels(args.figure, figure_rows)
        print(f"\nfigure: {args.figure}")
    return 0


def de_label(steps: int, samples: int) -> str:
    return f"DE {steps} steps" if samples == 1 else f"DE {steps} steps x {samples} samples"


def _fmt_ci(mean: float, low: float, high: float, digits: int) -> str:
    if np.isnan(mean):
        return "–"
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def report(args, rows, methods, seconds, timing, info) -> None:
    de_methods = [m for m in methods if m.startswith("DE ")]
    de_ids = {(r["folder"], r["id"]) for m in de_methods for r in rows[m]}
    folders = [f for f in FOLDERS if any(r["folder"] == f for r in rows["cloudy input"])]
    print(f"\nHeld-out RICE pairs (models/diffusion/splits.py); onnxruntime CPU, {info.get('threads')} threads; "
          f"DDIM, eta {info.get('eta')}, t_start {info.get('t_start')}, seed {info.get('seed')}; "
          f"models {info.get('reference')} + {info.get('step')}; total {seconds:.0f} s\n")

    def cell(entries, folder, key, digits):
        e = [r[key] for r in entries if folder is None or r["folder"] == folder]
        return f"{np.mean(e):.{digits}f}" if e else "–"

    scopes = folders + [None]
    header = " | ".join(f"{f or 'all'} {k}" for f in scopes for k in ("PSNR", "SSIM", "grain"))
    n_by = {f: sum(1 for fo, _ in de_ids if fo == f) for f in folders}
    print(f"Table A: means on the pairs DE ran on ({len(de_ids)}: "
          + " + ".join(f"{n_by[f]} {f.upper()}" for f in folders) + ")\n")
    print(f"| method | {header} |")
    print("|---" * (1 + 3 * len(scopes)) + "|")
    for m in methods:
        sub = [r for r in rows[m] if (r["folder"], r["id"]) in de_ids]
        cells = " | ".join(f"{cell(sub, f, 'psnr', 2)} | {cell(sub, f, 'ssim', 4)} | {cell(sub, f, 'grain', 2)}"
                           for f in scopes)
        print(f"| {m} | {cells} |")
    if len(rows["reference E"]) > len(de_ids):
        print(f"\n(E and the input on all {len(rows['reference E'])} held-out pairs:)")
        for m in methods[:2]:
            print(f"- {m}: " + "; ".join(f"{f or 'all'} PSNR {cell(rows[m], f, 'psnr', 2)} SSIM "
                                       f"{cell(rows[m], f, 'ssim', 4)} grain {cell(rows[m], f, 'grain', 2)}"
                                       for f in scopes))

    print(f"\nTable B: paired per-image differences DE - E, mean [95 % bootstrap CI of the mean, "
          f"{args.boot} resamples]\n")
    print("| method | scope | n | PSNR dB | SSIM | grain ratio | images DE > E (PSNR) |")
    print("|---|---|---|---|---|---|---|")
    paired = {}
    for m in de_methods:
        for f in scopes:
            d = {k: paired_differences(rows, m, key=k, folder=f) for k in METRICS}
            if not d["psnr"]:
                continue
            ci = {k: bootstrap_ci(d[k], args.boot) for k in METRICS}
            paired[f"{m} / {f or 'all'}"] = {k: {"mean": round(ci[k][0], 4), "ci95": [round(ci[k][1], 4),
                                                                                       round(ci[k][2], 4)]}
                                             for k in METRICS}
            paired[f"{m} / {f or 'all'}"]["n"] = len(d["psnr"])
            wins = sum(1 for v in d["psnr"] if v > 0)
            print(f"| {m} | {f or 'all'} | {len(d['psnr'])} | {_fmt_ci(*ci['psnr'], 2)} | {_fmt_ci(*ci['ssim'], 4)} "
                  f"| {_fmt_ci(*ci['grain'], 2)} | {wins}/{len(d['psnr'])} |")

    if timing:
        print(f"\nTable C: seconds per 256x256 tile (batch 1, median of {args.time_repeats}; DE includes E)\n")
        print("| method | s / 256² tile |")
        print("|---|---|")
        for m, s in timing.items():
            print(f"| {m} | {s:.3f} |")

    verdict = {}
    shapes = info.get("shapes", {})
    for target in [m for m in de_methods if m in shapes and shapes[m][0] * shapes[m][1] == 10]:
        print(f"\nIssue 11 bar for {target} (10 step calls per tile): PSNR gain >= +0.3 dB with the 95 % CI "
              "above 0, and SSIM not lower (mean paired SSIM difference >= 0), on each folder:")
        for f in folders:
            entry = paired.get(f"{target} / {f}")
            if not entry:
                continue
            ok = (entry["psnr"]["mean"] >= 0.3 and entry["psnr"]["ci95"][0] > 0 and entry["ssim"]["mean"] >= 0)
            verdict.setdefault(target, {})[f] = ok
            print(f"- {f}: PSNR {entry['psnr']['mean']:+.2f} dB (CI {entry['psnr']['ci95'][0]:+.2f} .. "
                  f"{entry['psnr']['ci95'][1]:+.2f}), SSIM {entry['ssim']['mean']:+.4f}: "
                  f"{'MET' if ok else 'NOT met'}")

    if args.metrics_json:
        out = {"pairs": "models/diffusion/splits.py HELD_OUT", "data_range": 255, **info,
               "means": {}, "paired_de_minus_e": paired, "s_per_256_tile_cpu": {k: round(v, 3) for k, v in timing.items()},
               "issue11_bar_10_step_calls": verdict}
        for m in methods:
            sub = [r for r in rows[m] if (r["folder"], r["id"]) in de_ids]
            for f in scopes:
                e = [r for r in sub if f is None or r["folder"] == f]
                if e:
                    out["means"][f"{m} / {f or 'all'}"] = {k: round(float(np.mean([r[k] for r in e])), 4)
                                                           for k in METRICS} | {"n": len(e)}
        with open(args.metrics_json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    raise SystemExit(main())
