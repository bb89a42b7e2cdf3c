"""Batch benchmark: scenes per minute and MP/s for one process vs a Dask LocalCluster, and
one huge scene split into row bands across workers.

    python benchmarks/batch.py [--scenes 6] [--size 768] [--split-size 10980] [--skip-split]

Throughput: ``--scenes`` SAR cloud-removal jobs (bundled IB-HFN, tile 256) on mosaics of
real SEN12MS-CR patches (13-band uint16 S2 + 2-band dB S1 from ../shared/data/sen12mscr,
``--size``² each, UTM georeference), run (a) in one process with all cores for
onnxruntime, (b) on a LocalCluster of 1 worker x all cores, (c) of 2 workers x 1 thread.
Split: a ``--split-size``² 3-band uint8 synthetic scene through a small 3x3 conv net
(3 -> 8 -> 3, tile 512, overlap 32) with ``run_model``, whole in one process vs SPLIT=2
on 2 workers; the split output is checked pixel for pixel against the whole-scene one.
Each case runs in a fresh subprocess; peak RSS is each process's VmHWM (workers and driver).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / ".." / "shared" / "data"
sys.path.insert(0, str(HERE.parent / "tests"))  # tiny-model factories live with the tests


def vm_hwm_mb(pid: int = 0) -> float:
    with open(f"/proc/{pid or os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------------------- inputs


def mosaic_scenes(cache: Path, count: int, size: int):
    """``count`` (S2, S1) pairs of size x size, each a mosaic of real 256² patches."""
    samples = sorted((DATA / "sen12mscr").iterdir())
    k = -(-size // 256)
    pairs = []
    for n in range(count):
        s2_path, s1_path = cache / f"mosaic{size}_{n}_s2.tif", cache / f"mosaic{size}_{n}_s1.tif"
        if not s2_path.exists():
            for path, name, dtype in ((s2_path, "s2_cloudy.tif", "uint16"), (s1_path, "s1.tif", "float32")):
                tiles = []
                for i in range(k * k):
                    with rasterio.open(samples[(n * 7 + i) % len(samples)] / name) as ds:
                        tiles.append(ds.read())
                rows = [np.concatenate(tiles[r * k:(r + 1) * k], axis=2) for r in range(k)]
                data = np.concatenate(rows, axis=1)[:, :size, :size]
                with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=data.shape[0],
                                   dtype=dtype, crs="EPSG:32631", tiled=True, compress="deflate",
                                   transform=rasterio.transform.from_origin(400000 + n * 20000, 5000000, 10, 10)) as ds:
                    ds.write(data)
        pairs.append((s2_path, s1_path))
    return pairs


def big_scene(cache: Path, size: int) -> Path:
    """A size x size 3-band uint8 scene written strip by strip (never whole in memory)."""
    path = cache / f"rgb_{size}.tif"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    tmp = cache / f"rgb_{size}.part.tif"
    with rasterio.open(tmp, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", tiled=True,
                       compress="deflate", crs="EPSG:32633", BIGTIFF="IF_SAFER",
                       transform=rasterio.transform.from_origin(300000, 5000000, 10, 10)) as ds:
        for y in range(0, size, 512):
            h = min(512, size - y)
            yy, xx = np.mgrid[y:y + h, 0:size] / 200.0
            base = 120 + 60 * np.sin(yy) * np.cos(xx)
            block = base[None] + rng.normal(0, 12, (3, h, size)) + np.array([0, 10, 20])[:, None, None]
            ds.write(np.clip(block, 0, 255).astype("uint8"), window=Window(0, y, size, h))
    tmp.rename(path)
    return path


def conv_model_path(cache: Path) -> str:
    from factories import conv_model

    path = cache / "conv3_8.onnx"
    if not path.exists():
        conv_model(str(path), 3, 3, clip=(0, 255), scale=255.0, out_dtype="uint8", tile=512, overlap=32, hidden=8)
    return str(path)


# --------------------------------------------------------------------------------------- one case


def child(case: dict) -> dict:
    """Run one case in this (fresh) process and report wall time and peak memory."""
    from skyclear.batch import run_batch

    rows, workers, threads = case["rows"], case["workers"], case["threads"]
    out = Path(case["out"])
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for r in rows:
        r["OUTPUT"] = str(out / Path(r["OUTPUT"]).name)
    result = {"startup_s": 0.0}
    if workers == 0:
        t0 = time.time()
        summary = run_batch(rows, workers=0, threads=threads, resume=False, progress=False)
        result["wall_s"] = time.time() - t0
        result["peak_mb"] = [vm_hwm_mb()]
    else:
        from distributed import Client, LocalCluster

        t0 = time.time()
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=40, env={"SKYCLEAR_THREADS": str(threads)})
        client = Client(cluster)
        client.wait_for_workers(workers)
        result["startup_s"] = time.time() - t0
        t0 = time.time()
        summary = run_batch(rows, client=client, threads=threads, resume=False, progress=False)
        result["wall_s"] = time.time() - t0
        result["peak_mb"] = sorted(client.run(vm_hwm_mb).values())
        result["driver_peak_mb"] = vm_hwm_mb()
        client.close()
        cluster.close()
    result["status"] = [r["status"] for r in summary.results]
    result["errors"] = [r["error"] for r in summary.results if r["status"] != "done"]
    result["outputs"] = [list(r.get("outputs", {}).values()) for r in summary.results]
    result["assemble_s"] = sum(r.get("assemble_seconds", 0.0) for r in summary.results)
    return result


def run_case(case: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(case)], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_pixels(a: str, b: str) -> bool:
    with rasterio.open(a) as x, rasterio.open(b) as y:
        px, py = dict(x.profile), dict(y.profile)
        nx, ny = px.pop("nodata"), py.pop("nodata")
        if px != py or not (nx == ny or (nx is not None and ny is not None and np.isnan(nx) and np.isnan(ny))):
            return False
        for row in range(0, x.height, 1024):
            w = Window(0, row, x.width, min(1024, x.height - row))
            if x.read(window=w).tobytes() != y.read(window=w).tobytes():
                return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--split-size", type=int, default=10980)
    parser.add_argument("--split-model-size", type=int, default=2048,
                        help="scene size for the compute-bound split case (IB-HFN); 0 skips it")
    parser.add_argument("--skip-split", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "skyclear-bench-batch"))
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    cores = os.cpu_count() or 1
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    print(f"{cores} cores, load average {load:.1f} at start"
          f"{' (BUSY: other processes share the cores; times are upper bounds)' if load > 0.5 * cores else ''}\n")

    if not args.skip_throughput:
        throughput(cache, args.scenes, args.size, cores)
    if args.skip_split:
        return
    print("\nSplit scene: one scene, whole in one process vs SPLIT=2 on a LocalCluster of 2 workers\n")
    print("| scene | run | workers x threads | wall s | of which assembly s | MP/s | peak RSS per worker MB "
          "| driver peak MB | identical to whole |")
    print("|---|---|---|---:|---:|---:|---|---:|---|")
    size = args.split_size
    scene, model = big_scene(cache, size), conv_model_path(cache)
    split_cases(f"{size}² 3-band uint8, conv 3->8->3 (tile 512)", size,
                {"tool": "run_model", "MODEL": model, "OPTICAL": str(scene)}, cache, cores)
    if args.split_model_size:
        s2, s1 = mosaic_scenes(cache, 1, args.split_model_size)[0]
        split_cases(f"{args.split_model_size}² 13-band S2 + S1, IB-HFN (tile 256)", args.split_model_size,
                    {"tool": "remove_clouds_sar", "OPTICAL": str(s2), "SAR": str(s1)}, cache, cores)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


def throughput(cache: Path, scenes: int, size: int, cores: int) -> None:
    pairs = mosaic_scenes(cache, scenes, size)
    rows = [{"tool": "remove_clouds_sar", "OPTICAL": str(s2), "SAR": str(s1), "OUTPUT": f"scene{n}.tif"}
            for n, (s2, s1) in enumerate(pairs)]
    megapixels = scenes * size ** 2 / 1e6
    print(f"Throughput: {scenes} scenes of {size}² (13-band S2 + S1), remove_clouds_sar, bundled IB-HFN\n")
    print("| run | workers x onnxruntime threads | cluster start s | wall s | scenes/min | MP/s | peak RSS per worker MB |")
    print("|---|---|---:|---:|---:|---:|---|")
    for label, workers, threads in (("1 process, no Dask", 0, cores), ("LocalCluster", 1, cores),
                                    ("LocalCluster", 2, max(1, cores // 2))):
        r = run_case({"rows": rows, "workers": workers, "threads": threads, "out": str(cache / "out")})
        if "error" in r or r["errors"]:
            print(f"| {label} | {max(workers, 1)} x {threads} | failed: {r.get('error') or r['errors'][0]} |")
            continue
        print(f"| {label} | {max(workers, 1)} x {threads} | {r['startup_s']:.1f} | {r['wall_s']:.1f} | "
              f"{60 * scenes / r['wall_s']:.2f} | {megapixels / r['wall_s']:.3f} | "
              f"{', '.join(f'{m:.0f}' for m in r['peak_mb'])} |", flush=True)


def split_cases(title: str, size: int, row: dict, cache: Path, cores: int) -> None:
    whole = None
    for label, workers, threads, split in (("whole, 1 process", 0, cores, 1),
                                           ("SPLIT=2, LocalCluster", 2, max(1, cores // 2), 2)):
        out = cache / f"split_out_{size}_{split}"
        r = run_case({"rows": [dict(row, OUTPUT="big.tif", SPLIT=split)], "workers": workers, "threads": threads,
                      "out": str(out)})
        if "error" in r or r["errors"]:
            print(f"| {title} | {label} | {max(workers, 1)} x {threads} | failed: {r.get('error') or r['errors'][0]} |")
            continue
        same = "reference" if whole is None else str(all(same_pixels(a, b) for a, b in zip(r["outputs"][0], whole)))
        whole = whole or r["outputs"][0]
        print(f"| {title} | {label} | {max(workers, 1)} x {threads} | {r['wall_s']:.1f} | {r['assemble_s']:.1f} | "
              f"{size * size / 1e6 / r['wall_s']:.2f} | {', '.join(f'{m:.0f}' for m in r['peak_mb'])} | "
              f"{r.get('driver_peak_mb', r['peak_mb'][0]):.0f} | {same} |", flush=True)


if __name__ == "__main__":
    main()
