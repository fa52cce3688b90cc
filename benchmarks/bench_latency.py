"""Latency of BlockDance on a DiT-XL/2-shaped model, as ratios measured in one process.

For each repeat, runs are interleaved — unhooked model, ``none`` policy, BlockDance
N=2, 3, 4 — in an order rotated from repeat to repeat, so drift and position effects on a
shared machine hit all alike; each latency is the median over repeats. Reports the
measured reduction ``1 - t / t_base`` beside the ideal one from the blocks actually skipped,
and the overhead of the ``none`` policy.

Weights are random: latency does not depend on them. Defaults are the paper's
DiT-XL/2 setting (256 px → 32×32 latents, 256 tokens, DDIM-50, guidance); on a small
CPU use flags, e.g. ``--latent-size 8 --steps 20 --repeats 3``.

``--compile`` adds a second copy of the model whose blocks are compiled
(``block.compile()``, the recommended way to combine blockdance with ``torch.compile``):
the compiled model runs unhooked, under ``none`` and under BlockDance, interleaved with
the eager runs, and the report adds compiled/eager ratios and dynamo's graph and
recompile counts.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

import blockdance
from blockdance_lab.compare import timed
from blockdance_lab.workload import GenerateRequest
from blockdance_lab.zoo.dit.sampling import make_scheduler
from blockdance_lab.zoo.dit.workloads import DiTSampler


def compile_counts() -> dict[str, int]:
    """Graphs dynamo compiled and recompiles it made so far in this process."""
    from torch._dynamo.utils import counters

    return {
        "graphs": int(counters["stats"]["unique_graphs"]),
        "recompiles": int(sum(counters["recompiles"].values())),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="DiT-XL/2", help="registered model name")
    p.add_argument("--latent-size", type=int, default=32, help="latent side (tokens = (s/p)^2)")
    p.add_argument("--batch", type=int, default=1, help="samples per generation")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--guidance", type=float, default=4.0, help="CFG scale (batched); 1 = none")
    p.add_argument("--n", type=int, nargs="+", default=[2, 3, 4], help="BlockDance N values")
    p.add_argument("--repeats", type=int, default=5, help="interleaved timed repeats")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--compile",
        action="store_true",
        help="also time a copy with block.compile()d blocks (eager and compiled, as ratios)",
    )
    p.add_argument("--fullgraph", action="store_true", help="with --compile: fullgraph=True")
    p.add_argument("--out", default="outputs/bench_latency.json", help="JSON results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    model = blockdance.create_model(args.model, input_size=args.latent_size, num_classes=1000)
    model = model.to(device, dtype).eval()
    samplers = {"": DiTSampler(model, make_scheduler("ddim"), guidance_scale=args.guidance)}
    if args.compile:
        compiled = copy.deepcopy(model)
        for block in compiled.blocks:
            block.compile(fullgraph=args.fullgraph)
        samplers["compiled "] = DiTSampler(
            compiled, make_scheduler("ddim"), guidance_scale=args.guidance
        )
    request = GenerateRequest(seeds=tuple(range(args.batch)), num_steps=args.steps)
    tokens = (args.latent_size // model.patch_size) ** 2
    print(
        f"{args.model}: {len(model.blocks)} blocks, {tokens} tokens, batch {args.batch}"
        f"{' x2 (CFG)' if args.guidance > 1 else ''}, DDIM-{args.steps}, {device} {args.dtype}, "
        f"{args.repeats} repeats, torch threads {torch.get_num_threads()}"
        + (f", blocks compiled (fullgraph={args.fullgraph})" if args.compile else "")
    )

    def timed_run(sampler: DiTSampler, policy: Any) -> tuple[float, float]:
        """One generation; returns (seconds, saved block fraction)."""
        if policy is None:
            return timed(lambda: sampler(request), device)[1], 0.0
        with blockdance.attach(sampler, policy) as handle:
            seconds = timed(lambda: sampler(request), device)[1]
        return seconds, handle.stats.saved_fraction

    policies: dict[str, Any] = {"unhooked": None, "none": "none"}
    policies.update({f"blockdance N={n}": {"kind": "blockdance", "N": n} for n in args.n})
    configs = {
        prefix + label: (sampler, policy)
        for prefix, sampler in samplers.items()
        for label, policy in policies.items()
    }
    for label in ("unhooked", "compiled unhooked"):  # warm-up; the plain compile
        if label in configs:
            timed_run(*configs[label])
    plain = compile_counts()
    for label, config in configs.items():  # then each policy once, compiled or not
        if label not in ("unhooked", "compiled unhooked"):
            timed_run(*config)
    after_warmup = compile_counts()
    times: dict[str, list[float]] = {k: [] for k in configs}
    ideal: dict[str, float] = {}
    labels = list(configs)
    for r in range(args.repeats):
        # rotate the order each repeat: no configuration always runs first (or after the
        # same neighbour), so position effects on a shared machine fall on all alike
        shift = r % len(labels)
        for label in labels[shift:] + labels[:shift]:
            sampler, policy = configs[label]
            seconds, saved = timed_run(sampler, policy)
            times[label].append(seconds)
            ideal[label] = saved
        print(
            f"  repeat {r + 1}/{args.repeats}: "
            + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
            flush=True,
        )
    counts = compile_counts()

    med = {k: statistics.median(v) for k, v in times.items()}
    paired = [n / u for n, u in zip(times["none"], times["unhooked"])]
    overhead = statistics.median(paired) - 1
    print()
    print(f"{'config':<25}{'median s':>10}{'reduction':>11}{'ideal':>8}{'of ideal':>10}")
    rows = []
    for label, t in med.items():
        base = med["compiled unhooked" if label.startswith("compiled") else "unhooked"]
        reduction = 1 - t / base
        of_ideal = reduction / ideal[label] if ideal[label] > 0 else float("nan")
        rows.append(
            {
                "config": label,
                "median_s": t,
                "times_s": times[label],
                "reduction": reduction,
                "ideal": ideal[label],
                "of_ideal": of_ideal,
            }
        )
        shown = f"{of_ideal:.1%}" if ideal[label] > 0 else "-"
        print(f"{label:<25}{t:>10.3f}{reduction:>11.1%}{ideal[label]:>8.1%}{shown:>10}")
    print(f"\n'none' overhead vs unhooked (median of paired ratios): {overhead:+.2%} (target < 1%)")
    worst = min((r["of_ideal"] for r in rows if r["ideal"] > 0), default=float("nan"))
    print(f"worst measured/ideal reduction: {worst:.1%} (target >= 95%)")
    compile_report: dict[str, Any] = {}
    if args.compile:
        for label in policies:
            ratios = [c / e for c, e in zip(times[f"compiled {label}"], times[label])]
            compile_report[f"compiled/eager {label}"] = statistics.median(ratios)
        compile_report["unhooked compiled once"] = plain
        compile_report["after every policy once"] = after_warmup
        compile_report["after the timed repeats"] = counts
        print("\ncompiled / eager latency (median of paired ratios):")
        for label in policies:
            print(f"  {label:<16}{compile_report[f'compiled/eager {label}']:.3f}")
        print("dynamo graphs / recompiles, counted over the whole process:")
        stages = ("unhooked compiled once", "after every policy once", "after the timed repeats")
        for what in stages:
            c = compile_report[what]
            print(f"  {what:<26}{c['graphs']:>4} graph(s) {c['recompiles']:>4} recompile(s)")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: (str(v) if isinstance(v, torch.device) else v) for k, v in vars(args).items()}
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    out.write_text(
        json.dumps(
            {
                "args": meta,
                "device": device_name,
                "rows": rows,
                "none_overhead": overhead,
                "compile": compile_report,
            },
            indent=1,
        )
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
