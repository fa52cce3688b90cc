"""Record MagCache's magnitude ratios for a workload, as the bench files' ``mag_ratios``.

    python benchmarks/record_magcache.py --workload stdit-tiny-shapes \\
        --out benchmarks/magcache_tiny_stdit.json

Runs one generation of the held-out seeds (default 10000..10007, apart from the demo's and
the bench's seeds 0..n-1) with :class:`blockdance.policies.magcache.MagnitudeRecorder`, which
computes every block and records the stack residual's norms, and writes the ratios with
where they came from.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import torch

import blockdance
from blockdance.policies.magcache import MagnitudeRecorder
from blockdance_lab.workload import GenerateRequest, get_workload


def main(argv: list[str] | None = None) -> None:
    """Records and writes the ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", required=True)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--first-seed", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    workload = get_workload(args.workload)
    target = workload.build()
    seeds = tuple(range(args.first_seed, args.first_seed + args.seeds))
    recorder = MagnitudeRecorder()
    with (
        blockdance.attach(target, recorder, num_steps=args.steps) as handle,
        handle.generation(args.steps),
        torch.inference_mode(),
    ):
        workload.generate(target, GenerateRequest(seeds, args.steps))
    record = {
        "mag_ratios": recorder.ratios(),
        "workload": args.workload,
        "steps": args.steps,
        "seeds": list(seeds),
        "recorded_by": "benchmarks/record_magcache.py (MagnitudeRecorder, one generation of "
        f"the {len(seeds)} seeds)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {len(record['mag_ratios'])} ratios to {args.out}")


if __name__ == "__main__":
    main()
