"""The comparison bench: many policy configurations, one workload, one seed set.

A bench file (JSON or YAML) names the workload, the seeds and the policies::

    workload: dit-tiny-shapes
    seeds: 64
    steps: 50
    repeats: 1
    policies:
      - {kind: blockdance, N: 2}
      - {kind: fora, N: 2, label: "FORA N=2"}
      - deepcache
      - {kind: "diffusers:first-block-cache", threshold: 0.05}

Kinds starting with ``diffusers:`` are diffusers' own caches, run as external baselines on
the same pipeline and seeds (:mod:`blockdance_lab.external`). The baseline (policy ``none``)
always runs first and is the reference for SSIM, PSNR and latency reduction. Under
``torchrun`` the seeds are sharded over the ranks and rank 0 reports on all of them (see
:mod:`blockdance_lab._distributed`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from blockdance import PolicyLike, Registry, default_registry
from blockdance_lab._distributed import DistContext, gather_runs, shard
from blockdance_lab.compare import PolicyRun, compare_policies
from blockdance_lab.policy_entries import check_policies, labelled
from blockdance_lab.report import add_consistency_metrics, add_quality_metrics, load_pyplot
from blockdance_lab.workload import DEFAULT_WORKLOAD, get_workload

__all__ = ["BenchSpec", "load_bench_spec", "pareto_front", "result_rows", "run_bench"]

BASELINE_LABEL = "baseline"


class BenchSpec(BaseModel):
    """What a bench runs.

    Args:
        workload: Registered workload name.
        seeds: Number of samples (seeds ``0 .. seeds-1``).
        steps: Denoising steps (default: the workload's).
        repeats: Timed repeats per policy, interleaved; latency is their median.
        policies: Each a kind name, a JSON file, or a mapping with ``kind``, its options
            and an optional ``label``; ``diffusers:...`` kinds are external caches.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    workload: str = DEFAULT_WORKLOAD
    seeds: int = Field(64, ge=1)
    steps: int | None = Field(None, ge=1)
    repeats: int = Field(1, ge=1)
    policies: tuple[str | dict[str, Any], ...] = Field(min_length=1)

    @field_validator("policies")
    @classmethod
    def _entries_have_kinds(
        cls, value: tuple[str | dict[str, Any], ...]
    ) -> tuple[str | dict[str, Any], ...]:
        for entry in value:
            if isinstance(entry, dict) and "kind" not in entry:
                raise ValueError(f"policy entry {entry!r} has no 'kind'")
        return value

    def labelled(self) -> list[tuple[str, PolicyLike]]:
        """``(label, policy)`` pairs, baseline first; labels are unique."""
        pairs = [(BASELINE_LABEL, "none"), *labelled(self.policies)]
        labels = [label for label, _ in pairs]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"duplicate policy labels {duplicates}; give entries a 'label'")
        return pairs


def load_bench_spec(path: str | Path, **overrides: Any) -> BenchSpec:
    """Read a bench file (``.json``, ``.yaml`` or ``.yml``).

    Args:
        path: The file.
        **overrides: Fields that replace the file's (None values are ignored).
    """
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped,unused-ignore]
        except ImportError as err:
            raise ImportError(
                f"{path} is YAML: install PyYAML (pip install pyyaml) or write it as JSON"
            ) from err
        data = yaml.safe_load(text)
    elif path.suffix == ".json":
        data = json.loads(text)
    else:
        raise ValueError(f"{path}: a bench file is .json, .yaml or .yml")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping with 'policies', got {type(data).__name__}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return BenchSpec.model_validate(data)


def run_bench(
    spec: BenchSpec,
    *,
    registry: Registry | None = None,
    progress: bool = True,
    ctx: DistContext | None = None,
) -> list[PolicyRun] | None:
    """Run every policy of ``spec`` on its workload and compute the metrics.

    Args:
        spec: What to run.
        registry: Where workloads and policies are looked up.
        progress: Progress bars over each generation's steps.
        ctx: Distributed context; each rank runs its shard of the seeds.

    Returns:
        The runs with their metrics (baseline first); None on ranks other than 0.
    """
    registry = registry or default_registry()
    ctx = ctx or DistContext()
    workload = get_workload(spec.workload, registry)
    pairs = spec.labelled()
    check_policies(registry, pairs[1:])  # fail on a bad config before any generation runs
    seeds = list(range(spec.seeds))
    if len(seeds) < ctx.world_size:
        raise ValueError(f"{len(seeds)} seeds cannot be shared by {ctx.world_size} ranks")
    local = compare_policies(
        workload,
        pairs,
        seeds=shard(seeds, ctx),
        num_steps=spec.steps,
        repeats=spec.repeats,
        progress=progress and ctx.is_main,
        registry=registry,
    )
    runs = gather_runs(local, seeds, ctx)
    if runs is None:
        return None
    add_consistency_metrics(runs)
    add_quality_metrics(runs, workload, seeds)
    return runs


def result_rows(runs: Sequence[PolicyRun]) -> list[dict[str, Any]]:
    """One flat record per run: latency, reductions, cache bytes and quality metrics."""
    rows = []
    for run in runs:
        m = dict(run.metrics)
        ideal = m.get("ideal", 0.0)
        rows.append(
            {
                "policy": run.label,
                "latency_s": run.latency,
                "reduction": m.get("reduction"),
                "ideal": ideal,
                "of_ideal": m["reduction"] / ideal if ideal > 0 else None,
                "cache_bytes": None if run.external else run.stats.peak_cache_bytes,
                "ssim": m.get("ssim"),
                "psnr": m.get("psnr"),
                "fd_probe": m.get("fd_probe"),
                "accuracy": m.get("accuracy"),
                "latencies_s": list(run.latencies),
            }
        )
    return rows


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (larger is better)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 >= x and y2 >= y) and (x2 > x or y2 > y)
            for j, (x2, y2) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def write_results(runs: Sequence[PolicyRun], out: Path, title: str = "") -> list[Path]:
    """Write ``bench.json``, ``bench.csv`` and ``pareto.png`` (when matplotlib is there)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = result_rows(runs)
    written = [out / "bench.json", out / "bench.csv"]
    (out / "bench.json").write_text(json.dumps(rows, indent=1))
    with (out / "bench.csv").open("w", newline="") as f:
        fields = [k for k in rows[0] if k != "latencies_s"]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plot = save_pareto_plot(rows, out / "pareto.png", title)
    return written + ([plot] if plot else [])


def save_pareto_plot(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Latency reduction against SSIM to the baseline, one point per configuration."""
    plt = load_pyplot()
    if plt is None:
        return None
    points = [(float(r["reduction"]), float(r["ssim"])) for r in rows]
    front = set(pareto_front(points))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, (row, (x, y)) in enumerate(zip(rows, points, strict=True)):
        on_front = i in front
        ax.scatter(x, y, s=36, color="tab:green" if on_front else "tab:gray", zorder=3)
        ax.annotate(row["policy"], (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ordered = sorted((points[i] for i in front), key=lambda p: p[0])
    ax.plot(*zip(*ordered, strict=True), color="tab:green", lw=1, alpha=0.6, label="Pareto front")
    ax.set_xlabel("latency reduction (1 - t / t_baseline)")
    ax.set_ylabel("SSIM to the baseline")
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title or "policies: speed against consistency", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
