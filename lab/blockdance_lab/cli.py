"""The lab's commands: ``blockdance demo``, ``bench`` and ``workloads`` (``analyze`` and
``calibrate`` live in :mod:`blockdance_lab.analysis.cli`).

The lab's plugin adds them to the core's ``blockdance`` command line through
``blockdance_add_commands``."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from blockdance import PolicyLike, Registry, default_registry
from blockdance.cli import owner_label, print_sections
from blockdance_lab.compare import compare_policies
from blockdance_lab.policy_entries import check_policies, labelled, parse_policy_arg
from blockdance_lab.report import (
    add_consistency_metrics,
    add_quality_metrics,
    format_table,
    save_reuse_maps,
    save_sample_grid,
    save_video_gif,
)
from blockdance_lab.workload import DEFAULT_WORKLOAD, Workload, get_workload, workloads

__all__ = ["DEFAULT_WORKLOAD", "add_commands"]


def _policy_list(args: argparse.Namespace) -> list[tuple[str, PolicyLike]]:
    """The demo's rows: the baseline, BlockDance at each ``--n``, then each ``--policy``."""
    policies: list[tuple[str, PolicyLike]] = [("baseline", "none")]
    policies += [(f"blockdance N={n}", {"kind": "blockdance", "N": n}) for n in args.n]
    extra = [parse_policy_arg(spec) for spec in args.policy or []]
    return policies + labelled(extra, with_options=False)


def _demo_workloads(registry: Registry, names: Sequence[str] | None) -> list[Workload]:
    """The named workloads, or every registered one with a quality probe (a trained model)."""
    if names:
        return [get_workload(name, registry) for name in names]
    judged = [w for w in workloads(registry).entries.values() if w.probe is not None]
    return judged or [get_workload(DEFAULT_WORKLOAD, registry)]


def cmd_demo(args: argparse.Namespace) -> int:
    registry = default_registry()
    workloads = _demo_workloads(registry, args.workload)
    check_policies(registry, _policy_list(args))
    torch.set_num_threads(args.threads) if args.threads else None
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores - 0.5:
        print(
            f"warning: the machine is busy (load {load:.1f} on {cores} cores): latencies will "
            "be noisy; try --threads 1 or run when it is idle"
        )
    for i, workload in enumerate(workloads):
        if i:
            print()
        _demo_one(args, registry, workload, Path(args.out) / workload.name)
    return 0


def _demo_one(args: argparse.Namespace, registry: Registry, workload: Workload, out: Path) -> None:
    steps = args.steps or workload.num_steps
    seeds = args.seeds or workload.demo_seeds
    print(f"workload {workload.name}: {workload.description}")
    print(f"{seeds} seeds, {steps} {workload.scheduler} steps, {args.repeats} repeat(s)\n")
    runs = compare_policies(
        workload,
        _policy_list(args),
        seeds=range(seeds),
        num_steps=steps,
        repeats=args.repeats,
        progress=not args.quiet,
        registry=registry,
    )
    add_consistency_metrics(runs)
    add_quality_metrics(runs, workload, list(range(seeds)))
    print()
    print(format_table(runs))
    out.mkdir(parents=True, exist_ok=True)
    rows = [
        {"policy": r.label, "latency_s": r.latency, **r.metrics, "stats": r.stats.to_dict()}
        for r in runs
    ]
    written: list[Path | None] = [out / "demo.json"]
    (out / "demo.json").write_text(json.dumps(rows, indent=1))
    written.append(save_reuse_maps(runs, out / "reuse_map.png"))
    if workload.pixels:
        written.append(save_sample_grid(runs, out / "samples.png"))
    if workload.videos:  # play them side by side
        gif = save_video_gif(runs, out / "samples.gif")
        written += [gif, gif.with_name(f"{gif.stem}_strip.png")]
    print("\nwrote " + ", ".join(str(p) for p in written if p is not None))


def cmd_bench(args: argparse.Namespace) -> int:
    from blockdance_lab._distributed import init_from_env
    from blockdance_lab.bench import (
        BenchSpec,
        format_bench_table,
        load_bench_spec,
        result_rows,
        run_bench,
        write_results,
    )

    overrides = {
        "workload": args.workload,
        "seeds": args.seeds,
        "seed_offset": args.seed_offset,
        "steps": args.steps,
        "repeats": args.repeats,
        "reference": args.reference,
    }
    if args.policy:
        overrides["policies"] = [parse_policy_arg(p) for p in args.policy]
    if args.config is not None:
        spec = load_bench_spec(args.config, **overrides)
    elif args.policy:
        spec = BenchSpec.model_validate({k: v for k, v in overrides.items() if v is not None})
    else:
        print("blockdance bench: give a bench file (JSON/YAML) or at least one --policy")
        return 2
    torch.set_num_threads(args.threads) if args.threads else None
    ctx = init_from_env()
    registry = default_registry()
    if ctx.is_main:
        workload = get_workload(spec.workload, registry)
        print(f"workload {workload.name}: {workload.description}")
        first = spec.seed_offset
        print(
            f"{spec.seeds} seeds ({first}..{first + spec.seeds - 1}), "
            f"{spec.steps or workload.num_steps} {workload.scheduler} steps, "
            f"{spec.repeats} repeat(s), {len(spec.policies)} policies + baseline"
            + (f", {ctx.world_size} ranks" if ctx.world_size > 1 else "")
            + "\n"
        )
    result = run_bench(spec, registry=registry, progress=not args.quiet, ctx=ctx)
    if result is None:
        return 0
    print()
    print(format_bench_table(result_rows(result.runs, result.reference), result.meta))
    title = f"{spec.workload}, {spec.seeds} seeds"
    written = write_results(result, Path(args.out), title=title)
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_workloads(args: argparse.Namespace) -> int:
    """Print the registered workloads, each with the plugin that registered it."""
    table = workloads(default_registry())
    rows = [
        (name, workload.description, owner_label(table.owner(name)))
        for name, workload in table.entries.items()
    ]
    print_sections([("workloads", rows)])
    return 0


def add_commands(sub: Any) -> None:
    """Add ``workloads``, ``demo``, ``bench``, ``analyze`` and ``calibrate``.

    Args:
        sub: The ``blockdance`` command line's subparsers.
    """
    from blockdance_lab.analysis.cli import add_commands as add_analysis_commands

    p = sub.add_parser("workloads", help="registered workloads (a model and its sampler)")
    p.set_defaults(func=cmd_workloads)
    p = sub.add_parser("demo", help="baseline against BlockDance N=2,3,4 on a workload")
    p.add_argument(
        "--workload",
        nargs="+",
        default=None,
        help="registered workload name(s) (default: every workload with a trained model and "
        "probe); each writes to OUT/<workload>/",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="number of samples, seeds 0..n-1 (default: the workload's, 64 for images)",
    )
    p.add_argument("--steps", type=int, default=None, help="denoising steps")
    p.add_argument("--n", type=int, nargs="*", default=[2, 3, 4], help="BlockDance N values")
    p.add_argument(
        "--policy",
        action="append",
        help="extra policy: a kind name, a JSON object or a JSON file (repeatable)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default="outputs/demo", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser(
        "bench", help="many policy configurations on one workload: table, CSV/JSON, Pareto plot"
    )
    p.add_argument("config", nargs="?", type=Path, help="bench file (.json, .yaml, .yml)")
    p.add_argument(
        "--workload", default=None, help=f"registered workload (default {DEFAULT_WORKLOAD})"
    )
    p.add_argument("--seeds", type=int, default=None, help="number of samples (default 64)")
    p.add_argument(
        "--seed-offset",
        type=int,
        default=None,
        help="first seed: runs seeds K..K+n-1, e.g. held-out seeds (default 0)",
    )
    p.add_argument("--steps", type=int, default=None, help="denoising steps")
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed repeats, interleaved with the order rotating each repeat (default 1)",
    )
    p.add_argument(
        "--reference",
        default=None,
        help="label of the row paired differences are taken against "
        "(default: the first row after the baseline)",
    )
    p.add_argument(
        "--policy",
        action="append",
        help="a kind name, a JSON object or a JSON file; replaces the file's list (repeatable)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default="outputs/bench", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_bench)

    add_analysis_commands(sub)
    __import__("blockdance_lab.ada_training", fromlist=["add_command"]).add_command(sub)
