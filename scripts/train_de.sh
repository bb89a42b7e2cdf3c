#!/usr/bin/env bash
# The DE recipe of issue 11 after the reference network E: CNP -> WA (-> joint) -> choice of the
# sampler settings on the VALIDATION pairs -> export of the step graph. One background process.
#
#   scripts/train_de.sh E_RUN OUT_DIR [--gpu] [--joint] [--zoo FILE.onnx] [--reference-out FILE.onnx] [--data DIRS]
#                       [--cnp-config FILE.json]
#
#   E_RUN    a finished de-reference run folder (its checkpoints/best.pt, chosen on validation, is used)
#   OUT_DIR  parent of the stage run folders OUT_DIR/cnp, OUT_DIR/wa (, OUT_DIR/joint)
#   --gpu    the -gpu configs (batch 64; stages capped at 5 + 2 (+ 1.5) min, so <= 10 min in all with
#            the choice and export) and --device cuda; falls back to the CPU configs, with a message,
#            when torch sees no CUDA device. Not yet run on a GPU (none was lent when it was written);
#            the device machine needs torch with CUDA and the RICE folders inside the repo (--data);
#            no GDAL (without rasterio the PNG pairs are read with Pillow, same pixels).
#   --joint  also the joint stage (CPU: ~6 more minutes); the choice and export then use it
#   --zoo    where the step graph goes (default models/zoo/de_step_rice.onnx); "-" = no export
#   --reference-out  where E_RUN is exported so the pair matches (default: de_reference_rice.onnx
#            next to --zoo); "-" = keep the E already there (it must be E_RUN's export)
#   --data   training folders (default ../shared/data/rice1,../shared/data/rice2)
#   --cnp-config  the CNP stage's config instead of models/configs/de-cnp-<cpu|gpu>.json
#            (models/configs/de-cnp-long.json, the bundled 2.1.0 step graph's: 10 000 steps, 84 min on one thread)
# Environment: PYTHON (default .venv/bin/python); TRAIN_DE_SET="key=json ..." adds --set overrides to
# every stage and SELECT_ARGS="..." options to select_sampler (smoke runs: TRAIN_DE_SET="steps=3").
#
# CPU sizing (1 thread, measured on this 2-core machine with another training on the other core):
#   de-cnp 2400 steps x ~0.57 s + ~35 s E cache  ~ 24 min   (models/configs/de-cnp-cpu.json)
#   de-wa   220 steps x ~2.8 s  + ~40 s E cache  ~ 11 min   (models/configs/de-wa-cpu.json)
#   de-joint 100 steps x ~3 s (--joint only)     ~  6 min   (models/configs/de-joint-cpu.json)
#   select_sampler, 17 validation pairs: 2 t0 x 4 eta x 3 ways to spend 10 step calls (10, 5x2, 2x5)
#   = 24 settings x ~70 s ~ 28 min; exports + held-out benchmark ~ 5 min
#   => ~70 min (~76 with --joint)
# Every stage caps itself with max_minutes and resumes from its run folder when started again, so
# rerunning this script after an interruption continues where it stopped; a finished stage is
# skipped (its checkpoint is at the configured step count). The choice is redone only when its
# file is missing.
#
# Run it in the background, one training at a time on the machine, e.g.
#   nohup scripts/train_de.sh /work/runs/de-ref-long/run /work/runs/de-v2 > /work/runs/de-v2.log 2>&1 &
# After the choice it exports E and the step graph, runs the held-out benchmark (E and DE at 5/10 steps
# and the chosen steps x samples
# on the 25 held-out pairs; tables in OUT_DIR/benchmark.md, summary in FINAL_RUN/heldout_metrics.json)
# and exports the step graph again so its card carries those numbers.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
python=${PYTHON:-$repo/.venv/bin/python}
[ $# -ge 2 ] || { sed -n '2,21p' "$0"; exit 2; }
e_run=$(cd "$1" && pwd); out=$2; shift 2
profile=cpu joint=0 zoo=models/zoo/de_step_rice.onnx data=../shared/data/rice1,../shared/data/rice2 ref_out="" cnp_config=""
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) profile=gpu ;;
    --joint) joint=1 ;;
    --zoo) zoo=$2; shift ;;
    --reference-out) ref_out=$2; shift ;;
    --data) data=$2; shift ;;
    --cnp-config) cnp_config=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ -f "$e_run/config.json" ] || { echo "$e_run is not a run folder (no config.json)" >&2; exit 2; }
mkdir -p "$out"
out=$(cd "$out" && pwd)

device=cpu
select_args=(--threads 1)
if [ "$profile" = gpu ]; then
  if "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    device=cuda
    select_args=(--device cuda --threads 4)
  else
    echo "--gpu: torch sees no CUDA device; using the CPU configs" >&2
    profile=cpu
  fi
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
stage() {  # stage KIND RUN_FOLDER [--set ...]
  local kind=$1 run=$2 config=models/configs/$1-$profile.json; shift 2
  [ "$kind" = de-cnp ] && [ -n "$cnp_config" ] && config=$cnp_config
  echo "=== $(date -u +%H:%M:%S) $kind -> $run ($config)"
  "$python" -u -m skyclear.models.train "$kind" --config "$config" --data "$data" \
    --out "$run" --device "$device" "$@" "${extra_sets[@]}"
}
extra_sets=()
for item in ${TRAIN_DE_SET:-}; do extra_sets+=(--set "$item"); done

stage de-cnp "$out/cnp" --set reference_run="\"$e_run\""
stage de-wa "$out/wa" --set cnp_run="\"$out/cnp\""
final=$out/wa
if [ "$joint" = 1 ]; then
  stage de-joint "$out/joint" --set wa_run="\"$out/wa\""
  final=$out/joint
fi

if [ ! -f "$final/sampler_selection.json" ]; then
  echo "=== $(date -u +%H:%M:%S) choosing eta / t_start / steps x samples on the validation pairs ($final)"
  "$python" -u -m skyclear.models.diffusion.select_sampler "$final" --etas 0 0.2 0.4 0.6 \
    --t-starts 300 200 --steps 10 5x2 2x5 "${select_args[@]}" ${SELECT_ARGS:-}
fi
if [ "$zoo" != "-" ]; then
  ref_out=${ref_out:-$(dirname "$zoo")/de_reference_rice.onnx}
  if [ "$ref_out" != "-" ]; then
    echo "=== $(date -u +%H:%M:%S) export $e_run -> $ref_out"
    "$python" -m skyclear.models.export "$e_run" --out "$ref_out"
  else
    ref_out=$(dirname "$zoo")/de_reference_rice.onnx
  fi
  echo "=== $(date -u +%H:%M:%S) export $final -> $zoo"
  "$python" -m skyclear.models.export "$final" --out "$zoo"
  echo "=== $(date -u +%H:%M:%S) held-out benchmark -> $out/benchmark.md"
  "$python" benchmarks/quality_optical_cloud_removal.py --reference "$ref_out" --step "$zoo" --threads 1 \
    --data "$(dirname "${data%%,*}")" --metrics-json "$final/heldout_metrics.json" | tee "$out/benchmark.md"
  "$python" -m skyclear.models.export "$final" --out "$zoo"   # again: the card now carries the held-out numbers
fi
echo "=== $(date -u +%H:%M:%S) done"
