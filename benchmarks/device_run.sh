#!/usr/bin/env bash
# One GPU session: the latency benchmark at the paper's DiT-XL/2 setting (BENCH=0 skips it),
# then a tiny model's hyper-parameter sweep (SWEEP=dit, the default, or SWEEP=stdit).
# Expects wheels for what the GPU image lacks in .whl/ (diffusers, pydantic and their small
# dependencies) and writes results under $OUT.
set -u
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, diffusers, timm, blockdance as b; print(torch.__version__, diffusers.__version__, timm.__version__, b.list_architectures())"
if [ "${BENCH:-1}" != 0 ]; then
  python3 benchmarks/bench_latency.py --out "$OUT/bench_fp32_b1.json"
  python3 benchmarks/bench_latency.py --dtype bfloat16 --batch 8 --out "$OUT/bench_bf16_b8.json"
fi
OUT=/tmp/sweep bash "scripts/sweep_tiny_${SWEEP:-dit}.sh"
python3 - <<'PY'
import json, pathlib, subprocess, os
d = pathlib.Path("/tmp/sweep")
best = {}
for f in d.glob("*.eval.json"):
    best[f.name.removesuffix(".eval.json")] = max(r["accuracy"] for r in json.loads(f.read_text())["runs"])
top = sorted(best, key=best.get, reverse=True)[:4]
print("accuracy (best over guidance):", json.dumps(dict(sorted(best.items(), key=lambda kv: -kv[1]))))
out = os.environ["OUT"]
for i in range(0, len(top), 2):
    files = [f"{n}.{e}" for n in top[i:i + 2] for e in ("safetensors", "json")]
    subprocess.run(["tar", "cf", f"{out}/weights{i // 2}.tar", "-C", str(d), *files], check=False)
PY
tar cf "$OUT/sweep.tar" --exclude='*.safetensors' -C /tmp sweep
ls -la "$OUT"
