#!/usr/bin/env bash
# The one-command GPU check: bf16 JAX against PyTorch AMP (NCHW and channels_last), training
# step and inference, on seg_w48 512x1024 batch 8, pose_w32 256x192 batch 64 and cls_w18 224
# batch 128 (same weights on both sides, checked in the run). Prints img/s, the JAX/PyTorch
# ratio, MFU against the GPU's bf16 peak, compile time and peak memory; writes JSON.
#
#   benchmarks/gpu_check.sh [--dry-run] [--out gpu_check.json] [--case NAME ...]
#
# --dry-run runs the same path on tiny shapes on any machine (CPU included): what the tests run.
# --case NAME (repeatable) runs only those cases: a rerun of the ones a time limit cut off (on a
# cold H200 the whole check takes over 500 s, mostly compiles); `--case pipeline` is the input
# pipelines' throughput (benchmarks/pipeline.py, 1, 4 and 8 workers), which a full run does last.
# No network is needed: the packages come from the environment; any it lacks (ml_collections,
# grain, ...) can be put as wheels into .whl/ of the repository and are installed from there.
set -euo pipefail
cd "$(dirname "$0")/.."
dry=()
cases=()
out=gpu_check.json
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=(--dry-run) ;;
    --out) out="$2"; shift ;;
    --case) cases+=("$2"); shift ;;
    *) echo "usage: benchmarks/gpu_check.sh [--dry-run] [--out FILE.json] [--case NAME ...]" >&2; exit 2 ;;
  esac
  shift
done
PY="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/hrnet_site .whl/*.whl
  export PYTHONPATH="/tmp/hrnet_site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
# Both frameworks share the GPU: JAX takes memory as it needs it instead of 75% up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$HOME/.cache/hrnet_jax/xla}"
# The input pipelines too (ours alone: the official checkouts are not on the device machine),
# with as many workers as a GPU host gives a trainer: written beside the JSON as *_pipeline.json.
pipeline() {
  if [ ${#dry[@]} -gt 0 ]; then
    "$PY" benchmarks/pipeline.py --tasks pose --workers 1 --batches 1 --repeats 1 --json "${out%.json}_pipeline.json"
  else
    "$PY" benchmarks/pipeline.py --workers 1 4 8 --batches 40 --repeats 1 --json "${out%.json}_pipeline.json"
  fi
}
model_cases=()
run_pipeline=1
if [ ${#cases[@]} -gt 0 ]; then
  run_pipeline=0
  for c in "${cases[@]}"; do
    if [ "$c" = pipeline ]; then run_pipeline=1; else model_cases+=("$c"); fi
  done
fi
if [ ${#cases[@]} -eq 0 ]; then
  "$PY" benchmarks/vs_pytorch.py --gpu-check "${dry[@]}" --json "$out"
elif [ ${#model_cases[@]} -gt 0 ]; then
  "$PY" benchmarks/vs_pytorch.py --gpu-check "${dry[@]}" --json "$out" --cases "${model_cases[@]}"
fi
if [ $run_pipeline -eq 1 ]; then
  pipeline
fi
