#!/usr/bin/env bash
# Prove the GPU path in one run: every bundled model through the real jobs on CUDA and on CPU,
# outputs compared within tolerance, throughput (MP/s) per provider. ≤ 10 min on a GPU machine
# (default: 1024² comparison scenes, 4096² CUDA throughput scenes, 10 DE steps).
#
#   benchmarks/gpu_check.sh [--install-gpu [--wheelhouse DIR]] [gpu_check.py options]
#   benchmarks/gpu_check.sh --smoke      # CPU part on a tiny scene; exit 0 without CUDA
#
# Options after the script's own go to benchmarks/gpu_check.py (--size, --gpu-size, --steps,
# --only, --tol-mean, --tol-p999, --smoke; see its header). Exit status: 0 all ran and agree,
# 1 a job failed or outputs differ, 2 CUDA not available (prints "CUDA not available: <reason>";
# --smoke turns that into 0), 124 the 10-minute limit was hit.
#
# onnxruntime-gpu REPLACES onnxruntime; never install both into one environment (they share the
# `onnxruntime` module and the second silently breaks the first). The project's .venv keeps the CPU
# build. --install-gpu installs, once, the same version of onnxruntime-gpu plus the CUDA 13 / cuDNN 9
# runtime wheels it loads, all with --no-deps (so numpy stays < 2), into a separate folder
# ($SKYCLEAR_GPU_DEPS, default ~/.cache/skyclear-bench/onnxruntime-gpu-VERSION), and runs the check
# with that folder first on PYTHONPATH: `import onnxruntime` then resolves to the GPU build only; the
# CPU build in .venv is shadowed, not loaded. It needs the package registry (or --wheelhouse DIR with
# the wheels, for a machine without network access) and an NVIDIA driver recent enough for CUDA 13.
# Without --install-gpu the check uses whatever onnxruntime the Python ($PYTHON, default .venv's)
# imports. Never make tests depend on a GPU: the test suite runs only the --smoke form.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$repo/.venv/bin/python}
install_gpu=0
wheelhouse=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --install-gpu) install_gpu=1 ;;
    --wheelhouse) wheelhouse=$2; shift ;;
    *) args+=("$1") ;;
  esac
  shift
done

if [ "$install_gpu" = 1 ]; then
  ort_version=$("$python" -c 'import onnxruntime; print(onnxruntime.__version__)' 2>/dev/null || echo 1.31.1)
  deps=${SKYCLEAR_GPU_DEPS:-$HOME/.cache/skyclear-bench/onnxruntime-gpu-$ort_version}
  if [ ! -f "$deps/.complete" ]; then
    # what `onnxruntime-gpu[cuda,cudnn]==1.31.1` resolves to, pinned, without its numpy/protobuf deps
    pins=("onnxruntime-gpu==$ort_version" nvidia-cuda-runtime==13.5.37 nvidia-cuda-nvrtc==13.5.37
          nvidia-cublas==13.10.0.20 nvidia-cufft==12.5.0.14 nvidia-curand==10.4.5.25
          nvidia-nvjitlink==13.5.37 nvidia-cudnn-cu13==9.28.1.4)
    source_args=()
    [ -n "$wheelhouse" ] && source_args=(--no-index --find-links "$wheelhouse")
    echo "installing ${pins[*]} into $deps" >&2
    rm -rf "$deps"
    "$python" -m pip install -q --no-deps --target "$deps" "${source_args[@]}" "${pins[@]}"
    touch "$deps/.complete"
  fi
  export PYTHONPATH="$deps${PYTHONPATH:+:$PYTHONPATH}"
  libs=$(find "$deps/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | tr '\n' ':')
  export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:-}"
  "$python" -c 'import onnxruntime as o, sys; sys.exit(0 if o.__file__.startswith(sys.argv[1]) else
      "onnxruntime does not resolve to the GPU build in " + sys.argv[1])' "$deps"
fi

cd "$repo"
exec timeout 600 "$python" benchmarks/gpu_check.py "${args[@]+"${args[@]}"}"
