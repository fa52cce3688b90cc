"""``blockdance analyze`` and ``blockdance calibrate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from blockdance import default_registry
from blockdance.policies.blockdance import window_steps
from blockdance_lab.analysis.calibrate import (
    SSIM_THRESHOLD,
    WINDOW_END,
    calibrate,
    calibrate_combination,
    settle_step,
)
from blockdance_lab.analysis.plots import (
    save_heatmap,
    save_surface,
    save_validation_plot,
    save_x0_curve,
)
from blockdance_lab.analysis.trace import Trace, record_trace
from blockdance_lab.analysis.validate import (
    VALIDATION_SEED0,
    VALIDATION_SEED_STEP,
    plan_validation,
    read_candidates,
    validate,
    validation_seeds,
)
from blockdance_lab.workload import DEFAULT_WORKLOAD, get_workload

__all__ = ["add_commands", "cmd_analyze", "cmd_calibrate"]


def _run_trace(args: argparse.Namespace) -> Trace:
    registry = default_registry()
    workload = get_workload(args.workload, registry)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps or workload.num_steps
    print(f"workload {workload.name}: {workload.description}")
    print(f"recording {args.seeds} seed(s), {steps} {workload.scheduler} steps")
    return record_trace(
        workload,
        seeds=range(args.seeds),
        num_steps=steps,
        data_range=args.data_range,
        registry=registry,
        progress=not args.quiet,
    )


def describe(trace: Trace, threshold: float = SSIM_THRESHOLD) -> str:
    """A few lines of what the trace shows: where structure settles, which blocks change
    least inside the default window."""
    lines = []
    settled = settle_step(trace, threshold, WINDOW_END)
    curve = trace.x0_curve()
    if np.isnan(curve).all():
        lines.append("x̂₀: not measured")
    else:
        where = f"step {settled} of {trace.num_steps}" if settled is not None else "never"
        lines.append(f"x̂₀ SSIM of adjacent steps stays >= {threshold:g} from {where}")
    window = window_steps(trace.default_window, trace.num_steps)
    dist = trace.distance()[window.start : window.stop] if len(window) else trace.distance()[1:]
    finite = np.where(np.isfinite(dist), dist, np.nan)
    per_block = np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in finite.T])
    order = [int(b) for b in np.argsort(per_block)]
    lines.append(
        f"mean relative L2 per block, steps {window.start}..{window.stop - 1}: "
        + " ".join(f"{b}:{v:.3f}" for b, v in enumerate(per_block))
    )
    lines.append(f"blocks that change least there: {order[:3]}; most: {order[-3:][::-1]}")
    return "\n".join(lines)


def cmd_analyze(args: argparse.Namespace) -> int:
    trace = _run_trace(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settled = settle_step(trace, args.ssim_threshold, WINDOW_END)
    written: list[Path | None] = [
        Path(trace.to_csv(out / "trace.csv")),
        out / "trace.json",
    ]
    trace.to_json(out / "trace.json")
    written.append(save_surface(trace, out / "distance_surface.png"))
    written.append(save_heatmap(trace, out / "distance_heatmap.png"))
    written.append(save_x0_curve(trace, out / "x0_ssim.png", args.ssim_threshold, settled))
    print()
    print(describe(trace, args.ssim_threshold))
    print("\nwrote " + ", ".join(str(p) for p in written if p is not None))
    return 0


def validation_plot_path(out: str | Path) -> Path:
    """Where ``calibrate`` writes its validation plot: beside the policy JSON ``out``,
    named after it (``policy.json`` -> ``policy_validation.png``)."""
    out = Path(out)
    return out.with_name(f"{out.stem}_validation.png")


def _check_search(args: argparse.Namespace, validating: bool) -> None:
    """Exit with a message naming the fix for a bad --N, --orders or --validate-seeds."""
    for name, values, ok, want in (
        ("--N", args.N, lambda v: v >= 2, "each >= 2 (N - 1 reuse steps per group)"),
        ("--orders", args.orders, lambda v: 0 <= v <= 2, "each 0, 1 or 2"),
    ):
        bad = [v for v in values if not ok(v)]
        if bad:
            raise SystemExit(f"error: {name} {bad[0]} is out of range: {want}")
        if len(set(values)) != len(values):
            raise SystemExit(f"error: {name} {' '.join(map(str, values))} repeats a value")
    if args.validate < 0 or args.validate_seeds < 1 or args.validate_seed_step < 1:
        raise SystemExit(
            "error: --validate is >= 0, --validate-seeds and --validate-seed-step >= 1"
        )
    if any(args.orders) and not validating:
        raise SystemExit(
            "error: a forecast order is chosen by validation (the trace cannot estimate a "
            "forecast's error): add --validate K, or keep --orders 0"
        )


def cmd_calibrate(args: argparse.Namespace) -> int:
    candidates = [entry for spec in args.candidate or [] for entry in read_candidates(spec)]
    validating = bool(args.validate or candidates)
    _check_search(args, validating)
    if validating and args.target_similarity is not None:
        raise SystemExit(
            "error: --validate and --candidate compare configurations that reach one saving; "
            "use them with --target-saving (or no target), not --target-similarity"
        )
    combination = len(args.N) > 1 or args.orders != [0]
    trace = Trace.from_json(args.trace) if args.trace else _run_trace(args)
    options: dict[str, Any] = {
        "target_similarity": args.target_similarity,
        "target_saving": args.target_saving,
        "ssim_threshold": args.ssim_threshold,
        "end": args.end,
        "shortlist": args.validate,
    }
    if combination:
        result = calibrate_combination(trace, args.N, orders=args.orders, **options)
    else:
        result = calibrate(trace, n=args.N[0], **options)
    written: list[Path] = []
    if validating:
        registry = default_registry()
        name = trace.meta.get("workload") or args.workload
        workload = get_workload(name, registry)
        seeds = validation_seeds(args.validate_seeds, args.validate_seed_step)
        if combination:
            planned, _, _ = plan_validation(result, candidates=candidates, registry=registry)
            per_n = ", ".join(f"N={c.chosen.N}: {len(c.shortlist) or 1}" for c in result.per_n)
            print(
                f"validating on {workload.name}, {len(seeds)} seeds, {trace.num_steps} steps: "
                f"shortlisted ({per_n}; of {max(args.validate, 1)} asked per N) x orders "
                f"{' '.join(map(str, args.orders))}, the defaults, {len(candidates)} given: "
                f"{len(planned)} configurations + none = {len(planned) + 1} generations of "
                f"{len(seeds)} seeds"
            )
        else:
            shortlisted = len(result.shortlist) or 1
            print(
                f"validating on {workload.name}, {len(seeds)} seeds, {trace.num_steps} steps: "
                f"{shortlisted} shortlisted (of {max(args.validate, 1)} asked), the default, "
                f"{len(candidates)} given"
            )
        result = validate(
            result,
            workload,
            seeds=seeds,
            candidates=candidates,
            registry=registry,
            progress=not args.quiet,
        )
        ns = ",".join(map(str, args.N))
        orders = f", orders {','.join(map(str, args.orders))}" if combination else ""
        title = f"{workload.name}: N={ns}{orders}, {trace.num_steps} steps"
        plot = save_validation_plot(result, validation_plot_path(args.out), title)
        written += [plot] if plot is not None else []
    path = result.write(args.out)
    print(result.summary())
    written.insert(0, path)
    if args.report:
        report = Path(args.report)
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result.to_dict(), indent=1))
        written.append(report)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _run_options(p: argparse.ArgumentParser, seeds: int) -> None:
    p.add_argument("--workload", default=DEFAULT_WORKLOAD, help="registered workload name")
    p.add_argument("--seeds", type=int, default=seeds, help="number of samples (seeds 0..n-1)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps")
    p.add_argument(
        "--data-range",
        type=float,
        default=None,
        help="SSIM data range of x̂₀ (default: 2 when the workload's samples are pixels, "
        "else from the tensors)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--ssim-threshold",
        type=float,
        default=SSIM_THRESHOLD,
        help="x̂₀ SSIM of adjacent steps above which structure counts as settled",
    )


def add_commands(subparsers: Any) -> None:
    """Add ``analyze`` and ``calibrate`` to the ``blockdance`` command's subparsers."""
    p = subparsers.add_parser(
        "analyze",
        help="record adjacent-step block distances and x̂₀ SSIM; plot them",
        description="Run one generation of a workload under the `none` policy and write "
        "the (step, block, relative L2) surface and heat-map, the x̂₀ SSIM curve (PNG), and "
        "the numbers (trace.csv, trace.json).",
    )
    _run_options(p, seeds=8)
    p.add_argument("--out", default="outputs/analyze", help="output folder")
    p.set_defaults(func=cmd_analyze)

    p = subparsers.add_parser(
        "calibrate",
        help="propose a BlockDance boundary and window; write a policy JSON",
        description="From a trace (recorded now, or --trace trace.json), propose a "
        "boundary block and reuse window for a target, and write "
        '{"kind": "blockdance", "N": ..., "boundary": ..., "window": [...]} for '
        "`blockdance.attach(model, path)` and `blockdance demo --policy path`. The rule is "
        "in docs/analysis.md.",
    )
    _run_options(p, seeds=8)
    p.add_argument("--trace", default=None, help="a trace.json from `blockdance analyze`")
    p.add_argument(
        "--N",
        type=int,
        nargs="+",
        default=[2],
        help="group size of the proposed configuration; several (--N 2 3 4) search them "
        "all, the rule comparing their choices by reuse distance",
    )
    p.add_argument(
        "--orders",
        type=int,
        nargs="+",
        default=[0],
        metavar="ORDER",
        help="forecast orders validation measures each found configuration at: 0 is "
        "blockdance, 1 and 2 blockdance-forecast (needs --validate: the trace cannot "
        "estimate a forecast's error); the winner's kind goes into the policy JSON",
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--target-similarity",
        type=float,
        default=None,
        help="largest reuse distance: mean estimated relative L2 of the reused state "
        "(e.g. 0.05); the largest saving within it is proposed",
    )
    target.add_argument(
        "--target-saving",
        type=float,
        default=None,
        help="smallest share of block computations to skip (e.g. 0.25); the least reuse "
        "distance reaching it is proposed (default: the architecture default's saving)",
    )
    p.add_argument("--end", type=float, default=WINDOW_END, help="latest window end (fraction)")
    p.add_argument(
        "--validate",
        type=int,
        default=0,
        metavar="K",
        help="generate with the best window of each of the K best boundary blocks, the "
        "default and every --candidate, and choose the one closest to the full model "
        "(measured SSIM) among those reaching the target saving; writes "
        "<out stem>_validation.png beside --out",
    )
    p.add_argument(
        "--candidate",
        action="append",
        metavar="POLICY",
        help="also validate this configuration (any registered kind): a kind name, a JSON "
        'object such as \'{"kind": "fora", "N": 2}\', a policy file, or a JSON file holding '
        "a list of them (repeatable; implies validation)",
    )
    p.add_argument(
        "--validate-seeds",
        type=int,
        default=16,
        help=f"seeds per validation generation (from {VALIDATION_SEED0}, apart from the demo's)",
    )
    p.add_argument(
        "--validate-seed-step",
        type=int,
        default=VALIDATION_SEED_STEP,
        metavar="STEP",
        help=f"validation seeds are {VALIDATION_SEED0}, {VALIDATION_SEED0}+STEP, ...: a step "
        "that spreads them over the workload's conditions (the tiny SD3's caption is class "
        "seed %% 16 on background (seed // 16) %% 5: the default 17 covers both with 16 "
        "seeds; 1 gives the consecutive seeds of earlier releases)",
    )
    p.add_argument("--out", default="outputs/calibrate/policy.json", help="policy JSON path")
    p.add_argument("--report", default=None, help="also write the calibration details here")
    p.set_defaults(func=cmd_calibrate)
