"""`make demo`: run SkyClear's tools headless (through qgis_process) on sample data.

By default it reads the samples in ../shared/data; pass your own rasters instead:

    make demo DEMO_ARGS="--optical S2.tif --sar S1.tif"         # SAR-assisted cloud removal
    make demo DEMO_ARGS="--rgb cloudy_rgb.tif"                  # optical (diffusion) cloud removal
    make demo DEMO_ARGS="--fusion-sar sar.tif --fusion-optical rgb.tif"

Each tool runs only when its bundled model (or, for fusion, the classical method) is
available; outputs go to ./demo_output and the printed table says where. Parameter names,
outputs and choices come from the tool registry (plugin/core/tools.py).
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


def run_tool(spec, inputs, out: Path, stem: str, **options):
    """Run a registry tool through qgis_process: its parameter names, outputs and choice
    indexes come from ``spec``. Returns (seconds, {output parameter: path})."""
    from skyclear.plugin.core import tools

    params = {spec.input(role).param: path for role, path in inputs.items()}
    outputs = {spec.outputs[0].param: str(out / f"{stem}.tif")}
    outputs.update({o.param: tools.sibling_path(outputs[spec.outputs[0].param], o.sibling) for o in spec.outputs[1:]})
    for keyword, value in options.items():
        option = spec.option(keyword)
        params[option.param] = list(option.choices).index(value) if option.kind == tools.CHOICE else value
    return qgis_process(f"skyclear:{spec.name}", **params, **outputs), outputs


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

    from skyclear.plugin.core import tools
    from skyclear.plugin.core.zoo import bundled_models

    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    own = any([args.optical, args.rgb, args.fusion_sar])
    summary = []

    def sample(given, *parts):
        return given or (None if own else str(data.joinpath(*parts)))

    # 1. SAR-assisted cloud removal (SEN12MS-CR triplet 5278, held out from training)
    spec = tools.tool("sar_cloud_removal")
    inputs = {"optical": sample(args.optical, "sen12mscr", "oriolac_5278", "s2_cloudy.tif"),
              "sar": sample(args.sar, "sen12mscr", "oriolac_5278", "s1.tif")}
    reference = sample(args.reference, "sen12mscr", "oriolac_5278", "s2_cloudfree.tif")
    if all(inputs.values()):
        ok, why = tools.available(spec)
        if ok:
            seconds, files = run_tool(spec, inputs, out, spec.key)
            note = f"{seconds:.0f} s"
            if reference:
                note += f"; vs reference: {evaluate(files['OUTPUT'], reference)}"
                note += f" (cloudy input: {evaluate(inputs['optical'], reference)})"
            summary.append((spec.title, ", ".join(files.values()), note))
        else:
            summary.append((spec.title, "-", why))

    # 2. Optical-only cloud removal (RICE1 pair 32, held out from training)
    spec = tools.tool("optical_cloud_removal")
    rgb = sample(args.rgb, "rice1", "32_cloudy.png")
    if rgb:
        ok, why = tools.available(spec)
        if ok:
            seconds, files = run_tool(spec, {"optical": rgb}, out, spec.key)   # the card's steps and samples
            note = f"{seconds:.0f} s"
            clear = rgb.replace("_cloudy.", "_clear.")
            if not args.rgb and os.path.exists(clear):
                note += f"; vs clear: {evaluate(files['OUTPUT'], clear)} (cloudy input: {evaluate(rgb, clear)})"
            summary.append((spec.title, files["OUTPUT"], note))
        else:
            summary.append((spec.title, "-", why))

    # 3. SAR-optical fusion (the CFOG city pair): the network when bundled, and a classical method
    spec = tools.tool("fusion")
    inputs = {"sar": sample(args.fusion_sar, "sar_optical", "cfog_stest3_sar.tif"),
              "optical": sample(args.fusion_optical, "sar_optical", "cfog_stest3_optical.tif")}
    if all(inputs.values()):
        network = spec.slot("model")
        methods = (["network"] if bundled_models(network.default_task) else []) + ["guided"]
        for method in methods:
            seconds, files = run_tool(spec, inputs, out, f"fusion_{method}", method=method)
            summary.append((f"{spec.title} ({method})", files["OUTPUT"], f"{seconds:.0f} s"))

    print("\n| tool | output | notes |\n|---|---|---|")
    for row in summary:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
