#!/usr/bin/env bash
# The prepared GPU check: one script, under 10 minutes on one H100/H200, every figure as JSON lines in OUT.
#
#   bash benchmarks/gpu_check.sh [OUT]             # on the GPU machine (OUT defaults to $OUT or gpu_check)
#   bash benchmarks/gpu_check.sh --dry-run [OUT]   # the same steps at toy size on the CPU (run by the tests)
#
# Steps: (1) the CUDA path of a training step with bf16 autocast (landscape.train --bf16);
# (2) the hessian CLI on that checkpoint on CUDA; (3) the real-scale row: the zoo's ResNet-18 at CIFAR
# size, 512 samples (benchmarks/real_scale.py: gradient, HVP per backend at k = 1, 4, 8, top-1, SLQ 80 x 8,
# peers when installed); (4) curvlinops' published setup side by side (benchmarks/hvp_vs_gradient.py:
# ResNet-18, batch 512, HVP in gradients eager and compiled; curvlinops reports 7.9 and 2.2 on an A6000);
# the LM rows: (5) GPT-2-small HVP and GGN products in gradients, eager and compiled, for each backend
# (benchmarks/compiled_products.py; curvlinops reports nanoGPT-124M at 4.53 eager, 2.90 compiled); (6) the peak
# memory of GGN and Hessian products on a Pythia-160M-size GPT-NeoX at B = 16, T = 256 (benchmarks/lm_memory.py;
# hessian-eigenthings reports the GGN in 10.17 GB on an A100); (7) λmax of a GPT-2-small trained 100 steps in
# float32, bf16 and bf16 autocast (experiments/bf16_study.py lambda); (8) a 1-GPU FSDP smoke run: GPT-2-small
# sharded by FSDP2 under torchrun, its products, SLQ and top-1 timed (benchmarks/fsdp_scaling.py, the terms
# of docs/scaling.md). Each LM row has its own time limit (LIMITS, seconds: 6 min in all) and records a timeout
# or failure as a JSON line rather than stopping the script. Record the results in BENCHMARKS.md with the device named (the first
# line of OUT/device.json).
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT="${1:-${OUT:-gpu_check}}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "$DRY" = 1 ]; then
  DEVICE=cpu; BF16=(); EPOCHS=1; N=64; ITERS=5; VECTORS=2; FC='{"kind": "residual", "depth": 4, "width": 16}'
  REAL=(--n-samples 4 --batch 2 --depth 8 --width 2 --iters 2 --vectors 1 --ks 1 2 --skip peers)
  HVP=(--batch 2 --depth 8 --width 2 --reps 1 --no-compile)
  LM=(--layers 1 --width 16 --heads 2 --vocab 64 --batch 2 --seq 16 --reps 1 --k 1 --no-compile)
  NEOX=(--layers 1 --hidden 32 --heads 2 --vocab 64 --batch 2 --seq 16)
  PRECISION=(--layers 1 --width 16 --heads 2 --seq 16 --batch 2 --steps 2)
  FSDP=(--layers 1 --width 16 --heads 2 --vocab 64 --batch 2 --seq 16 --iters 4 --vectors 1 --reps 1 --k 1)
  LIMITS=(300 300 300 300)
else
  DEVICE=cuda; BF16=(--bf16); EPOCHS=2; N=2000; ITERS=80; VECTORS=8; FC='{"kind": "residual", "depth": 20, "width": 128}'
  REAL=(--n-samples 512 --batch 128)
  HVP=(--batch 512)
  LM=(--layers 12 --width 768 --heads 12 --vocab 50257 --batch 8 --seq 256 --reps 3 --k 1 8)
  NEOX=()
  PRECISION=(--layers 12 --width 768 --heads 12 --seq 256 --batch 8 --steps 100)
  FSDP=(--layers 12 --width 768 --heads 12 --vocab 50257 --batch 8 --seq 256 --iters 10 --vectors 2)
  LIMITS=(150 90 90 90)
fi

step() { echo "[$(date +%H:%M:%S)] $*" >&2; }
timed() {  # timed NAME CMD...: run CMD, write OUT/NAME_time.json with its wall seconds
  local name=$1 t0; shift
  t0=$(date +%s.%N)
  "$@"
  echo "{\"step\": \"$name\", \"seconds\": $(awk "BEGIN{print $(date +%s.%N) - $t0}")}" > "$OUT/${name}_time.json"
}

step "device"
"$PY" - "$DEVICE" > "$OUT/device.json" <<'PY'
import json, platform, sys, torch
dev = sys.argv[1]
name = torch.cuda.get_device_name(0) if dev == "cuda" else platform.processor() or "cpu"
print(json.dumps({"device": dev, "name": name, "torch": torch.__version__, "cuda": torch.version.cuda}))
PY

step "1. training step on $DEVICE ${BF16[*]:-}"
timed train "$PY" -m landscape.train --model fc --model-config "$FC" \
  --n-samples "$N" --epochs "$EPOCHS" --device "$DEVICE" "${BF16[@]}" --no-progress --out "$OUT/train"

step "2. hessian CLI on $DEVICE"
timed hessian "$PY" -m landscape.hessian "$OUT/train/checkpoint.pt" --device "$DEVICE" --n-samples "$N" \
  --iters "$ITERS" --vectors "$VECTORS" --top-k 1 --no-progress --out "$OUT/hessian" > "$OUT/hessian_summary.json"

step "3. ResNet-18 real-scale row"
"$PY" benchmarks/real_scale.py --device "$DEVICE" "${REAL[@]}" > "$OUT/real_scale.jsonl"

step "4. HVP in gradients, eager and compiled (curvlinops' setup)"
"$PY" benchmarks/hvp_vs_gradient.py --device "$DEVICE" "${HVP[@]}" > "$OUT/hvp_vs_gradient.jsonl"

guarded() {  # guarded NAME SECONDS CMD... > FILE: run CMD within SECONDS; a timeout or failure is a JSON line
  local name=$1 limit=$2 rc=0; shift 2
  timeout "$limit" "$@" || rc=$?
  if [ "$rc" != 0 ]; then echo "{\"step\": \"$name\", \"failed\": true, \"exit\": $rc, \"limit_s\": $limit}"; fi
}

step "5. GPT-2-small products in gradients, eager and compiled, per backend"
guarded lm_products "${LIMITS[0]}" "$PY" benchmarks/compiled_products.py --device "$DEVICE" "${LM[@]}" > "$OUT/lm_products.jsonl"

step "6. Pythia-160M-size GGN and Hessian peak memory (B = 16, T = 256)"
guarded lm_memory "${LIMITS[1]}" "$PY" benchmarks/lm_memory.py --device "$DEVICE" "${NEOX[@]}" > "$OUT/lm_memory.jsonl"

step "7. bf16 against float32 lambda_max"
guarded bf16_lambda "${LIMITS[2]}" "$PY" experiments/bf16_study.py lambda --device "$DEVICE" "${PRECISION[@]}" > "$OUT/bf16_lambda.jsonl"

step "8. 1-GPU FSDP smoke run (GPT-2-small sharded by FSDP2 under torchrun)"
guarded fsdp "${LIMITS[3]}" "$PY" benchmarks/fsdp_scaling.py --ranks 1 --device "$DEVICE" "${FSDP[@]}" \
  > "$OUT/fsdp.jsonl"

step "done: $OUT"
