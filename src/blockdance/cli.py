"""Command line: ``blockdance list`` and ``blockdance demo``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from blockdance._attach import PolicyLike
from blockdance._manager import default_registry
from blockdance.compare import PolicyRun, compare_policies
from blockdance.evaluation.metrics import class_accuracy, frechet_distance, psnr, ssim
from blockdance.workload import Workload

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


def add_quality_metrics(
    runs: Sequence[PolicyRun], workload: Workload, seeds: Sequence[int], reference_size: int = 1024
) -> None:
    """FD-probe against real samples and class accuracy, when the workload has a probe."""
    if workload.probe is None:
        return
    probe = workload.probe()
    real = probe.features(probe.reference(max(reference_size, len(seeds))))
    labels = probe.labels(seeds)
    for run in runs:
        x = run.samples.clamp(-1, 1)
        run.metrics["fd_probe"] = frechet_distance(probe.features(x), real)
        run.metrics["accuracy"] = class_accuracy(probe.logits(x), labels)


COLUMNS = [
    # (metric key, header, format)
    ("latency", "latency s", "{:.3f}"),
    ("reduction", "reduction", "{:.1%}"),
    ("ideal", "ideal", "{:.1%}"),
    ("of_ideal", "of ideal", "{:.0%}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("psnr", "PSNR dB", "{:.2f}"),
    ("fd_probe", "FD-probe", "{:.2f}"),
    ("accuracy", "accuracy", "{:.3f}"),
    ("cache_mib", "cache MiB", "{:.2f}"),
]


def format_table(runs: Sequence[PolicyRun]) -> str:
    """The demo's table as aligned text (columns without values are left out)."""
    rows = []
    for run in runs:
        m = dict(run.metrics, latency=run.latency, cache_mib=run.stats.peak_cache_bytes / 2**20)
        if m.get("ideal", 0) > 0:
            m["of_ideal"] = m["reduction"] / m["ideal"]
        rows.append((run.label, m))
    cols = [c for c in COLUMNS if any(c[0] in m for _, m in rows)]
    widths = [max(len(h), 8) + 2 for _, h, _ in cols]
    header = f"{'policy':<18}" + "".join(f"{h:>{w}}" for (_, h, _), w in zip(cols, widths))
    lines = [header, "-" * len(header)]
    for label, m in rows:
        cells = [fmt.format(m[k]) if k in m else "-" for k, _, fmt in cols]
        lines.append(f"{label:<18}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    return "\n".join(lines)


def save_sample_grid(runs: Sequence[PolicyRun], path: Path, count: int = 8) -> Path | None:
    """A PNG with one row per policy and the same seeds in each column."""
    plt = _pyplot()
    if plt is None:
        return None
    count = min(count, runs[0].samples.shape[0])
    fig, axes = plt.subplots(
        len(runs), count, figsize=(1.1 * count + 1.2, 1.15 * len(runs)), squeeze=False
    )
    for row, run in zip(axes, runs):
        for col, ax in enumerate(row):
            img = _frames(run.samples[col : col + 1])[0]  # first frame of a video
            ax.imshow(
                ((img.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).float().numpy(),
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(run.label, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle("same seeds, same noise: baseline and reuse policies", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping pictures (pip install blockdance[plot])")
        return None
    return plt


def save_reuse_maps(runs: Sequence[PolicyRun], path: Path) -> Path | None:
    """A PNG of each run's (step, block) map: computed vs reused."""
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, len(runs), figsize=(2.2 * len(runs), 4), squeeze=False)
    for ax, run in zip(axes[0], runs):
        grid = torch.tensor(run.stats.reuse_map(), dtype=torch.float32).numpy()
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
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores - 0.5:
        print(
            f"warning: the machine is busy (load {load:.1f} on {cores} cores): latencies will "
            "be noisy; try --threads 1 or run when it is idle"
        )
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
    add_quality_metrics(runs, workload, list(range(args.seeds)))
    print()
    print(format_table(runs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [
        {"policy": r.label, "latency_s": r.latency, **r.metrics, "stats": r.stats.to_dict()}
        for r in runs
    ]
    written: list[Path | None] = [out / "demo.json"]
    (out / "demo.json").write_text(json.dumps(rows, indent=1))
    written.append(save_reuse_maps(runs, out / "reuse_map.png"))
    if workload.images:
        written.append(save_sample_grid(runs, out / "samples.png"))
    print("\nwrote " + ", ".join(str(p) for p in written if p is not None))
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
    from blockdance.analysis.cli import add_commands

    add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
