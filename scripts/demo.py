"""`make demo`: run SkyClear's tools headless (through qgis_process) on sample data.

By default it reads the samples in ../shared/data; pass your own rasters instead:

    make demo DEMO_ARGS="--optical S2.tif --sar S1.tif"         # SAR-assisted cloud removal
    make demo DEMO_ARGS="--rgb cloudy_rgb.tif"                  # optical (diffusion) cloud removal
    make demo DEMO_ARGS="--fusion-sar sar.tif --fusion-optical rgb.tif"

Each tool runs only when its bundled model (or, for fusion, the classical method) is
available; outputs go to ./demo_output and the printed table says where.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def qgis_process(algorithm: str, **params) -> float:
    wrapper = Path(sys.prefix) / "bin" / "skyclear-process"
    args = [str(wrapper), "run", algorithm, "--"] + [f"{k}={v}" for k, v in params.items()]
    print("$", " ".join(args), flush=True)
    started = time.time()
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        raise SystemExit(f"{algorithm} failed")
    results = proc.stdout.split("Results", 1)[-1]  # qgis_process echoes the inputs first
    for line in results.splitlines():
        if line.startswith(("OUTPUT", "CLOUD_PROBABILITY", "PROVIDER")):
            print("   ", line)
    return time.time() - started


def evaluate(prediction: str, reference: str, mask: str = None) -> str:
    from skyclear.plugin.core.evaluation import evaluate_restoration

    rows = evaluate_restoration(prediction, reference, mask)
    overall = rows[-1]
    return ", ".join(f"{k.upper()} {v:.3f}" for k, v in overall.items() if k != "band")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO / ".." / "shared" / "data"))
    parser.add_argument("--out", default=str(REPO / "demo_output"))
    parser.add_argument("--optical", help="cloudy Sentinel-2 (13 bands, uint16)")
    parser.add_argument("--sar", help="Sentinel-1 (VV, VH in dB)")
    parser.add_argument("--reference", help="cloud-free reference for the SAR-assisted result (optional)")
    parser.add_argument("--rgb", help="cloudy RGB image for optical cloud removal")
    parser.add_argument("--fusion-sar", help="SAR image for fusion")
    parser.add_argument("--fusion-optical", help="RGB image for fusion")
    args = parser.parse_args()

    from skyclear.plugin.core import jobs

    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    own = any([args.optical, args.rgb, args.fusion_sar])
    summary = []

    # 1. SAR-assisted cloud removal (SEN12MS-CR triplet 5278, held out from training)
    triplet = data / "sen12mscr" / "oriolac_5278"
    optical = args.optical or (None if own else str(triplet / "s2_cloudy.tif"))
    sar = args.sar or (None if own else str(triplet / "s1.tif"))
    reference = args.reference or (None if own else str(triplet / "s2_cloudfree.tif"))
    if optical and sar:
        ok, why = jobs.available("sar_cloud_removal")
        if ok:
            result, prob = out / "sar_cloud_removal.tif", out / "sar_cloud_removal_cloud_probability.tif"
            seconds = qgis_process("skyclear:remove_clouds_sar", OPTICAL=optical, SAR=sar, OUTPUT=result,
                                   CLOUD_PROBABILITY=prob)
            note = f"{seconds:.0f} s"
            if reference:
                note += f"; vs reference: {evaluate(str(result), reference)}"
                note += f" (cloudy input: {evaluate(optical, reference)})"
            summary.append(("SAR-assisted cloud removal", f"{result}, {prob}", note))
        else:
            summary.append(("SAR-assisted cloud removal", "-", why))

    # 2. Optical-only cloud removal (RICE1 pair 32, held out from training)
    rgb = args.rgb or (None if own else str(data / "rice1" / "32_cloudy.png"))
    if rgb:
        ok, why = jobs.available("optical_cloud_removal")
        if ok:
            result = out / "optical_cloud_removal.tif"
            seconds = qgis_process("skyclear:remove_clouds_optical", INPUT=rgb, OUTPUT=result, STEPS=10)
            note = f"{seconds:.0f} s"
            clear = rgb.replace("_cloudy.", "_clear.")
            if not args.rgb and os.path.exists(clear):
                note += f"; vs clear: {evaluate(str(result), clear)} (cloudy input: {evaluate(rgb, clear)})"
            summary.append(("Optical cloud removal (diffusion)", str(result), note))
        else:
            summary.append(("Optical cloud removal (diffusion)", "-", why))

    # 3. SAR-optical fusion (the CFOG city pair)
    fsar = args.fusion_sar or (None if own else str(data / "sar_optical" / "cfog_stest3_sar.tif"))
    fopt = args.fusion_optical or (None if own else str(data / "sar_optical" / "cfog_stest3_optical.tif"))
    if fsar and fopt:
        from skyclear.plugin.core.zoo import bundled_models

        methods = (["network"] if bundled_models("sar_optical_fusion") else []) + ["guided"]
        for method in methods:
            result = out / f"fusion_{method}.tif"
            seconds = qgis_process("skyclear:fuse_sar_optical", SAR=fsar, OPTICAL=fopt,
                                   METHOD=["network", "laplacian", "guided", "average", "optical"].index(method),
                                   OUTPUT=result)
            summary.append((f"SAR-optical fusion ({method})", str(result), f"{seconds:.0f} s"))

    print("\n| tool | output | notes |\n|---|---|---|")
    for row in summary:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
