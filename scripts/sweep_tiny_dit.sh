#!/usr/bin/env bash
# Hyper-parameter sweep for the tiny DiT, run in parallel on one GPU.
#
# Each configuration is trained for the number of steps its architecture completes in
# 38 minutes on the 2-core CPU (measured s/step: h128 d12 mlp2 0.53 s, h128 d8 0.38 s,
# h192 d8 0.66 s, batch 32 0.32 s, mlp ratio 4 0.82 s), so the GPU answers "which settings reach the
# quality bar within the CPU budget"; the shipped weights are then trained on the CPU.
#
#   OUT=outputs/sweep bash scripts/sweep_tiny_dit.sh
set -u
OUT=${OUT:-outputs/sweep}
DEVICE=${DEVICE:-cuda}
MAX_MIN=${MAX_MIN:-5}
SAMPLES=${SAMPLES:-128}
EVAL_STEPS=${EVAL_STEPS:-50}
mkdir -p "$OUT"
run() {  # name, then the flags of python -m blockdance_lab.zoo.train dit
  local name=$1; shift
  (python -m blockdance_lab.zoo.train dit --device "$DEVICE" --threads 1 --no-progress \
      --max-minutes "$MAX_MIN" --out "$OUT/$name.safetensors" "$@" >"$OUT/$name.train.log" 2>&1 &&
   python scripts/eval_tiny.py --model dit --device "$DEVICE" --threads 1 --no-progress --samples "$SAMPLES" \
      --steps "$EVAL_STEPS" --guidance ${GUIDANCE:-2 3 4 6} --weights "$OUT/$name.safetensors" --grid "$OUT/$name.png" \
      --out "$OUT/$name.eval.json" >"$OUT/$name.eval.log" 2>&1;
   echo "$name done: $(grep -h accuracy "$OUT/$name.eval.log" | tr '\n' ' ')") &
}
case ${SET:-1} in
1)  # first round: learning rate, depth, width, batch, loss weighting
  run base      --steps 4300 --lr 1e-3
  run lr2e-3    --steps 4300 --lr 2e-3 --warmup 200
  run lr4e-3    --steps 4300 --lr 4e-3 --warmup 300
  run d8        --steps 5900 --lr 2e-3 --warmup 200 --depth 8
  run b32       --steps 7100 --lr 1e-3 --batch-size 32
  run nosnr     --steps 4300 --lr 2e-3 --warmup 200 --min-snr 0
  run h192d8    --steps 3450 --lr 1.5e-3 --warmup 200 --hidden 192 --depth 8 --heads 6
  run mlp4      --steps 2780 --lr 2e-3 --warmup 200 --mlp-ratio 4
  run long      --steps 12000 --lr 2e-3 --warmup 200
  ;;
2)  # second round, after round 1 favoured the highest learning rate (4e-3)
  run lr6e-3    --steps 4300 --lr 6e-3 --warmup 300
  run lr8e-3    --steps 4300 --lr 8e-3 --warmup 300
  run lr1.2e-2  --steps 4300 --lr 1.2e-2 --warmup 500
  run d8lr6e-3  --steps 5900 --lr 6e-3 --warmup 300 --depth 8
  run h192lr6e-3 --steps 3450 --lr 6e-3 --warmup 300 --hidden 192 --depth 8 --heads 6
  ;;
esac
wait
