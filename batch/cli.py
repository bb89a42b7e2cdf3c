"""Command line: run a manifest, check it, or build one from folders.

    python -m skyclear.batch jobs.csv                          # LocalCluster, all cores
    python -m skyclear.batch jobs.csv --scheduler tcp://head:8786
    python -m skyclear.batch jobs.csv --check                  # validate and show what would run
    python -m skyclear.batch pair --optical 'S2/*.tif' --sar 'S1/*.tif' --tool remove_clouds_sar \\
        --out-dir results --max-days 3 -o jobs.csv
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from ..plugin.core.errors import SkyClearError


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m skyclear.batch",
                                description="Run SkyClear tools over a manifest of scenes on Dask "
                                            "(`python -m skyclear.batch pair --help` builds a manifest).")
    p.add_argument("manifest", help="CSV or JSON-lines file: one job per row (tool, Processing parameters)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786 "
                                       "(default: start a LocalCluster on this machine)")
    p.add_argument("--workers", type=int, help="LocalCluster worker processes (default: cores; 0 = run here, no Dask)")
    p.add_argument("--threads", type=int, help="onnxruntime threads per job (default: cores // workers)")
    p.add_argument("--no-resume", action="store_true", help="rerun jobs whose outputs are already up to date")
    p.add_argument("--report", help="summary file, .csv or .json (default: <manifest>_report.csv)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="run the valid rows even if others are invalid (reported as 'invalid')")
    p.add_argument("--check", action="store_true", help="validate the manifest and list what would run; run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def _pair_parser() -> argparse.ArgumentParser:
    from .pairing import DEFAULT_KEY

    p = argparse.ArgumentParser(prog="python -m skyclear.batch pair",
                                description="Write a manifest pairing optical and SAR files by name.")
    p.add_argument("--optical", required=True, help="glob of optical files, e.g. 'S2/**/*.tif' (quote it)")
    p.add_argument("--sar", help="glob of SAR files (for remove_clouds_sar, fuse_sar_optical, SAR models)")
    p.add_argument("--tool", required=True, help="remove_clouds_sar, remove_clouds_optical, fuse_sar_optical or run_model")
    p.add_argument("--out-dir", required=True, help="folder for the outputs (<optical name><suffix>.tif)")
    p.add_argument("--suffix", help="output name suffix (default per tool, e.g. _cloudfree)")
    p.add_argument("--key", default=DEFAULT_KEY, help="regular expression with named groups that must match "
                                                     "between partners; group 'date' matches within --max-days")
    p.add_argument("--max-days", type=float, default=0, help="largest date gap between partners (default 0)")
    p.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                   help="a parameter for every row, e.g. --set KEEP_CLEAR=true --set MODEL=m.onnx")
    p.add_argument("-o", "--output", required=True, help="manifest to write (.csv or .jsonl)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "pair":
            return _pair(_pair_parser().parse_args(argv[1:]))
        return _run(_run_parser().parse_args(argv))
    except SkyClearError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:   # Ctrl-C: one line (the report, if any, is written), the shell's 128 + SIGINT
        print(f"\n{exc}" if str(exc) else "\ninterrupted", file=sys.stderr)
        return 130


def _pair(args) -> int:
    from .manifest import write_manifest
    from .pairing import pair_scenes

    options = {}
    for item in args.set:
        if "=" not in item:
            print(f"error: --set expects PARAM=VALUE, got {item!r}", file=sys.stderr)
            return 2
        k, v = item.split("=", 1)
        options[k.strip().upper()] = v
    rows, unmatched = pair_scenes(args.optical, args.sar, tool=args.tool, out_dir=args.out_dir, key=args.key,
                                  max_days=args.max_days, suffix=args.suffix, options=options)
    for path in unmatched:
        print(f"no partner for {path}", file=sys.stderr)
    if not rows:
        print("error: no pairs found; nothing written", file=sys.stderr)
        return 1
    write_manifest(rows, args.output)
    print(f"{len(rows)} job(s) written to {args.output}; {len(unmatched)} optical file(s) without a partner")
    return 0


def _run(args) -> int:
    from .manifest import read_manifest
    from .plan import plan_jobs, require_valid
    from .provenance import is_done
    from .runner import run_batch

    if args.check:
        plans = plan_jobs(read_manifest(args.manifest))
        require_valid(plans, args.manifest)
        for plan in plans:
            state = "up to date, would skip" if is_done(plan) else "would run"
            split = f", split {plan.job.split}" if plan.job.split != 1 else ""
            print(f"row {plan.job.row} {plan.job.name}: {plan.job.tool}, {plan.megapixels:.1f} MP{split}: {state}")
        print(f"manifest OK: {len(plans)} job(s)")
        return 0
    report = args.report or os.path.splitext(os.path.abspath(args.manifest))[0] + "_report.csv"
    summary = run_batch(args.manifest, scheduler=args.scheduler, workers=args.workers, threads=args.threads,
                        resume=not args.no_resume, report=report, skip_invalid=args.skip_invalid,
                        progress=not args.quiet)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items()))
    print(f"{len(summary.results)} job(s): {counts}; {summary.seconds:.1f} s; report: {summary.report}")
    return 0 if summary.ok else 1
