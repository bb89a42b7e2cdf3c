"""Peer benchmark: SkyClear vs Deepness (PUTvision/qgis-plugin-deepness v0.6.5) on one model.

    python benchmarks/peer_deepness.py [--sizes 2048 8192] [--repeats 1]

Both tools run the same ONNX file, made here: 3x3 convs 3 -> 32 -> 32 -> 1 (ReLU between) and a
sigmoid, fixed 512x512 spatial input (Deepness needs a static tile), dynamic batch. It carries a
SkyClear card (uint8 RGB / 255 in, float32 out) and the metadata Deepness reads (model_type
"Regression", resolution 1000 cm/px, tile_size 512, tiles_overlap 32, reg_output_scaling 1).
Scenes: 3-band uint8 GeoTIFFs, EPSG:32633, 10 m pixels, 256x256 tiles, DEFLATE (predictor 2),
smooth fields plus noise, written once to a cache folder block by block.

Each run is a fresh process, timed from spawn to exit (whole process, start-up included):
- SkyClear: ``.venv/bin/skyclear-process run skyclear:run_model`` (tile 512, overlap 32, CPU), or with
  ``--skyclear-via batch`` the QGIS-free batch command (``.venv/bin/skyclear-batch MANIFEST --workers 0``,
  one manifest row with the same parameters; no QGIS start-up). Output compression: the tools'
  default DEFLATE, or ``--skyclear-compression zstd|none`` (Deepness writes its float32 result
  uncompressed, so ``none`` compares the same output format).
- Deepness: ``../shared/peers/deepness_headless_example.py`` with the Deepness source on
  PYTHONPATH (batch 4, tile 512, overlap 32; it picks CUDA when present, CPU here). It needs
  ``opencv-python-headless``, which is NOT a project dependency: it is installed once with
  ``pip install --target CACHE --no-deps opencv-python-headless==4.9.0.80`` into a cache folder
  outside the repository (``--peer-deps``); if that fails the Deepness rows are skipped with the
  reason, as they are when its source is absent. No Deepness code is copied into the project.

Peak RSS is each child's own: the process tree is sampled every 20 ms with psutil (summed RSS),
combined with the main process's VmHWM read at the last sample. ``ru_maxrss`` from wait4 is not
used: Linux carries the parent's high-water mark at fork across exec into the child.

Thread settings (OMP_NUM_THREADS, SKYCLEAR_THREADS, ...) are passed through unchanged to both
children; the header line prints them. Run on a quiet machine: the numbers are wall times.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared"
PEERS = SHARED / "peers"
DEEPNESS_SRC = PEERS / "deepness-0.6.5" / "src"
DEEPNESS_RUNNER = PEERS / "deepness_headless_example.py"
SKYCLEAR_PROCESS = REPO / ".venv" / "bin" / "skyclear-process"
SKYCLEAR_BATCH = REPO / ".venv" / "bin" / "skyclear-batch"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
OPENCV_PIN = "opencv-python-headless==4.9.0.80"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "skyclear-bench" / "peer"
DEFAULT_PEER_DEPS = Path.home() / ".cache" / "skyclear-bench" / "peer-deps" / "opencv-python-headless-4.9.0.80"

TILE, OVERLAP, BATCH = 512, 32, 4
COMPRESSIONS = ("deflate", "zstd", "none")   # the tools' COMPRESSION enum, in order
HIDDEN = 32
THREAD_VARS = ("OMP_NUM_THREADS", "SKYCLEAR_THREADS", "OPENBLAS_NUM_THREADS", "GDAL_NUM_THREADS")


# ------------------------------------------------------------------------------- inputs


def benchmark_conv(path: Path, tile: int = TILE, hidden: int = HIDDEN, seed: int = 0) -> Path:
    """The benchmark model: conv3x3 3->hidden, ReLU, conv3x3 hidden->hidden, ReLU,
    conv3x3 hidden->1, sigmoid; input ``image`` (batch, 3, tile, tile), output ``output``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from skyclear.plugin.core.model_card import band, write_card

    rng = np.random.default_rng(seed)

    def weights(name, cout, cin):
        w = rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))
        b = rng.standard_normal(cout) * 0.01
        return [numpy_helper.from_array(w.astype(np.float32), name + "_w"),
                numpy_helper.from_array(b.astype(np.float32), name + "_b")]

    inits = weights("c1", hidden, 3) + weights("c2", hidden, hidden) + weights("c3", 1, hidden)
    pads = [1, 1, 1, 1]
    nodes = [
        helper.make_node("Conv", ["image", "c1_w", "c1_b"], ["h1"], pads=pads, kernel_shape=[3, 3]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2_w", "c2_b"], ["h2"], pads=pads, kernel_shape=[3, 3]),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("Conv", ["r2", "c3_w", "c3_b"], ["logit"], pads=pads, kernel_shape=[3, 3]),
        helper.make_node("Sigmoid", ["logit"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "benchmark_conv",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, tile, tile])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1, tile, tile])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    # what Deepness reads (each value JSON-encoded, as its model_base parses them)
    for key, value in {"model_type": "Regression", "resolution": 1000.0, "tile_size": tile,
                       "tiles_overlap": OVERLAP, "reg_output_scaling": 1.0}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.onnx")
    onnx.save(model, str(tmp))
    rgb = [band(n, clip=(0, 255), scale=255.0, offset=0.0) for n in ("R", "G", "B")]
    write_card(str(tmp), {
        "schema_version": 1, "name": "benchmark-conv", "version": "1.0.0", "task": "generic",
        "description": "peer benchmark: conv3x3 3-32-32-1 + sigmoid, random weights",
        "inputs": [{"name": "image", "role": "optical", "bands": rgb}],
        "outputs": [{"name": "output", "dtype": "float32",
                     "bands": [band("score", clip=(0.0, 1.0), scale=1.0, offset=0.0)]}],
        "tiling": {"tile_size": tile, "size_multiple": 1, "default_overlap": OVERLAP},
        "training": {"data": "none (random weights)", "steps": 0, "metrics": {}}, "license": "CC0-1.0",
    })
    tmp.rename(path)
    return path


def rgb_scene(path: Path, size: int) -> Path:
    """3-band uint8 tiled DEFLATE GeoTIFF, EPSG:32633, 10 m; written 1024 rows at a time."""
    import rasterio
    from rasterio.windows import Window

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate", predictor=2, BIGTIFF="IF_SAFER",
                   photometric="RGB", crs="EPSG:32633",
                   transform=rasterio.transform.from_origin(400000, 5100000, 10, 10))
    rng = np.random.default_rng(size)
    tmp = path.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", **profile) as ds:
        step = 1024
        xx = np.arange(size, dtype=np.float32)[None, :] / 170.0
        for y in range(0, size, step):
            h = min(step, size - y)
            yy = np.arange(y, y + h, dtype=np.float32)[:, None] / 230.0
            base = 110 + 60 * np.sin(yy) * np.cos(xx)
            block = np.stack([base * g for g in (0.8, 1.0, 1.15)]) + rng.normal(0, 12, (3, h, size))
            ds.write(np.clip(block, 0, 255).astype("uint8"), window=Window(0, y, size, h))
    tmp.rename(path)
    return path


# ------------------------------------------------------------------------------- measuring


def _vm_hwm_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def run_measured(cmd, env, log_path: Path, cwd=None) -> dict:
    """Run ``cmd`` as a fresh process; wall seconds from spawn to exit and the child's own peak RSS."""
    import psutil

    peak = {"tree": 0.0, "hwm": 0.0}
    with open(log_path, "w") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        stop = threading.Event()

        def sample():
            try:
                root = psutil.Process(proc.pid)
            except psutil.Error:
                return
            while not stop.is_set():
                try:
                    total = 0
                    for p in [root] + root.children(recursive=True):
                        try:
                            total += p.memory_info().rss
                        except psutil.Error:
                            pass
                    peak["tree"] = max(peak["tree"], total / 2**20)
                    peak["hwm"] = max(peak["hwm"], _vm_hwm_mb(proc.pid))
                except psutil.Error:
                    return
                stop.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        wall = time.perf_counter() - started
        stop.set()
        sampler.join()
    return {"code": code, "wall_s": wall, "peak_rss_mb": max(peak["tree"], peak["hwm"]),
            "sampled_tree_mb": peak["tree"], "vm_hwm_mb": peak["hwm"]}


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])[:300]


def run_skyclear(model: Path, scene: Path, work: Path, via: str = "processing", compression: str = "deflate") -> dict:
    out = work / f"skyclear_{scene.stem}.tif"
    if out.exists():
        out.unlink()
    params = {"MODEL": model, "OPTICAL": scene, "OUTPUT": out, "TILE_SIZE": TILE, "OVERLAP": OVERLAP,
              "DEVICE": 1,  # 1 = CPU (enum index; the manifest takes it too)
              "COMPRESSION": COMPRESSIONS.index(compression)}
    if via == "batch":
        manifest = work / f"skyclear_{scene.stem}.csv"
        manifest.write_text("tool," + ",".join(params) + "\nrun_model," + ",".join(map(str, params.values())) + "\n")
        cmd = [str(SKYCLEAR_BATCH), str(manifest), "--workers", "0", "--quiet", "--no-resume",
               "--report", str(work / f"skyclear_{scene.stem}_report.csv")]
    else:
        cmd = [str(SKYCLEAR_PROCESS), "run", "skyclear:run_model", "--"] + [f"{k}={v}" for k, v in params.items()]
    log = work / f"skyclear_{scene.stem}.log"
    result = run_measured(cmd, dict(os.environ), log)
    if result["code"] != 0 or not out.exists():
        result["error"] = f"exit {result['code']}: {_tail(log)}"
    else:
        result["check"] = _check_output(out, scene)
        out.unlink()
    return result


def run_deepness(model: Path, scene: Path, work: Path, peer_deps: Path) -> dict:
    out_json = work / f"deepness_{scene.stem}.json"
    if out_json.exists():
        out_json.unlink()
    env = dict(os.environ)
    env["PEER_MODEL"] = str(model)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(DEEPNESS_SRC), str(peer_deps)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    cmd = [str(VENV_PYTHON), str(DEEPNESS_RUNNER), str(scene), str(out_json),
           "--batch", str(BATCH), "--tile", str(TILE), "--overlap", str(OVERLAP)]
    log = work / f"deepness_{scene.stem}.log"
    result = run_measured(cmd, env, log, cwd=str(work))
    info = {}
    if out_json.exists():
        info = json.loads(out_json.read_text())
    if result["code"] != 0 or not info.get("ok"):
        result["error"] = f"exit {result['code']}: {info.get('error') or _tail(log)}"
    scratch = work / "grid_data"  # Deepness's uncompressed intermediate, written to its cwd
    if scratch.exists():
        scratch.unlink()
    out = info.get("output")
    if out and os.path.exists(out):
        result["check"] = _check_output(Path(out), scene)
        os.remove(out)  # Deepness's own temporary result (a float32 GeoTIFF)
    return result


def _check_output(out: Path, scene: Path) -> str:
    """One line saying the output covers the scene (same grid); not a quality comparison."""
    import rasterio

    with rasterio.open(out) as o, rasterio.open(scene) as s:
        same = (o.width, o.height) == (s.width, s.height) and o.crs == s.crs
        return f"{o.width}x{o.height} {o.dtypes[0]}{'' if same else ' (grid differs from input)'}"


def ensure_peer_deps(folder: Path) -> str:
    """Install opencv-python-headless for Deepness into ``folder``; '' when ready, else why not."""
    if (folder / "cv2").is_dir():
        return ""
    folder.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(VENV_PYTHON), "-m", "pip", "install", "-q", "--target", str(folder), "--no-deps", OPENCV_PIN]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not (folder / "cv2").is_dir():
        shutil.rmtree(folder, ignore_errors=True)
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"could not install {OPENCV_PIN} into {folder}: {last}"
    return ""


def deepness_unavailable(peer_deps: Path, install: bool) -> str:
    if not DEEPNESS_SRC.is_dir():
        return f"Deepness source not found at {DEEPNESS_SRC}"
    if not DEEPNESS_RUNNER.is_file():
        return f"Deepness headless runner not found at {DEEPNESS_RUNNER}"
    if not (peer_deps / "cv2").is_dir():
        if not install:
            return f"opencv-python-headless not in {peer_deps} (run without --no-install to install it)"
        return ensure_peer_deps(peer_deps)
    return ""


# ------------------------------------------------------------------------------- table


def summarise(runs) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[-1]["error"] if runs else "not run"}
    return {"wall_s": statistics.median(r["wall_s"] for r in ok),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in ok), "n": len(ok),
            "check": ok[-1].get("check", ""),
            "runs": ", ".join(f"{r['wall_s']:.1f} s (tree {r['sampled_tree_mb']:.0f} / VmHWM {r['vm_hwm_mb']:.0f} MB)"
                              for r in ok)}


def cell(s: dict) -> str:
    if "error" in s:
        return f"failed: {s['error']}" if not s.get("skipped") else f"skipped: {s['error']}"
    return f"{s['wall_s']:.1f} s / {s['peak_rss_mb']:,.0f} MB".replace(",", " ")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--repeats", type=int, default=1, help="runs per tool and size (median wall, max RSS)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="scenes, model and logs")
    parser.add_argument("--peer-deps", type=Path, default=DEFAULT_PEER_DEPS,
                        help="folder for Deepness's opencv-python-headless (outside the repo)")
    parser.add_argument("--no-install", action="store_true", help="never pip-install the peer's opencv")
    parser.add_argument("--only", choices=["skyclear", "deepness"], help="run one tool only")
    parser.add_argument("--skyclear-via", choices=["processing", "batch"], default="processing",
                        help="SkyClear through qgis_process (default) or the QGIS-free batch command")
    parser.add_argument("--skyclear-compression", choices=COMPRESSIONS, default="deflate",
                        help="SkyClear's output compression (default DEFLATE, the tools' default; Deepness "
                             "writes its float32 result uncompressed, so 'none' is the like-for-like format)")
    args = parser.parse_args(argv)

    cache = args.cache
    cache.mkdir(parents=True, exist_ok=True)
    model = cache / f"benchmark_conv_{TILE}.onnx"
    if not model.exists():
        benchmark_conv(model)
    scenes = {s: rgb_scene(cache / f"rgb_{s}.tif", s) for s in args.sizes}

    skip_deepness = "not requested" if args.only == "skyclear" else deepness_unavailable(args.peer_deps, not args.no_install)
    command = SKYCLEAR_PROCESS if args.skyclear_via == "processing" else SKYCLEAR_BATCH
    skip_skyclear = "not requested" if args.only == "deepness" else (
        "" if command.exists() else f"{command} not found (run `make setup`)")
    threads = ", ".join(f"{v}={os.environ[v]}" for v in THREAD_VARS if v in os.environ) or "none set"
    load = os.getloadavg()
    print(f"model conv3x3 3-32-32-1 + sigmoid ({model.name}); tile {TILE}, overlap {OVERLAP}, CPU; "
          f"{os.cpu_count()} cores, load average {load[0]:.2f} at start; thread variables: {threads}; "
          f"{args.repeats} fresh process(es) per cell (median wall, max peak RSS); SkyClear via "
          f"{'qgis_process' if args.skyclear_via == 'processing' else 'skyclear-batch (no QGIS)'}, "
          f"output compression {args.skyclear_compression} (Deepness: none)")
    if skip_deepness:
        print(f"Deepness rows skipped: {skip_deepness}")
    if skip_skyclear:
        print(f"SkyClear rows skipped: {skip_skyclear}")
    print()
    rows = {}
    for size, scene in scenes.items():
        sky, deep = [], []
        for _ in range(args.repeats):  # alternate the tools so load drifts hit both
            if not skip_skyclear:
                sky.append(run_skyclear(model, scene, cache, args.skyclear_via, args.skyclear_compression))
            if not skip_deepness:
                deep.append(run_deepness(model, scene, cache, args.peer_deps))
        s = summarise(sky) if not skip_skyclear else {"error": skip_skyclear, "skipped": True}
        d = summarise(deep) if not skip_deepness else {"error": skip_deepness, "skipped": True}
        rows[size] = (s, d)

    print("| scene | SkyClear wall / peak RSS | Deepness wall / peak RSS | SkyClear / Deepness wall |")
    print("|---|---|---|---|")
    for size, (s, d) in rows.items():
        ratio = f"{s['wall_s'] / d['wall_s']:.2f}×" if "wall_s" in s and "wall_s" in d else ""
        print(f"| {size}² | {cell(s)} | {cell(d)} | {ratio} |")

    # issue 14's "done" criteria, evaluated on what ran
    print()
    big, small = max(rows), min(rows)
    s_big, d_big = rows[big]
    s_small = rows[small][0]
    if "wall_s" in s_big and "wall_s" in d_big:
        r = s_big["wall_s"] / d_big["wall_s"]
        print(f"- wall at {big}²: SkyClear {r:.2f}× Deepness (target ≤ 0.80×): {'met' if r <= 0.8 else 'NOT met'}")
    if "peak_rss_mb" in s_big and "peak_rss_mb" in s_small and big != small:
        r = s_big["peak_rss_mb"] / s_small["peak_rss_mb"]
        print(f"- SkyClear peak RSS {big}² / {small}²: {r:.2f}× (target ≤ 1.2×): {'met' if r <= 1.2 else 'NOT met'}")
    if "peak_rss_mb" in s_big and "peak_rss_mb" in d_big:
        below = s_big["peak_rss_mb"] < d_big["peak_rss_mb"]
        print(f"- peak RSS at {big}² below Deepness's: {'met' if below else 'NOT met'}")
    for size, (s, d) in rows.items():
        for tool, r in (("SkyClear", s), ("Deepness", d)):
            if r.get("runs"):
                output = f"output {r['check']}" if r.get("check") else "output removed by the tool at exit"
                print(f"- {tool} {size}²: {output}; runs {r['runs']}")
    print(f"- load average {os.getloadavg()[0]:.2f} at the end; logs: {cache}")
    return 1 if any("error" in r and not r.get("skipped") for pair in rows.values() for r in pair) else 0


if __name__ == "__main__":
    sys.exit(main())
