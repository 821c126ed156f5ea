#!/usr/bin/env bash
# The prepared GPU check: one script, under 8 minutes on one H100/H200, every figure as JSON lines in OUT.
#
#   bash benchmarks/gpu_check.sh [OUT]             # on the GPU machine (OUT defaults to $OUT or gpu_check)
#   bash benchmarks/gpu_check.sh --dry-run [OUT]   # the same steps at toy size on the CPU (run by the tests)
#
# Steps: (1) the CUDA path of a training step with bf16 autocast (landscape.train --bf16);
# (2) the hessian CLI on that checkpoint on CUDA; (3) the real-scale row: the zoo's ResNet-18 at CIFAR
# size, 512 samples (benchmarks/real_scale.py: gradient, HVP per backend at k = 1, 4, 8, top-1, SLQ 80 x 8,
# peers when installed); (4) curvlinops' published setup side by side (benchmarks/hvp_vs_gradient.py:
# ResNet-18, batch 512, HVP in gradients eager and compiled; curvlinops reports 7.9 and 2.2 on an A6000).
# Record the results in BENCHMARKS.md with the device named (the first line of OUT/device.json).
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
else
  DEVICE=cuda; BF16=(--bf16); EPOCHS=2; N=2000; ITERS=80; VECTORS=8; FC='{"kind": "residual", "depth": 20, "width": 128}'
  REAL=(--n-samples 512 --batch 128)
  HVP=(--batch 512)
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

step "done: $OUT"
