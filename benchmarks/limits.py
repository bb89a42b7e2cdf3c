"""Distance to the limit: FLOPs each model needs, how fast onnxruntime runs it here, and this
CPU's measured peak.

    python benchmarks/limits.py [--models all|conv|NAME ...] [--threads 1 2] [--runs 5]

For every bundled model in models/zoo (the card gives the tile size; the diffusion step graph is
one denoising step) and the peer benchmark conv (3x3 convs 3-32-32-1 + sigmoid at tile 512,
``peer_deepness.py``):

- FLOPs are counted from the ONNX graph at batch 1 and the card's tile: 2 x multiply-accumulates
  of Conv, ConvTranspose, MatMul, Gemm and Einsum, with tensor shapes from ONNX shape inference
  (data propagation on) after fixing the inputs to (1, C, tile, tile); any shape inference cannot
  resolve is read from one onnxruntime run with the tensor exposed as an output. Ignored (listed
  per model): biases, activations, normalisation, element-wise arithmetic, pooling/reductions,
  resizing, softmax, data movement. For conv nets these are a few % of the total.
- Achieved: ``InferenceSession.run`` on random inputs of that shape, default session options
  (memory arena on, all graph optimisations), one warm-up then ``--runs`` runs; the median.
- Peak: the best of ``--matmul-runs`` large float32 matmuls (n = ``--matmul-size``), in onnxruntime
  and in numpy (OpenBLAS, in a subprocess with OPENBLAS_NUM_THREADS set), per thread count,
  measured before and after the models (the better counts; on a busy machine either can be low,
  and then a model may show > 100 %). A convolution cannot beat this on the same cores; % of peak
  says how much is left on the table.

Numbers are only meaningful on a quiet machine: the header prints the load average.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ZOO = REPO / "models" / "zoo"
COUNTED = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum")
SHAPE_ONLY = {"Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Reshape", "Cast", "Slice", "Concat",
              "ConstantOfShape", "Identity", "Flatten", "Transpose", "Split", "Expand", "Range"}


# ------------------------------------------------------------------------------- counting


def fixed_input_shapes(model, tile: int, batch: int = 1) -> Dict[str, List[int]]:
    """Concrete shapes for the graph inputs: 4-D tensors (batch, C, tile, tile), others batch-sized."""
    shapes = {}
    initializers = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        concrete = []
        for axis, d in enumerate(dims):
            if d.HasField("dim_value"):
                concrete.append(d.dim_value)
            elif axis == 0:
                concrete.append(batch)
            elif len(dims) == 4 and axis >= 2:
                concrete.append(tile)
            else:
                concrete.append(1)
        shapes[inp.name] = concrete
    return shapes


def _inferred_shapes(model, input_shapes) -> Dict[str, List[int]]:
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for inp in m.graph.input:
        if inp.name in input_shapes:
            dims = inp.type.tensor_type.shape.dim
            for d, v in zip(dims, input_shapes[inp.name]):
                d.Clear()
                d.dim_value = v
    try:
        m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception:  # a graph inference cannot handle: everything comes from onnxruntime
        pass
    shapes = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    for init in m.graph.initializer:
        shapes[init.name] = list(init.dims)
    for node in m.graph.node:  # Constant outputs
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = list(a.t.dims)
    return shapes


def _measured_shapes(path: str, model, names: Sequence[str], feeds) -> Dict[str, List[int]]:
    """Shapes of ``names`` from one onnxruntime run with them exposed as outputs (no optimisation)."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    existing = {o.name for o in m.graph.output}
    for name in names:
        if name not in existing:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = list(names)
    values = session.run(wanted, feeds)
    return {n: list(v.shape) for n, v in zip(wanted, values)}


def _einsum_macs(equation: str, shapes: List[List[int]]) -> int:
    """Product of the sizes of every index in the equation (the loop nest einsum runs)."""
    lhs = equation.replace(" ", "").split("->")[0]
    sizes: Dict[str, int] = {}
    for term, shape in zip(lhs.split(","), shapes):
        if "..." in term:
            before, after = term.split("...")
            n_ell = len(shape) - len(before) - len(after)
            term = before + "".join(chr(0x100 + i) for i in range(n_ell)) + after
        for letter, size in zip(term, shape):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return math.prod(sizes.values())


def count_flops(path: str, tile: int, batch: int = 1) -> dict:
    """FLOPs (2 x MACs) of Conv/ConvTranspose/MatMul/Gemm/Einsum at (batch, C, tile, tile).

    Returns total ``flops``, ``per_op`` FLOPs, ``ignored`` op counts, and how many shapes came
    from shape inference and how many from an onnxruntime run.
    """
    import onnx

    model = onnx.load(path)
    input_shapes = fixed_input_shapes(model, tile, batch)
    shapes = _inferred_shapes(model, input_shapes)
    shapes.update(input_shapes)
    needed = set()
    for node in model.graph.node:
        if node.op_type in COUNTED:
            needed.update(n for n in list(node.input) + list(node.output) if n)
    missing = sorted(n for n in needed if n not in shapes)
    if missing:
        feeds = random_feeds(model, input_shapes)
        shapes.update(_measured_shapes(path, model, missing, feeds))
    per_op: Counter = Counter()
    ignored: Counter = Counter()
    for node in model.graph.node:
        op = node.op_type
        if op not in COUNTED:
            if op not in SHAPE_ONLY:
                ignored[op] += 1
            continue
        if op == "Conv":
            macs = math.prod(shapes[node.output[0]]) * math.prod(shapes[node.input[1]][1:])
        elif op == "ConvTranspose":
            macs = math.prod(shapes[node.input[0]]) * math.prod(shapes[node.input[1]][1:])
        elif op == "MatMul":
            macs = math.prod(shapes[node.output[0]]) * shapes[node.input[0]][-1]
        elif op == "Gemm":
            trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
            a = shapes[node.input[0]]
            k = a[0] if trans_a else a[1]
            macs = math.prod(shapes[node.output[0]]) * k
        else:  # Einsum
            eq = next(a.s.decode() for a in node.attribute if a.name == "equation")
            macs = _einsum_macs(eq, [shapes[n] for n in node.input])
        per_op[op] += 2 * macs
    return {"flops": sum(per_op.values()), "per_op": dict(per_op), "ignored": dict(ignored),
            "pixels": batch * tile * tile, "from_onnxruntime": len(missing),
            "from_inference": len(needed) - len(missing)}


# ------------------------------------------------------------------------------- timing


def random_feeds(model_or_session, input_shapes: Dict[str, List[int]], seed: int = 0) -> dict:
    """Random inputs: float tensors in [-1, 1]; a 1-element time step input gets 500."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, shape in input_shapes.items():
        if len(shape) == 4:
            feeds[name] = rng.uniform(-1, 1, shape).astype(np.float32)
        else:  # e.g. the diffusion step's t (batch,)
            feeds[name] = np.full(shape, 500.0, dtype=np.float32)
    return feeds


def time_model(path: str, tile: int, threads: int, runs: int, batch: int = 1) -> List[float]:
    """Seconds per ``session.run`` at (batch, C, tile, tile) with ``threads`` intra-op threads."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feeds = random_feeds(None, fixed_input_shapes(onnx.load(path, load_external_data=False), tile, batch))
    session.run(None, feeds)  # warm-up: allocations, kernel selection
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t)
    return times


def ort_matmul_peak(n: int, threads: int, runs: int) -> float:
    """Best GFLOP/s of an n x n float32 MatMul in onnxruntime."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}
    session.run(None, feeds)
    best = math.inf
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, feeds)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


NUMPY_PEAK = """
import sys, time, numpy as np
n, runs = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32); b = rng.standard_normal((n, n), dtype=np.float32)
a @ b
best = min((lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(runs))
print(2 * n ** 3 / best / 1e9)
"""


def numpy_matmul_peak(n: int, threads: int, runs: int) -> Optional[float]:
    """Best GFLOP/s of an n x n float32 matmul in numpy's BLAS, limited to ``threads``."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-c", NUMPY_PEAK, str(n), str(runs)], env=env,
                          capture_output=True, text=True)
    try:
        return float(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


# ------------------------------------------------------------------------------- models


def zoo_models() -> List[dict]:
    """Every bundled model with its card's tile size."""
    from skyclear.plugin.core.model_card import read_card

    found = []
    for path in sorted(ZOO.glob("*.onnx")):
        card = read_card(str(path))
        found.append({"name": path.stem, "path": str(path), "tile": card.tile_size, "task": card.task})
    return found


def conv_entry(folder: Path, tile: int) -> dict:
    sys.path.insert(0, str(HERE))
    from peer_deepness import benchmark_conv

    path = folder / f"benchmark_conv_{tile}.onnx"
    if not path.exists():
        benchmark_conv(path, tile=tile)
    return {"name": "benchmark conv 3-32-32-1", "path": str(path), "tile": tile, "task": "peer benchmark"}


def measure_all(models: List[dict], threads: Sequence[int], runs: int) -> List[dict]:
    rows = []
    for m in models:
        count = count_flops(m["path"], m["tile"])
        row = dict(m, **count, seconds={})
        for k in threads:
            row["seconds"][k] = statistics.median(time_model(m["path"], m["tile"], k, runs))
        rows.append(row)
    return rows


def print_table(rows: List[dict], peaks: Dict[int, dict], threads: Sequence[int], steps: int) -> None:
    head = "| model | tile | GFLOP / tile | GFLOP / 256² | GFLOP / MP |"
    rule = "|---|---:|---:|---:|---:|"
    for k in threads:
        head += f" s / tile ({k} thr) | GFLOP/s ({k} thr) | % of peak ({k} thr) |"
        rule += "---:|---:|---:|"
    print(head)
    print(rule)

    def line(name, tile, flops, pixels, seconds):
        per_px = flops / pixels
        text = (f"| {name} | {tile} | {flops / 1e9:.3f} | {per_px * 65536 / 1e9:.3f} | "
                f"{per_px * 1e6 / 1e9:.2f} |")
        for k in threads:
            rate = flops / seconds[k] / 1e9
            text += f" {seconds[k]:.3f} | {rate:.1f} | {100 * rate / peaks[k]['best']:.0f} % |"
        print(text)

    for r in rows:
        line(r["name"], r["tile"], r["flops"], r["pixels"], r["seconds"])
    by_name = {r["name"]: r for r in rows}
    if steps and "de_reference_rice" in by_name and "de_step_rice" in by_name:
        e, s = by_name["de_reference_rice"], by_name["de_step_rice"]
        if e["tile"] == s["tile"]:
            line(f"DE, {steps} steps (E + {steps} × step, derived)", e["tile"], e["flops"] + steps * s["flops"],
                 e["pixels"], {k: e["seconds"][k] + steps * s["seconds"][k] for k in threads})


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["all"],
                        help="'all', 'conv' (the peer benchmark conv) and/or bundled model names")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per model and thread count (median)")
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--matmul-runs", type=int, default=10, help="matmul runs per measurement (best)")
    parser.add_argument("--conv-tile", type=int, default=512, help="tile of the peer benchmark conv")
    parser.add_argument("--steps", type=int, default=10, help="DE sampling steps for the derived row (0: none)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "skyclear-bench" / "limits")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    wanted = set(args.models)
    models = []
    if wanted & {"all", "conv"}:
        args.cache.mkdir(parents=True, exist_ok=True)
        models.append(conv_entry(args.cache, args.conv_tile))
    names = wanted - {"all", "conv"}
    if "all" in wanted or names:
        zoo = zoo_models()
        unknown = names - {m["name"] for m in zoo}
        if unknown:
            parser.error(f"unknown model(s) {sorted(unknown)}; bundled: {[m['name'] for m in zoo]}")
        models += [m for m in zoo if "all" in wanted or m["name"] in names]

    load = os.getloadavg()
    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}; {cpu_name()}, {os.cpu_count()} cores; "
          f"load average {load[0]:.2f} / {load[1]:.2f} at start; batch 1 at the card's tile; "
          f"median of {args.runs} runs after one warm-up")

    def measure_peaks(when: str) -> Dict[int, float]:
        found = {}
        for k in args.threads:
            o = ort_matmul_peak(args.matmul_size, k, args.matmul_runs)
            n = numpy_matmul_peak(args.matmul_size, k, args.matmul_runs)
            found[k] = max(o, n or 0.0)
            print(f"peak ({when}), {k} thread(s): float32 matmul {args.matmul_size}³ best of {args.matmul_runs}: "
                  f"onnxruntime {o:.1f} GFLOP/s, numpy {'n/a' if n is None else f'{n:.1f}'} GFLOP/s")
        return found

    first = measure_peaks("before the models")
    rows = measure_all(models, args.threads, args.runs)
    second = measure_peaks("after the models")
    peaks = {}
    for k in sorted(args.threads):
        # the best seen; and k threads can do what fewer did (a lower number is load, not the limit)
        best = max([first[k], second[k]] + [peaks[j]["best"] for j in peaks if j < k])
        peaks[k] = {"before": first[k], "after": second[k], "best": best}
        print(f"-> peak used for {k} thread(s): {best:.1f} GFLOP/s")
    print()
    print_table(rows, peaks, args.threads, args.steps)
    print()
    for r in rows:
        ignored = ", ".join(f"{op} ×{n}" for op, n in sorted(r["ignored"].items())) or "nothing"
        counted = ", ".join(f"{op} {f / 1e9:.3f}" for op, f in sorted(r["per_op"].items()))
        print(f"- {r['name']}: counted GFLOP/tile {counted}; shapes {r['from_inference']} inferred, "
              f"{r['from_onnxruntime']} read from onnxruntime; not counted: {ignored}")
    load = os.getloadavg()
    print(f"- load average {load[0]:.2f} at the end")
    if args.json:
        args.json.write_text(json.dumps({"peaks": peaks, "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
