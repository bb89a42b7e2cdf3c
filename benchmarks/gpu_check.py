"""GPU proof: every bundled model through the real jobs (plugin/core/jobs.py) on CPU and CUDA.

    python benchmarks/gpu_check.py [--size 1024] [--gpu-size 4096] [--steps 10] [--smoke]

Usually started by ``benchmarks/gpu_check.sh`` (which can install onnxruntime-gpu; see there).
For each case, synthetic inputs shaped by the model's card (13-band uint16 S2 + 2-band float32
dB S1 for SAR cloud removal, 3-band uint8 RGB for the DE models, 1-band uint8 SAR + RGB for
fusion) are written once; the job runs with ``device="cpu"`` and ``device="gpu"`` on the same
``--size``² scene, every output raster of the two runs is compared (in the output's units,
relative to the band's clip range), and a CUDA-only run on a ``--gpu-size``² scene measures GPU
throughput with the session already warm (sessions are kept per process, as batch workers keep
them, so cuDNN initialisation is paid by the comparison run). Cases:

- each ``sar_cloud_removal`` model (IB-HFN, DSen2-CR baseline): ``remove_clouds_sar``
- each ``optical_cloud_removal_reference`` model: ``remove_clouds_optical(mode="reference")``
  and, with the bundled step graph, ``mode="diffusion"`` (``--steps`` steps, fixed seed)
- each ``sar_optical_fusion`` model: ``fuse_sar_optical(method="network")``
- any other bundled model (e.g. ``generic``): ``run_model`` on inputs shaped by its card
- the peer benchmark conv (3-32-32-1 + sigmoid, tile 512): ``run_model``

Agreement: for every output band, mean |CPU - CUDA| <= ``--tol-mean`` and the 99.9th percentile
<= ``--tol-p999`` of the band's clip range (max is printed too). Exit status: 0 when everything
ran and agreed; 1 when a comparison failed or a job raised; 2 when CUDA is not available (the
CPU part still runs and prints); ``--smoke`` (tiny scene, 2 diffusion steps, no CUDA-only
throughput run) exits 0 without CUDA, after printing "CUDA not available: <reason>".
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------- inputs


def _smooth(rng, bands: int, size: int, y0: int) -> np.ndarray:
    """(bands, h, size) smooth fields plus noise in [0, 1]: compresses and behaves like imagery."""
    h = min(1024, size - y0)
    yy = np.arange(y0, y0 + h, dtype=np.float32)[:, None] / 97.0
    xx = np.arange(size, dtype=np.float32)[None, :] / 131.0
    base = 0.5 + 0.3 * np.sin(yy + 0.3 * np.arange(bands)[:, None, None]) * np.cos(xx)
    return np.clip(base + rng.normal(0, 0.05, (bands, h, size)), 0, 1).astype(np.float32)


def write_scene(path: Path, size: int, bands: int, dtype: str, low: float, high: float, seed: int) -> str:
    """A bands x size x size GeoTIFF (EPSG:32633, 10 m) with values in [low, high], block by block."""
    import rasterio
    from rasterio.windows import Window

    if path.exists():
        return str(path)
    profile = dict(driver="GTiff", width=size, height=size, count=bands, dtype=dtype, tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate", BIGTIFF="IF_SAFER",
                   crs="EPSG:32633", transform=rasterio.transform.from_origin(500000, 4600000, 10, 10))
    if bands >= 4 or bands == 2:
        profile["photometric"] = "MINISBLACK"
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", **profile) as ds:
        for y in range(0, size, 1024):
            block = low + (high - low) * _smooth(rng, bands, size, y)
            if np.dtype(dtype).kind in "ui":
                block = np.rint(block)
            ds.write(block.astype(dtype), window=Window(0, y, size, block.shape[1]))
    tmp.rename(path)
    return str(path)


class Scenes:
    """Synthetic inputs per (kind, size), cached in ``folder``."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def s2(self, size, bands=13):
        return write_scene(self.folder / f"s2_{bands}b_{size}.tif", size, bands, "uint16", 200, 5000, 1)

    def s1_db(self, size, bands=2):
        return write_scene(self.folder / f"s1_{bands}b_{size}.tif", size, bands, "float32", -22, -3, 2)

    def rgb(self, size, bands=3):
        return write_scene(self.folder / f"rgb_{bands}b_{size}.tif", size, bands, "uint8", 20, 235, 3)

    def sar8(self, size, bands=1):
        return write_scene(self.folder / f"sar8_{bands}b_{size}.tif", size, bands, "uint8", 10, 245, 4)

    def like(self, spec, size):
        """A scene for any card input: dB-like float32, uint16 or uint8 by the first band's clip."""
        clip = spec.bands[0].clip
        if clip and clip[0] < 0:
            return self.s1_db(size, len(spec.bands))
        if clip and clip[1] > 255:
            return self.s2(size, len(spec.bands))
        return self.rgb(size, len(spec.bands))


# ------------------------------------------------------------------------------- cases


class Case:
    def __init__(self, name: str, run: Callable[[str, int, str], object], clip_ranges: Dict[str, List[float]]):
        self.name = name
        self.run = run                # run(device, size, output_path) -> RunReport
        self.clip_ranges = clip_ranges  # output name -> per-band clip span (for tolerances)


def _spans(spec, fallback: float = 1.0) -> List[float]:
    return [float(b.clip[1] - b.clip[0]) if b.clip else fallback for b in spec.bands]


def build_cases(scenes: Scenes, steps: int, cache: Path, only: Optional[List[str]] = None) -> List[Case]:
    from skyclear.plugin.core import jobs
    from skyclear.plugin.core.zoo import bundled_models

    models = bundled_models()
    steps_model = [p for p, c in models if c.task == "optical_cloud_removal_diffusion_step"]
    cases: List[Case] = []
    for path, card in models:
        stem = Path(path).stem
        outs = {o.name: _spans(o) for o in card.outputs}
        if card.task == "sar_cloud_removal":
            n_opt = len(card.inputs_with_role("optical")[0].bands)
            n_sar = len(card.inputs_with_role("sar")[0].bands)

            def run(device, size, out, path=path, n_opt=n_opt, n_sar=n_sar):
                return jobs.remove_clouds_sar(model=path, optical=scenes.s2(size, n_opt), sar=scenes.s1_db(size, n_sar),
                                              output=out, device=device)

            outs = {card.outputs[0].name: outs[card.outputs[0].name], "cloud_probability": [1.0]}
            cases.append(Case(stem, run, outs))
        elif card.task == "optical_cloud_removal_reference":
            n = len(card.inputs[0].bands)

            def run_ref(device, size, out, path=path, n=n):
                return jobs.remove_clouds_optical(model=path, optical=scenes.rgb(size, n), output=out,
                                                  mode="reference", device=device)

            cases.append(Case(f"{stem} (reference)", run_ref, outs))
            for step_path in steps_model:
                def run_de(device, size, out, path=path, step_path=step_path, n=n):
                    return jobs.remove_clouds_optical(model=path, step_model=step_path, optical=scenes.rgb(size, n),
                                                      output=out, mode="diffusion", steps=steps, seed=0,
                                                      device=device)

                cases.append(Case(f"{stem} + {Path(step_path).stem} ({steps} steps)", run_de, outs))
        elif card.task == "sar_optical_fusion":
            n_opt = len(card.inputs_with_role("optical")[0].bands)
            n_sar = len(card.inputs_with_role("sar")[0].bands)

            def run_fusion(device, size, out, path=path, n_opt=n_opt, n_sar=n_sar):
                return jobs.fuse_sar_optical(model=path, method="network", sar=scenes.sar8(size, n_sar),
                                             optical=scenes.rgb(size, n_opt), output=out, device=device)

            cases.append(Case(stem, run_fusion, outs))
        elif card.task != "optical_cloud_removal_diffusion_step":  # step graphs run inside the DE case
            optical = card.inputs_with_role("optical")[0]
            sar = (card.inputs_with_role("sar") or [None])[0]

            def run_any(device, size, out, path=path, optical=optical, sar=sar):
                return jobs.run_model(model=path, optical=scenes.like(optical, size), output=out, device=device,
                                      sar=scenes.like(sar, size) if sar is not None else None)

            cases.append(Case(stem, run_any, outs))
    sys.path.insert(0, str(HERE))
    from peer_deepness import benchmark_conv

    conv = cache / "benchmark_conv_512.onnx"
    if not conv.exists():
        benchmark_conv(conv)

    def run_conv(device, size, out):
        return jobs.run_model(model=str(conv), optical=scenes.rgb(size), output=out, device=device)

    cases.append(Case("benchmark conv 3-32-32-1", run_conv, {"output": [1.0]}))
    if only:
        cases = [c for c in cases if any(o in c.name for o in only)]
    return cases


# ------------------------------------------------------------------------------- checking


def compare(cpu: Dict[str, str], gpu: Dict[str, str], spans: Dict[str, List[float]], tol_mean: float,
            tol_p999: float):
    """(ok, text): band by band, |CPU - CUDA| relative to the band's clip span, read block by block."""
    import rasterio

    problems, worst = [], (0.0, "")
    for name, cpu_path in cpu.items():
        if name not in gpu:
            return False, f"output {name} missing from the CUDA run"
        band_spans = spans.get(name) or [1.0]
        with rasterio.open(cpu_path) as a, rasterio.open(gpu[name]) as b:
            if (a.count, a.width, a.height) != (b.count, b.width, b.height):
                return False, f"{name}: shapes differ"
            for band in range(1, a.count + 1):
                span = band_spans[min(band, len(band_spans)) - 1]
                total, count, peak, sample = 0.0, 0, 0.0, []
                for _, window in a.block_windows(band):
                    da = a.read(band, window=window, masked=True).astype(np.float64)
                    db = b.read(band, window=window, masked=True).astype(np.float64)
                    d = np.abs(da - db).filled(0.0).ravel() / span
                    total, count, peak = total + d.sum(), count + d.size, max(peak, float(d.max(initial=0.0)))
                    sample.append(d[:: max(1, d.size // 4096)])
                mean = total / max(count, 1)
                p999 = float(np.quantile(np.concatenate(sample), 0.999)) if sample else 0.0
                if peak > worst[0]:
                    worst = (peak, f"{name} band {band}")
                if mean > tol_mean or p999 > tol_p999:
                    problems.append(f"{name} band {band}: mean {mean:.1e}, p99.9 {p999:.1e}, max {peak:.1e}")
    if problems:
        return False, "; ".join(problems)
    return True, f"max |diff| {worst[0]:.1e} of range ({worst[1] or 'all equal'})"


def cleanup(outputs) -> None:
    for path in (outputs or {}).values():
        for p in (path, path + ".aux.xml"):
            if os.path.exists(p):
                os.remove(p)


def timed(case: Case, device: str, size: int, folder: Path, tag: str):
    out = str(folder / f"{tag}_{device}_{size}_{abs(hash(case.name)) % 10**8}.tif")
    started = time.perf_counter()
    report = case.run(device, size, out)
    return report, time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="scene side for the CPU vs CUDA comparison")
    parser.add_argument("--gpu-size", type=int, default=4096, help="scene side for CUDA throughput (0: skip)")
    parser.add_argument("--steps", type=int, default=10, help="diffusion steps")
    parser.add_argument("--tol-mean", type=float, default=1e-3, help="mean |diff| / clip span")
    parser.add_argument("--tol-p999", type=float, default=1e-2, help="99.9th percentile |diff| / clip span")
    parser.add_argument("--budget", type=float, default=420,
                        help="seconds after which the large CUDA throughput runs are skipped (gpu_check.sh "
                             "stops everything at 600 s)")
    parser.add_argument("--only", nargs="+", help="cases whose name contains one of these")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny CPU-first check: size 256, 2 steps, no throughput run; exit 0 without CUDA")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "skyclear-bench" / "gpu_check")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.steps, args.gpu_size = min(args.size, 256), min(args.steps, 2), 0

    import onnxruntime as ort

    if hasattr(ort, "preload_dlls") and "CUDAExecutionProvider" in ort.get_available_providers():
        try:  # CUDA/cuDNN from the nvidia-* wheels that gpu_check.sh --install-gpu put beside it
            ort.preload_dlls()
        except Exception as exc:  # the system libraries may still do
            print(f"note: onnxruntime.preload_dlls() failed: {exc}")
    from skyclear.plugin.core.pipelines.generic import keep_sessions
    from skyclear.plugin.core.runtime import gpu_status

    keep_sessions()  # as batch workers do: the large CUDA run reuses the warm session

    cuda, reason = gpu_status()
    started = time.perf_counter()
    scenes = Scenes(args.cache / "inputs")
    work = args.cache / "outputs"
    work.mkdir(parents=True, exist_ok=True)
    print(f"onnxruntime {ort.__version__} ({', '.join(ort.get_available_providers())}); {os.cpu_count()} CPU cores; "
          f"comparison scene {args.size}², CUDA throughput scene {args.gpu_size or '-'}², DE steps {args.steps}")
    if not cuda:
        print(f"CUDA not available: {reason}")
    print()
    cases = build_cases(scenes, args.steps, args.cache, args.only)
    big_head = f"CUDA MP/s at {args.gpu_size}² (job / model)" if args.gpu_size else "CUDA large scene (skipped)"
    print(f"| case | CPU MP/s at {args.size}² (job / model) | CUDA MP/s at {args.size}² (job / model) | "
          f"{big_head} | CPU vs CUDA |")
    print("|---|---:|---:|---:|---|")
    failed = False
    mp = args.size ** 2 / 1e6

    def rates(report, seconds, megapixels):
        return f"{megapixels / seconds:.3g} / {megapixels / max(report.processor_seconds, 1e-9):.3g}"

    for case in cases:
        cells = [case.name, "", "", "", ""]
        cpu_report = gpu_report = None
        try:
            cpu_report, s = timed(case, "cpu", args.size, work, "a")
            cells[1] = rates(cpu_report, s, mp)
            if not cuda:
                cells[2] = cells[3] = "-"
                cells[4] = "not checked (no CUDA)"
            else:
                gpu_report, s = timed(case, "gpu", args.size, work, "b")
                cells[2] = rates(gpu_report, s, mp) + f" ({gpu_report.provider})"
                ok, detail = compare(cpu_report.outputs, gpu_report.outputs, case.clip_ranges,
                                     args.tol_mean, args.tol_p999)
                cells[4] = ("agree: " if ok else "DIFFER: ") + detail
                failed |= not ok
                if args.gpu_size and time.perf_counter() - started > args.budget:
                    cells[3] = f"skipped (past the {args.budget:.0f} s budget)"
                elif args.gpu_size:
                    big, s = timed(case, "gpu", args.gpu_size, work, "c")
                    cells[3] = rates(big, s, args.gpu_size ** 2 / 1e6)
                    cleanup(big.outputs)
        except Exception as exc:  # report and go on with the other models
            failed = True
            cells[4] = f"ERROR {type(exc).__name__}: {str(exc)[:200]}"
            traceback.print_exc(file=sys.stderr)
        finally:
            cleanup(cpu_report.outputs if cpu_report else None)
            cleanup(gpu_report.outputs if gpu_report else None)
        print("| " + " | ".join(cells) + " |", flush=True)
    print()
    print("- MP/s: scene megapixels / seconds of the whole job (open, read, run, write) / of model calls only")
    print(f"- total {time.perf_counter() - started:.0f} s; inputs cached in {scenes.folder}")
    if failed:
        return 1
    if not cuda:
        print(f"- GPU path NOT proven: CUDA not available: {reason}")
        return 0 if args.smoke else 2
    print("- GPU path proven: every case ran on CUDA and agrees with CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
