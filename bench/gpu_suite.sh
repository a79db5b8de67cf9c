#!/usr/bin/env bash
# Every performance measurement of docs/performance.md in one call, each part with its own time guard.
#
#   bench/gpu_suite.sh            # the paper's sizes: 256 px, batch 64, full width (an H100/H200, < 8 min)
#   bench/gpu_suite.sh --tiny     # 32 px, width 1/16, batch 8, 2 iterations: proves it end to end on a CPU
#
# Parts, in this order (the most wanted first); each gets min(its limit, what is left of SUITE_BUDGET_S):
#   env                 devices, versions, bf16/fp32 matmul rate (the "% of peak" reference)
#   flops               analytic FLOPs per iteration of each model (bench/flops.py, traced on the CPU)
#   convt               DCGAN's ConvTranspose layers, forward + backward, sub-pixel vs lax.conv_transpose
#   jax_dcgan           mrigen's DCGAN + DRAGAN iteration, bf16 and fp32, sampler, full-dataset vs batch-sized
#   torch_dcgan, torch_srresnet, torch_progan_last, torch_progan_fade
#                       PyTorch eager references (bench/torch_reference.py): fp32/TF32, bf16, bf16+channels_last
#   jax_srresnet, jax_progan_last (bf16, fp32), jax_progan_fade (bf16)
#   progan_compile_cold, progan_compile_warm
#                       every ProGAN stage's step compile, persistent cache (JAX_COMPILATION_CACHE_DIR) empty, then filled
#   jax_dcgan_subpixel  the DCGAN iteration with the sub-pixel transposed convolution forced on (bf16)
#
# Environment: OUT (results folder; default workdirs/gpu_suite), SUITE_PARTS (comma-separated subset),
# SUITE_BUDGET_S (whole budget, default 450), SUITE_LIMIT_<PART> (one part's limit in s),
# SUITE_RESOLUTION, SUITE_WIDTH, SUITE_BATCH, SUITE_ITERS, SUITE_WARMUP, SUITE_DATASET_SIZE,
# SUITE_SAMPLE_BATCH, PYTHON (default python3).
# Wheels in .whl/ (ml-collections: the GPU image lacks it) are installed into a temporary folder first;
# docs/performance.md says how to fill .whl/ with pip download.
# Writes results.jsonl (every measurement), results.json, results.md (the tables) and suite.log.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
TINY=0
for arg in "$@"; do
  case "$arg" in
    --tiny) TINY=1 ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "gpu_suite.sh: unknown argument $arg (known: --tiny)" >&2; exit 2 ;;
  esac
done

if [ "$TINY" = 1 ]; then
  : "${SUITE_RESOLUTION:=32}" "${SUITE_WIDTH:=0.0625}" "${SUITE_BATCH:=8}" "${SUITE_ITERS:=2}" \
    "${SUITE_WARMUP:=1}" "${SUITE_DATASET_SIZE:=64}" "${SUITE_SAMPLE_BATCH:=16}" "${SUITE_MATMUL:=256}" \
    "${SUITE_ITERS_MICRO:=3}" "${SUITE_BUDGET_S:=1500}" "${SUITE_LIMIT_SCALE:=2}"
fi
: "${SUITE_RESOLUTION:=256}" "${SUITE_WIDTH:=1.0}" "${SUITE_BATCH:=64}" "${SUITE_ITERS:=10}" "${SUITE_WARMUP:=2}" \
  "${SUITE_DATASET_SIZE:=11328}" "${SUITE_SAMPLE_BATCH:=1024}" "${SUITE_MATMUL:=8192}" "${SUITE_ITERS_MICRO:=20}" \
  "${SUITE_BUDGET_S:=450}" "${SUITE_LIMIT_SCALE:=1}" "${SUITE_PARTS:=}"

OUT_DIR="${OUT:-$ROOT/workdirs/gpu_suite}"
mkdir -p "$OUT_DIR"
JSONL="$OUT_DIR/results.jsonl"
LOG="$OUT_DIR/suite.log"
: >"$JSONL"
: >"$LOG"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# Carried wheels first: the GPU machine reaches no package registry.
if compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
    "$ROOT"/.whl/*.whl >>"$LOG" 2>&1 || { echo "gpu_suite.sh: installing .whl/*.whl failed (see $LOG)" >&2; exit 1; }
  export PYTHONPATH="$PYTHONPATH:$WORK/site"  # After the image's own packages: only what is missing.
fi
"$PY" -c "import ml_collections" 2>>"$LOG" || {
  echo "gpu_suite.sh: ml_collections is missing; put its wheel in .whl/ (docs/performance.md)" >&2; exit 1; }

SIZES=(--jsonl="$JSONL" --out="$OUT_DIR" --resolution="$SUITE_RESOLUTION" --width="$SUITE_WIDTH"
       --batch="$SUITE_BATCH" --iters="$SUITE_ITERS" --warmup="$SUITE_WARMUP" --dataset_size="$SUITE_DATASET_SIZE"
       --sample_batch="$SUITE_SAMPLE_BATCH" --matmul_size="$SUITE_MATMUL" --iters_micro="$SUITE_ITERS_MICRO")
SUITE="$ROOT/bench/gpu_suite.py"
TORCH=(--batch="$SUITE_BATCH" --resolution="$SUITE_RESOLUTION" --width="$SUITE_WIDTH" --iters="$SUITE_ITERS"
       --warmup="$SUITE_WARMUP" --jsonl="$JSONL")
START=$(date +%s)

status() {  # name status seconds limit
  printf '{"part": "suite", "name": "%s", "status": "%s", "seconds": %s, "limit_s": %s}\n' "$1" "$2" "$3" "$4" >>"$JSONL"
  printf '%-22s %-10s %5ss (limit %ss)\n' "$1" "$2" "$3" "$4"
}

part() {  # name default_limit_s command...
  local name="$1" limit="$2"; shift 2
  if [ -n "$SUITE_PARTS" ] && [[ ",$SUITE_PARTS," != *",$name,"* ]]; then return; fi
  local override="SUITE_LIMIT_${name^^}"
  limit="${!override:-$((limit * SUITE_LIMIT_SCALE))}"
  local left=$((SUITE_BUDGET_S - ($(date +%s) - START)))
  [ "$left" -lt "$limit" ] && limit="$left"
  if [ "$limit" -lt 15 ]; then status "$name" skipped 0 "$limit"; return; fi
  echo "===== $name (limit ${limit}s): $*" >>"$LOG"
  local t0=$(date +%s) rc
  timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  local took=$(($(date +%s) - t0)) result=ok
  case "$rc" in 0) ;; 124|137) result=timeout ;; *) result="failed:$rc" ;; esac
  status "$name" "$result" "$took" "$limit"
  [ "$result" = ok ] || tail -n 5 "$LOG" | sed 's/^/    /'
}

echo "gpu_suite: ${SUITE_RESOLUTION} px, batch ${SUITE_BATCH}, width ${SUITE_WIDTH}, budget ${SUITE_BUDGET_S}s, results in $OUT_DIR"
part env 40                   "$PY" "$SUITE" env --part=env "${SIZES[@]}"
part flops 90                 env JAX_PLATFORMS=cpu "$PY" "$SUITE" flops --part=flops "${SIZES[@]}"
part convt 75                 "$PY" "$SUITE" convt --part=convt --precisions=float32,bfloat16 "${SIZES[@]}"
part jax_dcgan 240            "$PY" "$SUITE" step --part=jax_dcgan --model=dcgan --data_check "${SIZES[@]}"
for m in dcgan:last srresnet:last progan:last progan:fade; do
  name="torch_${m%%:*}"; [ "${m%%:*}" = progan ] && name="${name}_${m##*:}"
  part "$name" 50             "$PY" "$ROOT/bench/torch_reference.py" --model="${m%%:*}" --stage="${m##*:}" "${TORCH[@]}"
done
part jax_srresnet 130         "$PY" "$SUITE" step --part=jax_srresnet --model=srresnet "${SIZES[@]}"
part jax_progan_last 130      "$PY" "$SUITE" step --part=jax_progan_last --model=progan --stage=last "${SIZES[@]}"
part jax_progan_fade 75       "$PY" "$SUITE" step --part=jax_progan_fade --model=progan --stage=fade \
                                --precisions=bfloat16 "${SIZES[@]}"
rm -rf "$WORK/jax_cache"
part progan_compile_cold 150  "$PY" "$SUITE" progan_compile --part=progan_compile_cold --pass_name=cold \
                                --precisions=bfloat16 --cache_dir="$WORK/jax_cache" "${SIZES[@]}"
part progan_compile_warm 60   "$PY" "$SUITE" progan_compile --part=progan_compile_warm --pass_name=warm \
                                --precisions=bfloat16 --cache_dir="$WORK/jax_cache" "${SIZES[@]}"
part jax_dcgan_subpixel 100   "$PY" "$SUITE" step --part=jax_dcgan_subpixel --model=dcgan --subpixel=true \
                                --precisions=bfloat16 "${SIZES[@]}"
echo "gpu_suite: measuring took $(($(date +%s) - START))s"
echo
JAX_PLATFORMS=cpu "$PY" "$SUITE" report "${SIZES[@]}" 2>>"$LOG"
