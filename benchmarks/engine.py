"""Engine benchmark: throughput and peak memory of streaming tiled inference vs. a naive
read-everything / run / write-everything baseline, on the CPU provider.

    python benchmarks/engine.py [--sizes 1024 2048 4096 10980] [--naive-max 4096]

Each case runs in a fresh subprocess that reports its own peak RSS (VmHWM). Scenes are
13-band uint16 (Sentinel-2-like, smooth fields plus noise so they compress like real data),
written once to a cache folder; the real case is the 12-band Major-TOM scene in
../shared/data/scenes. The model is a small 3x3 conv net (13 -> 8 -> 13 channels);
``--peer-size`` adds the peer benchmark's conv on its 3-band uint8 scene.

Overhead is printed twice: wall time over the model time measured inside the run (which grows when
I/O takes a core from the model), and over the model alone on the same tiles and batches.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the tiny-model factories live with the tests

TILE, OVERLAP, BANDS = 512, 32, 13
REAL_SCENE = HERE.parent / ".." / "shared" / "data" / "scenes" / "majortom_199U_1099R_S2B_MSIL2A_20200223.tif"


def synthetic_scene(path: Path, size: int, bands: int = BANDS) -> Path:
    """Write a size x size scene block by block (never whole in memory)."""
    if path.exists():
        return path
    profile = dict(driver="GTiff", width=size, height=size, count=bands, dtype="uint16", tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate", predictor=2, BIGTIFF="IF_SAFER",
                   crs="EPSG:32633", transform=rasterio.transform.from_origin(300000, 5000000, 10, 10))
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", **profile) as ds:
        step = 1024
        for y in range(0, size, step):
            h = min(step, size - y)
            for x in range(0, size, step):
                w = min(step, size - x)
                yy, xx = np.mgrid[y:y + h, x:x + w] / 300.0
                base = 1500 + 800 * np.sin(yy) * np.cos(xx)
                block = base[None] + rng.normal(0, 60, (bands, h, w)) + np.arange(bands)[:, None, None] * 50
                ds.write(np.clip(block, 0, 10000).astype("uint16"), window=Window(x, y, w, h))
    tmp.rename(path)
    return path


def swath_edge_scene(scene: Path) -> Path:
    """``scene`` with nodata (0) beyond a slanted swath edge over ~45 % of it, as Sentinel-2 tiles at the
    edge of an orbit have; written block by block."""
    path = scene.with_name(scene.stem + "_edge.tif")
    if path.exists():
        return path
    tmp = path.with_suffix(".part.tif")
    with rasterio.open(scene) as src:
        profile = dict(src.profile, nodata=0)
        with rasterio.open(tmp, "w", **profile) as dst:
            for _, window in src.block_windows(1):
                block = src.read(window=window)
                rows, cols = np.mgrid[window.row_off:window.row_off + window.height,
                                      window.col_off:window.col_off + window.width]
                block[:, cols < 0.3 * src.width + 0.3 * rows] = 0
                dst.write(block, window=window)
    tmp.rename(path)
    return path


def model_for(bands: int, folder: Path, hidden: int = 8) -> str:
    from factories import conv_model

    path = folder / f"conv{bands}_{hidden}.onnx"
    if not path.exists():
        conv_model(str(path), bands, bands, clip=(0, 10000), scale=10000.0, out_dtype="uint16",
                   tile=TILE, overlap=OVERLAP, hidden=hidden)
    return str(path)


# --------------------------------------------------------------------------------------- cases


def model_alone_seconds(model: str, tiles: int, tile: int, batch: int = 4) -> float:
    """The model by itself on ``tiles`` full tiles of random input, ``batch`` at a time and the rest
    last (the engine's batches, except that it also drops tiles without data from inside a batch;
    same session settings): the time a run could take with free I/O. The engine's own model time is
    measured while I/O competes for the cores, so it is larger than this."""
    from skyclear.plugin.core.model_card import card_from_session
    from skyclear.plugin.core.runtime import create_session

    session = create_session(model, "cpu")[0]
    card = card_from_session(session, model)
    rng = np.random.default_rng(0)
    feeds = {t.name: rng.random((batch, len(t.bands), tile, tile), dtype=np.float32) for t in card.inputs}
    sizes = [batch] * (tiles // batch) + ([tiles % batch] if tiles % batch else [])
    if not sizes:
        return float("nan")
    session.run(None, {k: v[:sizes[0]] for k, v in feeds.items()})   # warm-up
    tick = time.perf_counter()
    for n in sizes:
        session.run(None, {k: v[:n] for k, v in feeds.items()})
    return time.perf_counter() - tick


def _timings(report, model: str) -> dict:
    """The run's times and peak RSS, then the model alone (after the peak is read: its session
    and inputs must not count)."""
    result = {"seconds": report.seconds, "model_seconds": report.processor_seconds,
              "peak_rss_mb": own_peak_rss_mb()}
    result["model_alone_seconds"] = model_alone_seconds(model, report.tiles - report.tiles_skipped, report.tile_size)
    return result


def run_engine(model: str, scene: str, out: str, compression: str = "deflate") -> dict:
    from skyclear.plugin.core import jobs

    with rasterio.open(scene) as ds:  # the benchmark model's bands are generic: feed the file's order
        bands = list(range(1, ds.count + 1))
    report = jobs.run_model(model=model, optical=scene, output=out, tile_size=TILE, overlap=OVERLAP,
                            device="cpu", compression=compression, optical_bands=bands)
    return _timings(report, model)


def synthetic_sar(optical: Path) -> Path:
    """A 2-band float32 dB raster (VV, VH) on the optical grid, for the IB-HFN case."""
    path = optical.with_name(optical.stem + "_sar.tif")
    if not path.exists():
        with rasterio.open(optical) as src:
            profile = dict(driver="GTiff", width=src.width, height=src.height, count=2, dtype="float32",
                           tiled=True, compress="deflate", crs=src.crs, transform=src.transform)
        rng = np.random.default_rng(1)
        with rasterio.open(path, "w", **profile) as dst:
            for y in range(0, profile["height"], 1024):
                h = min(1024, profile["height"] - y)
                block = rng.normal(-12, 3, (2, h, profile["width"])).astype("float32")
                dst.write(block, window=Window(0, y, profile["width"], h))
    return path


def run_ibhfn(model: str, scene: str, out: str, compression: str = "deflate") -> dict:
    """The bundled IB-HFN (default tile 256) on a 13-band scene plus synthetic SAR."""
    from skyclear.plugin.core import jobs
    from skyclear.plugin.core.zoo import default_model

    report = jobs.remove_clouds_sar(optical=scene, sar=str(synthetic_sar(Path(scene))), output=out,
                                    device="cpu", compression=compression)
    for path in report.outputs.values():
        os.remove(path)
    return _timings(report, default_model("sar_cloud_removal"))


def run_naive(model: str, scene: str, out: str, compression: str = "deflate") -> dict:
    """Read everything, run the model on the whole array in one call, write everything."""
    import onnxruntime as ort

    started = time.time()
    with rasterio.open(scene) as src:
        data = src.read().astype(np.float32)
        profile = src.profile
    x = (np.clip(data, 0, 10000) / 10000.0)[None]
    del data
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    tick = time.time()
    y = session.run(None, {"optical": x})[0][0]
    model_seconds = time.time() - tick
    del x
    result = np.clip(np.rint(y * 10000), 0, 65535).astype("uint16")
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(result)
    return {"seconds": time.time() - started, "model_seconds": model_seconds}


def own_peak_rss_mb() -> float:
    """This process's own high-water mark (VmHWM). ru_maxrss from wait4 is not: Linux carries
    the parent's mark at fork across exec into it."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def child(args) -> None:
    fn = {"engine": run_engine, "naive": run_naive, "ibhfn": run_ibhfn}[args.case]
    result = fn(args.model, args.scene, args.out, args.compression)
    result.setdefault("peak_rss_mb", own_peak_rss_mb())
    print(json.dumps(result))


def overheads(run: dict) -> str:
    """Two table cells: wall time over the model time measured inside the run, and over the model
    alone (``model_alone_seconds``), minus 1."""
    if "seconds" not in run:
        return f"{run.get('error', '')} |"
    return (f"{run['seconds'] / run['model_seconds'] - 1:.0%} | "
            f"{run['seconds'] / run['model_alone_seconds'] - 1:.0%}")


def measure(case: str, model: str, scene: str, workdir: Path, compression: str = "deflate",
            threads: int = 0) -> dict:
    out = workdir / f"out_{case}.tif"
    cmd = [sys.executable, __file__, "--child", case, "--model", model, "--scene", scene, "--out", str(out),
           "--compression", compression]
    env = dict(os.environ, SKYCLEAR_THREADS=str(threads)) if threads else None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _, status, _ = os.wait4(proc.pid, 0)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    if status != 0:
        return {"error": (stderr.strip().splitlines() or ["killed"])[-1][:80]}
    result = json.loads(stdout.strip().splitlines()[-1])
    if out.exists():
        out.unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1024, 2048, 4096, 10980])
    parser.add_argument("--naive-max", type=int, default=4096,
                        help="largest scene for the naive baseline (10980² would need ~20 GB)")
    parser.add_argument("--heavy-size", type=int, default=2048,
                        help="also run a heavier conv (64 hidden channels) on this scene size (0: skip)")
    parser.add_argument("--edge-size", type=int, default=4096,
                        help="also run a scene of this size with a nodata swath edge, and the IB-HFN "
                             "case with one (0: skip)")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "skyclear-bench"))
    parser.add_argument("--ibhfn-size", type=int, default=2048,
                        help="also run the bundled IB-HFN (with synthetic SAR) on this scene size (0: skip)")
    parser.add_argument("--peer-size", type=int, default=0,
                        help="also run the peer benchmark's conv (3->32->32->1, float32 output) on its 3-band "
                             "uint8 scene of this size (0: skip)")
    parser.add_argument("--compression", default="deflate", choices=["deflate", "zstd", "none"],
                        help="output compression of the engine runs (the naive baseline writes DEFLATE)")
    parser.add_argument("--threads", type=int, default=0,
                        help="onnxruntime intra-op threads of the engine runs (SKYCLEAR_THREADS; 0 = all cores)")
    parser.add_argument("--child", choices=["engine", "naive", "ibhfn"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--scene", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.case = args.child
        return child(args)

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    # (label, scene, size, model, naive baseline too?): run_naive reads the model_for() scaling
    cases = [(f"synthetic {s}²", synthetic_scene(cache / f"scene_{s}.tif", s), s, model_for(BANDS, cache), True)
             for s in args.sizes]
    if REAL_SCENE.exists():
        with rasterio.open(REAL_SCENE) as ds:
            cases.append((f"Major-TOM {ds.width}² (real)", REAL_SCENE, ds.width, model_for(ds.count, cache), True))
    if args.heavy_size:
        s = args.heavy_size
        cases.append((f"synthetic {s}², conv n->64->n", synthetic_scene(cache / f"scene_{s}.tif", s), s,
                       model_for(BANDS, cache, 64), True))
    if args.edge_size:
        s = args.edge_size
        cases.append((f"synthetic {s}², swath edge (45 % nodata)",
                      swath_edge_scene(synthetic_scene(cache / f"scene_{s}.tif", s)), s, model_for(BANDS, cache),
                      True))
    if args.peer_size:
        from peer_deepness import benchmark_conv, rgb_scene  # benchmarks/peer_deepness.py

        s = args.peer_size
        cases.append((f"3-band uint8 {s}², conv 3->32->32->1 (benchmarks/peer_deepness.py)",
                       rgb_scene(cache / f"rgb_{s}.tif", s), s, str(benchmark_conv(cache / "peer_conv.onnx")), False))
    print(f"tile {TILE}, overlap {OVERLAP}, batch 4, CPU provider, {os.cpu_count()} cores, "
          f"output {args.compression}, onnxruntime threads {args.threads or 'all'}; model: conv 3x3 n->8->n unless noted\n")
    header = ("| scene | engine MP/s | engine peak RSS MB | overhead vs model time in the run | "
              "overhead vs the model alone | naive MP/s | naive peak RSS MB |")
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, scene, size, model, with_naive in cases:
        mp = size * size / 1e6
        eng = measure("engine", model, str(scene), cache, args.compression, args.threads)
        naive = (measure("naive", model, str(scene), cache) if with_naive and size <= args.naive_max
                 else {"error": "skipped"})

        def cell(r, key, fmt):
            return fmt.format(r[key]) if key in r else r.get("error", "")

        eng_rate = {"v": mp / eng["seconds"]} if "seconds" in eng else eng
        naive_rate = {"v": mp / naive["seconds"]} if "seconds" in naive else naive
        print(f"| {label} | {cell(eng_rate, 'v', '{:.2f}')} | {cell(eng, 'peak_rss_mb', '{:.0f}')} | "
              f"{overheads(eng)} | {cell(naive_rate, 'v', '{:.2f}')} | {cell(naive, 'peak_rss_mb', '{:.0f}')} |",
              flush=True)
    if args.ibhfn_size:
        size = args.ibhfn_size
        scene = synthetic_scene(cache / f"scene_{size}.tif", size)
        scenes = [("", scene)] + ([(", swath edge (45 % nodata)", swath_edge_scene(scene))] if args.edge_size else [])
        for note, path in scenes:
            run = measure("ibhfn", "", str(path), cache, args.compression, args.threads)
            label = f"synthetic {size}² + SAR{note}, bundled IB-HFN (tile 256)"
            if "seconds" in run:
                print(f"| {label} | {size * size / 1e6 / run['seconds']:.2f} | {run['peak_rss_mb']:.0f} | "
                      f"{overheads(run)} | | |", flush=True)
            else:
                print(f"| {label} | {run['error']} | | | | | |")


if __name__ == "__main__":
    main()
