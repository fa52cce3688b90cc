"""The lab's commands: ``blockdance demo``, ``bench`` and ``workloads`` (``analyze`` and
``calibrate`` live in :mod:`blockdance_lab.analysis.cli`).

The lab's plugin adds them to the core's ``blockdance`` command line through
``blockdance_add_commands``."""

from __future__ import annotations

import argparse
import json
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from blockdance import PolicyLike, Registry, attach, default_registry
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
from blockdance_lab.workload import (
    DEFAULT_WORKLOAD,
    GenerateRequest,
    Workload,
    get_workload,
    workloads,
)

__all__ = ["DEFAULT_WORKLOAD", "FULL_DEMO", "QUICK_DEMO", "DemoPreset", "add_commands"]


@dataclass(frozen=True)
class DemoPreset:
    """How much ``blockdance demo`` generates when no flag says otherwise.

    Args:
        name: ``"quick"`` or ``"full"``, for the printed header.
        repeats: Timed repeats per row (latency is their median).
        images: Samples per image (or latent) workload; None: the workload's ``demo_seeds``.
        videos: Samples per video workload; None: the workload's ``demo_seeds``.
        warmup_steps: Steps of the untimed warm-up generation of the timed batch; None: a
            whole generation. A few steps warm the same shapes for a fraction of the cost.
        reference_size: Real samples FD-probe compares against.
    """

    name: str
    repeats: int
    images: int | None = None
    videos: int | None = None
    warmup_steps: int | None = None
    reference_size: int = 1024

    def seeds(self, workload: Workload) -> int:
        """Samples to draw on ``workload``: the preset's count, never more than the
        workload's own ``demo_seeds`` (a costly workload asks for fewer)."""
        count = self.videos if workload.videos else self.images
        return workload.demo_seeds if count is None else min(count, workload.demo_seeds)


#: The default: a first run in minutes (one timed repeat, a few samples per model).
QUICK_DEMO = DemoPreset("quick", repeats=1, images=8, videos=2, warmup_steps=2, reference_size=256)
#: ``--full``: the README's full tables (64 images, 16 videos, 3 timed repeats).
FULL_DEMO = DemoPreset("full", repeats=3)


def _preset(args: argparse.Namespace) -> DemoPreset:
    return FULL_DEMO if args.full else QUICK_DEMO


def demo_plan(args: argparse.Namespace, workload: Workload) -> tuple[int, int, int]:
    """``(seeds, steps, repeats)`` the demo runs on ``workload``: explicit flags win over the
    preset (``--full`` or the quick default), which wins over the workload's defaults."""
    preset = _preset(args)
    seeds = args.seeds or preset.seeds(workload)
    repeats = args.repeats if args.repeats is not None else preset.repeats
    return seeds, args.steps or workload.num_steps, repeats


def _samples(workload: Workload, count: int) -> str:
    noun = "video" if workload.videos else "image" if workload.images else "sample"
    return f"{count} {noun}{'s' if count != 1 else ''}"


def demo_note(args: argparse.Namespace, workload: Workload, seeds: int, repeats: int) -> str:
    """What the table rests on and how far to trust it, printed under the demo's table."""
    what = f"{_samples(workload, seeds)} (seeds 0..{seeds - 1})"
    if repeats == 1:
        timing = (
            "1 timed repeat: latency and reduction are one measurement each and noisy "
            "(a busy machine moves them by 10% or more)"
        )
    else:
        timing = (
            f"{repeats} interleaved timed repeats (median): latency still moves by about "
            "5-10% from run to run on a shared machine"
        )
    lines = [f"{what}, {timing}; the ideal column counts skipped block calls and is exact."]
    if workload.probe is not None and seeds < 32:
        real = _preset(args).reference_size
        lines.append(
            f"FD-probe (against {real} real samples) and accuracy on {seeds} samples are "
            "rough: FD is biased upward at few samples and not comparable with a --full table."
        )
    if not args.full:
        full = FULL_DEMO
        lines.append(
            f"The full table: blockdance demo --full ({_samples(workload, full.seeds(workload))}, "
            f"{full.repeats} repeats)."
        )
    return "\n".join(textwrap.fill(line, width=100) for line in lines)


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
    seeds, steps, repeats = demo_plan(args, workload)
    print(f"workload {workload.name}: {workload.description}")
    print(
        f"{_preset(args).name} demo: {_samples(workload, seeds)}, {steps} {workload.scheduler} "
        f"steps, {repeats} timed repeat{'s' if repeats != 1 else ''}\n"
    )
    preset = _preset(args)
    target = workload.build()
    if preset.warmup_steps is not None:  # the timed batch's shapes, for a few steps
        short = min(preset.warmup_steps, steps)
        with attach(target, "none", registry=registry, num_steps=short), torch.inference_mode():
            workload.generate(target, GenerateRequest(tuple(range(seeds)), short))
    runs = compare_policies(
        workload,
        _policy_list(args),
        seeds=range(seeds),
        num_steps=steps,
        repeats=repeats,
        warmup=preset.warmup_steps is None,
        progress=not args.quiet,
        registry=registry,
        target=target,
    )
    add_consistency_metrics(runs)
    add_quality_metrics(runs, workload, list(range(seeds)), reference_size=preset.reference_size)
    print()
    print(format_table(runs))
    print(demo_note(args, workload, seeds, repeats))
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
    """Add the lab's commands: ``workloads``, ``demo``, ``bench``, ``analyze``, ``calibrate``,
    ``magcache-calibrate`` and ``train-ada``.

    Args:
        sub: The ``blockdance`` command line's subparsers.
    """
    from blockdance_lab.ada_training import add_command as add_ada_command
    from blockdance_lab.analysis.cli import add_commands as add_analysis_commands
    from blockdance_lab.magcache import add_commands as add_magcache_commands

    p = sub.add_parser("workloads", help="registered workloads (a model and its sampler)")
    p.set_defaults(func=cmd_workloads)
    p = sub.add_parser(
        "demo",
        help="baseline against BlockDance N=2,3,4 on each shipped model",
        description="Baseline against BlockDance N=2, 3, 4 on every workload with a trained "
        f"model. By default a quick run: {QUICK_DEMO.images} images per image model, "
        f"{QUICK_DEMO.videos} videos per video model, {QUICK_DEMO.repeats} timed repeat. "
        "--full draws each workload's own count (64 images, 16 videos) with "
        f"{FULL_DEMO.repeats} timed repeats. --seeds and --repeats override either.",
    )
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
        help=f"number of samples, seeds 0..n-1 (default: {QUICK_DEMO.images} images or "
        f"{QUICK_DEMO.videos} videos; with --full the workload's, 64 images or 16 videos)",
    )
    p.add_argument("--steps", type=int, default=None, help="denoising steps")
    p.add_argument("--n", type=int, nargs="*", default=[2, 3, 4], help="BlockDance N values")
    p.add_argument(
        "--policy",
        action="append",
        help="extra policy: a kind name, a JSON object or a JSON file (repeatable)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"timed repeats, interleaved (median; default {QUICK_DEMO.repeats}, "
        f"{FULL_DEMO.repeats} with --full)",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="the full tables: each workload's own sample count and "
        f"{FULL_DEMO.repeats} timed repeats (about 16 minutes on 2 CPU cores)",
    )
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
    add_magcache_commands(sub)
    add_ada_command(sub)
