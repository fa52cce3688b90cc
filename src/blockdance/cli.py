"""Command line: ``blockdance list`` and ``blockdance demo``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from blockdance._attach import PolicyLike
from blockdance._manager import default_registry
from blockdance.compare import PolicyRun, compare_policies
from blockdance.evaluation.metrics import psnr, ssim

DEFAULT_WORKLOAD = "dit-s2"


def _frames(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) stays; video (N, F, C, H, W) becomes per-frame (N*F, C, H, W)."""
    return x.flatten(0, 1) if x.dim() == 5 else x


def add_consistency_metrics(runs: Sequence[PolicyRun]) -> None:
    """SSIM and PSNR of each run's samples against the first run's (same seeds)."""
    base = _frames(runs[0].samples).float()
    data_range = float(base.max() - base.min()) or 1.0
    t_base = runs[0].latency
    for run in runs:
        x = _frames(run.samples).float()
        run.metrics["ssim"] = float(ssim(x, base, data_range=data_range).mean())
        run.metrics["psnr"] = float(psnr(x, base, data_range=data_range, max_db=100.0).mean())
        run.metrics["reduction"] = 1.0 - run.latency / t_base
        run.metrics["ideal"] = run.stats.saved_fraction


def format_table(runs: Sequence[PolicyRun]) -> str:
    """The demo's table as aligned text."""
    header = (
        f"{'policy':<18}{'latency s':>10}{'reduction':>11}{'ideal':>8}{'of ideal':>10}"
        f"{'SSIM':>8}{'PSNR dB':>9}{'cache MiB':>11}"
    )
    lines = [header, "-" * len(header)]
    for run in runs:
        m = run.metrics
        of_ideal = f"{m['reduction'] / m['ideal']:.0%}" if m["ideal"] > 0 else "-"
        lines.append(
            f"{run.label:<18}{run.latency:>10.3f}{m['reduction']:>11.1%}{m['ideal']:>8.1%}"
            f"{of_ideal:>10}{m['ssim']:>8.4f}{m['psnr']:>9.2f}"
            f"{run.stats.peak_cache_bytes / 2**20:>11.2f}"
        )
    return "\n".join(lines)


def save_reuse_maps(runs: Sequence[PolicyRun], path: Path) -> Path | None:
    """A PNG of each run's (step, block) map: computed vs reused."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the reuse map (pip install blockdance[plot])")
        return None
    fig, axes = plt.subplots(1, len(runs), figsize=(2.2 * len(runs), 4), squeeze=False)
    for ax, run in zip(axes[0], runs):
        grid = torch.tensor(run.stats.reuse_map(), dtype=torch.float32)
        ax.imshow(grid, aspect="auto", cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(run.label, fontsize=9)
        ax.set_xlabel("block")
    axes[0][0].set_ylabel("step (green = reused)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _policy_list(args: argparse.Namespace) -> list[tuple[str, PolicyLike]]:
    policies: list[tuple[str, PolicyLike]] = [("baseline", "none")]
    policies += [(f"blockdance N={n}", {"kind": "blockdance", "N": n}) for n in args.n]
    for spec in args.policy or []:
        data: dict[str, Any] = json.loads(spec) if spec.lstrip().startswith("{") else {}
        if data:
            policies.append((str(data.get("kind")), data))
        else:
            policies.append((Path(spec).stem if spec.endswith(".json") else spec, spec))
    return policies


def cmd_demo(args: argparse.Namespace) -> int:
    registry = default_registry()
    workload = registry.workload(args.workload)
    steps = args.steps or workload.num_steps
    torch.set_num_threads(args.threads) if args.threads else None
    print(f"workload {workload.name}: {workload.description}")
    print(f"{args.seeds} seeds, {steps} {workload.scheduler} steps, {args.repeats} repeat(s)\n")
    runs = compare_policies(
        workload,
        _policy_list(args),
        seeds=range(args.seeds),
        num_steps=steps,
        repeats=args.repeats,
        progress=not args.quiet,
        registry=registry,
    )
    add_consistency_metrics(runs)
    print()
    print(format_table(runs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [
        {"policy": r.label, "latency_s": r.latency, **r.metrics, "stats": r.stats.to_dict()}
        for r in runs
    ]
    (out / "demo.json").write_text(json.dumps(rows, indent=1))
    png = save_reuse_maps(runs, out / "reuse_map.png")
    print(f"\nwrote {out / 'demo.json'}" + (f" and {png}" if png else ""))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    registry = default_registry()
    print("architectures:")
    for name, spec in registry.architectures.items():
        owner = registry.architecture_owner(name)
        print(f"  {name:<16} {spec.description}  [plugin {owner}]")
    print("policies:")
    for kind, (config, _) in registry.policy_kinds.items():
        fields = ", ".join(f for f in config.model_fields if f != "kind") or "-"
        print(f"  {kind:<16} options: {fields}")
    print("workloads:")
    for name, workload in registry.workloads.items():
        print(f"  {name:<16} {workload.description}")
    print("models:")
    print("  " + ", ".join(registry.model_names))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blockdance", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="registered architectures, policies, workloads, models")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("demo", help="baseline against BlockDance N=2,3,4 on a workload")
    p.add_argument("--workload", default=DEFAULT_WORKLOAD, help="registered workload name")
    p.add_argument("--seeds", type=int, default=16, help="number of samples (seeds 0..n-1)")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
