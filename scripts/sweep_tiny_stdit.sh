#!/usr/bin/env bash
# Hyper-parameter sweep for the tiny STDiT, run in parallel on one GPU.
#
# Each recipe is given the steps it completes in about 38 minutes on the 2-core CPU
# (measured: image stage 0.75 s/step at batch 64, video stage 0.6 s/step at batch 8), so the
# GPU answers "which recipe reaches the 0.85 accuracy bar within the CPU budget"; the
# shipped weights are then trained on the CPU. "long" saves snapshots along a long video
# stage, to learn how many video steps the bar needs at all.
#
#   OUT=outputs/sweep_stdit bash scripts/sweep_tiny_stdit.sh
set -u
OUT=${OUT:-outputs/sweep_stdit}
DEVICE=${DEVICE:-cuda}
MAX_MIN=${MAX_MIN:-3}  # per stage: 2 stages, then the evaluations, fit one 10-minute device call
SAMPLES=${SAMPLES:-64}
EVAL_STEPS=${EVAL_STEPS:-50}
GUIDANCE=${GUIDANCE:-4 6 9}
mkdir -p "$OUT"
evaluate() {  # weights file (no suffix), then where the log goes
  python scripts/eval_tiny.py --model stdit --device "$DEVICE" --threads 1 --no-progress \
    --samples "$SAMPLES" --steps "$EVAL_STEPS" --guidance $GUIDANCE --weights "$1.safetensors" \
    --grid "$1.png" --out "$1.eval.json" >"$1.eval.log" 2>&1
}
run() {  # name, then the flags of python -m blockdance_lab.zoo.train stdit
  local name=$1; shift
  (if python -m blockdance_lab.zoo.train stdit --device "$DEVICE" --threads 1 --no-progress \
      --image-minutes "$MAX_MIN" --max-minutes "$MAX_MIN" --out "$OUT/$name.safetensors" "$@" \
      >"$OUT/$name.train.log" 2>&1; then
     for w in "$OUT/$name".video*.safetensors "$OUT/$name.safetensors"; do
       [ -e "$w" ] && evaluate "${w%.safetensors}"
     done
     echo "$name done:"; grep -H accuracy "$OUT/$name".*eval.log | sed "s|^$OUT/||"
   else
     echo "$name FAILED: $(tail -1 "$OUT/$name.train.log")"
   fi) &
}
case ${SET:-1} in
1)  # the shipped recipe (run 3), the split and learning rates around it, and a long run
  run base
  run long      --steps 12000 --snapshot-steps 2000 4000 8000
  run vlr1e-3   --lr 1e-3
  run vlr4e-3   --lr 4e-3 --warmup 300
  run vb16      --steps 1000 --batch-size 16 --lr 3e-3
  run image     --image-steps 2200 --steps 700
  ;;
2)  # smoke test on the CPU: every code path, seconds each
  run smoke     --image-steps 2 --image-batch-size 4 --steps 3 --batch-size 2 --snapshot-steps 2
  ;;
esac
wait
