"""The comparison bench: many policy configurations, one workload, one seed set.

A bench file (JSON or YAML) names the workload, the seeds and the policies::

    workload: dit-tiny-shapes
    seeds: 64
    seed_offset: 0     # seeds seed_offset .. seed_offset+seeds-1 (held-out seeds: e.g. 1000)
    steps: 50
    repeats: 1
    reference: blockdance N=2   # the row paired differences are taken against
    policies:
      - {kind: blockdance, N: 2}
      - {kind: fora, N: 2, label: "FORA N=2"}
      - deepcache
      - {kind: "diffusers:first-block-cache", threshold: 0.05}
      - {kind: blockdance, sweep: {N: [3, 4]}}   # one row per value: N=3, N=4

A list of step counts (``steps: [20, 30, 50]``) sweeps the steps: the whole bench (baseline
and rows) runs once per step count, and each step count's rows are compared with its own
baseline. Inside a policy entry, ``sweep:`` maps option names to lists of values and
expands the entry into one row per value (per combination, for several options); a plain
list given to an option is always that option's value, never a sweep
(:func:`expand_policy_sweeps`).

Kinds starting with ``diffusers:`` are diffusers' own caches, run as external baselines on
the same pipeline and seeds (:mod:`blockdance_lab.external`). The baseline (policy ``none``)
always runs first and is the reference for SSIM, PSNR and latency reduction. Every metric
with one value per seed is reported as a mean with a bootstrap interval over the seeds and
as a paired difference to a reference row (:mod:`blockdance_lab.statistics`). Under
``torchrun`` the seeds are sharded over the ranks and rank 0 reports on all of them (see
:mod:`blockdance_lab._distributed`).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import itertools
import json
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from blockdance import PolicyLike, Registry, default_registry, file_options
from blockdance.errors import InvalidInputError
from blockdance_lab._distributed import DistContext, gather_runs, shard
from blockdance_lab.compare import PolicyRun, attached, compare_policies
from blockdance_lab.external import is_external, join_relative, parse_external, resolve_paths
from blockdance_lab.policy_entries import labelled
from blockdance_lab.report import (
    add_consistency_metrics,
    add_quality_metrics,
    load_pyplot,
    place_labels,
    save_reuse_maps,
)
from blockdance_lab.statistics import (
    BOOTSTRAP_SEED,
    RESAMPLES,
    bootstrap_mean,
    paired_difference,
)
from blockdance_lab.workload import DEFAULT_WORKLOAD, Workload, get_workload

__all__ = [
    "BenchResult",
    "BenchSpec",
    "SweptRun",
    "check_begin",
    "check_rows",
    "expand_policy_sweeps",
    "format_bench_table",
    "load_bench_spec",
    "pareto_figure",
    "pareto_front",
    "result_rows",
    "run_bench",
    "sweep_figure",
    "write_results",
]

BASELINE_LABEL = "baseline"

#: Per-seed metrics -> the name of their summary in the rows (``correct`` averages to the
#: accuracy). ``temporal`` and ``temporal_change`` are on video workloads only
#: (:func:`blockdance_lab.report.add_consistency_metrics`).
PER_SEED_SUMMARY = {
    "ssim": "ssim",
    "psnr": "psnr",
    "temporal": "temporal",
    "temporal_change": "temporal_change",
    "correct": "accuracy",
    "class_logit": "logit",
}

#: The key of a policy entry that sweeps options: ``{kind: blockdance, sweep: {N: [2, 3]}}``.
SWEEP_KEY = "sweep"


def _value_text(value: Any) -> str:
    """A swept value as a label shows it (lists and tuples alike as ``[a, b]``)."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    return str(value)


def expand_policy_sweeps(
    entries: Sequence[str | Mapping[str, Any]],
) -> list[str | dict[str, Any]]:
    """Expand the policy entries that hold a ``sweep`` into one entry per swept value.

    ``{kind: blockdance, sweep: {N: [2, 3, 4]}}`` becomes three entries, ``N`` 2, 3 and 4,
    labelled by :func:`labelled` as ``blockdance N=2`` and so on. Several swept options
    give every combination, in the order written (the last option varies fastest). The
    swept options take the place of ``sweep`` in the entry, so labels list the options in
    the order written. An entry with a ``label`` keeps it, followed by the swept values
    (``label: BD`` gives ``BD N=2``).

    Only ``sweep`` sweeps: a list given to an option directly (``window: [0.25, 0.95]``)
    is that option's value. To sweep an option whose value is itself a list, give a list
    of lists (``sweep: {window: [[0.25, 0.95], [0.4, 0.95]]}``).

    Raises:
        ValueError: A ``sweep`` that is not a mapping of option names to non-empty lists,
            sweeps ``kind`` or ``label``, or names an option the entry also sets.
    """
    out: list[Any] = []
    for position, entry in enumerate(entries, start=1):
        if not isinstance(entry, Mapping) or SWEEP_KEY not in entry:
            out.append(entry)  # anything else is left for the spec's own validation
            continue
        where = f"policy entry {position} ({dict(entry)!r})"
        sweep = entry[SWEEP_KEY]
        if not isinstance(sweep, Mapping) or not sweep:
            raise ValueError(
                f"{where}: 'sweep' maps option names to lists of values, e.g. "
                "sweep: {N: [2, 3, 4]}"
            )
        for name, values in sweep.items():
            if name in ("kind", "label"):
                raise ValueError(f"{where}: {name!r} cannot be swept; write one entry per {name}")
            if name in entry:
                raise ValueError(
                    f"{where}: {name!r} is both set and swept; remove it from the entry or "
                    "from 'sweep'"
                )
            if not isinstance(values, list | tuple) or not values:
                raise ValueError(
                    f"{where}: sweep {name!r} takes a non-empty list of values, got "
                    f"{values!r} (e.g. sweep: {{{name}: [2, 3]}})"
                )
        names = list(sweep)
        for combination in itertools.product(*(sweep[name] for name in names)):
            swept = dict(zip(names, combination))
            expanded: dict[str, Any] = {}
            for key, value in entry.items():
                if key == SWEEP_KEY:
                    expanded.update(swept)
                elif key != "label":
                    expanded[key] = value
            if entry.get("label"):
                values_text = ", ".join(f"{k}={_value_text(v)}" for k, v in swept.items())
                expanded["label"] = f"{entry['label']} {values_text}"
            out.append(expanded)
    return out


def _list_hint(policy: PolicyLike, err: ValidationError) -> str:
    """A hint when an option got a list its type does not take (a sweep written plainly)."""
    if not isinstance(policy, Mapping):
        return ""
    names = sorted(
        {
            str(e["loc"][0])
            for e in err.errors()
            if e["loc"]
            and isinstance(policy.get(str(e["loc"][0])), list | tuple)
            and e["type"].endswith("_type")
            and e["type"] not in ("list_type", "tuple_type")
        }
    )
    if not names:
        return ""
    example = ", ".join(f"{n}: {_value_text(policy[n])}" for n in names)
    return f" (a list is an option's value, not a sweep; to sweep, write sweep: {{{example}}})"


def check_rows(registry: Registry, pairs: Sequence[tuple[str, PolicyLike]]) -> None:
    """Validate each row's configuration through its policy's config model, so a bad name,
    option or value fails before anything runs.

    Raises:
        ValidationError: An option is invalid; pydantic's field errors, titled with the
            row's label (and a hint when a list was given where a sweep was meant).
        UnknownPolicyError: A kind is not registered.
    """
    for label, policy in pairs:
        try:
            if is_external(policy):
                parse_external(policy)  # type: ignore[arg-type]
            else:
                registry.make_policy(policy)
        except ValidationError as err:
            title = f"bench row {label!r}{_list_hint(policy, err)}"
            raise ValidationError.from_exception_data(
                title,
                err.errors(include_url=False),  # type: ignore[arg-type]
            ) from err


class BenchSpec(BaseModel):
    """What a bench runs.

    Args:
        workload: Registered workload name.
        seeds: Number of samples.
        seed_offset: First seed: the bench runs seeds ``seed_offset .. seed_offset+seeds-1``
            (an offset gives held-out seeds, e.g. to check a calibration).
        steps: Denoising steps (default: the workload's); a list of step counts sweeps
            them: the whole bench runs once per step count, each with its own baseline.
        repeats: Timed repeats per policy, interleaved; latency is their median.
        reference: Label of the row paired differences are taken against (default: the
            first row after the baseline).
        policies: Each a kind name, a JSON file, or a mapping with ``kind``, its options
            and an optional ``label``; ``diffusers:...`` kinds are external caches. A
            mapping's ``sweep: {option: [values]}`` is expanded on validation into one
            entry per value (:func:`expand_policy_sweeps`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    workload: str = DEFAULT_WORKLOAD
    seeds: int = Field(64, ge=1)
    seed_offset: int = Field(0, ge=0)
    steps: int | tuple[int, ...] | None = None
    repeats: int = Field(1, ge=1)
    reference: str | None = None
    policies: tuple[str | dict[str, Any], ...] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _steps_positive(cls, value: int | tuple[int, ...] | None) -> int | tuple[int, ...] | None:
        counts = value if isinstance(value, tuple) else () if value is None else (value,)
        if isinstance(value, tuple) and not value:
            raise ValueError("a step sweep needs at least one step count, e.g. [20, 30, 50]")
        if any(n < 1 for n in counts):
            raise ValueError(f"step counts must be at least 1, got {value}")
        if len(set(counts)) != len(counts):
            raise ValueError(f"step counts repeat in {list(counts)}; give each once")
        return value

    @field_validator("policies", mode="before")
    @classmethod
    def _expand_sweeps(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return expand_policy_sweeps(value)
        return value

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

    def seed_list(self) -> list[int]:
        """The seeds, in the order results are reported."""
        return list(range(self.seed_offset, self.seed_offset + self.seeds))

    def reference_label(self) -> str:
        """The row paired differences are taken against.

        Raises:
            ValueError: ``reference`` names no row.
        """
        labels = [label for label, _ in self.labelled()]
        if self.reference is None:
            return labels[1]
        if self.reference not in labels:
            raise ValueError(f"reference {self.reference!r} is not a row; the rows are {labels}")
        return self.reference

    @property
    def swept_steps(self) -> bool:
        """Whether ``steps`` is a list of step counts (a step sweep)."""
        return isinstance(self.steps, tuple)

    def step_counts(self, default: int) -> list[int]:
        """The step counts the bench runs: the swept ones, the one given, or ``default``."""
        if isinstance(self.steps, tuple):
            return list(self.steps)
        return [self.steps or default]


def _is_path(entry: str) -> bool:
    return entry.endswith(".json") or "/" in entry or "\\" in entry


def _resolve_native_paths(entry: Any, folder: Path) -> Any:
    """A bench-file entry with the relative file options of a registered policy joined to
    ``folder``: its options typed ``Path`` or marked ``blockdance.FILE_OPTION`` (e.g.
    ``magcache``'s ``mag_ratios``, ``blockdance-ada``'s ``weights``), for a third-party
    policy as for a built-in one. An unknown kind is left for validation to name."""
    if not isinstance(entry, Mapping):
        return entry
    found = default_registry().policy_kinds.get(str(entry.get("kind")))
    return join_relative(entry, file_options(found[0]) if found else (), folder)


def load_bench_spec(path: str | Path, **overrides: Any) -> BenchSpec:
    """Read a bench file (``.json``, ``.yaml`` or ``.yml``).

    A policy entry that is a file path (it ends in ``.json`` or holds a separator), an
    external cache's file option (diffusers MagCache's ``ratios``) and a registered policy's
    file options (``blockdance.file_options``: ``magcache``'s ``mag_ratios``,
    ``blockdance-ada``'s ``weights``) are read relative to the bench file's folder, not the
    working directory.

    Args:
        path: The file.
        **overrides: Fields that replace the file's (None values are ignored); policies
            given here are taken as they are (relative to the working directory).
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
    if isinstance(data.get("policies"), list):
        data["policies"] = [
            str(path.parent / p)
            if isinstance(p, str) and _is_path(p)
            else _resolve_native_paths(resolve_paths(p, path.parent), path.parent)
            for p in data["policies"]
        ]
    data.update({k: v for k, v in overrides.items() if v is not None})
    return BenchSpec.model_validate(data)


@dataclass
class BenchResult:
    """What :func:`run_bench` measured.

    Args:
        runs: One run per row, baseline first; failed rows carry their error. In a step
            sweep, every step count's rows in turn, each its baseline first, as
            :class:`SweptRun` objects that record their step count.
        meta: What ran: workload, seeds, steps (a list in a step sweep), scheduler,
            repeats, each row's validated configuration, package versions, date and
            command line.
        reference: Label of the row paired differences are taken against (in a step
            sweep, the row of that label at the same step count).
    """

    runs: list[PolicyRun]
    meta: dict[str, Any]
    reference: str


@dataclass
class SweptRun(PolicyRun):
    """A row of a step sweep: a :class:`PolicyRun` at one of the swept step counts.

    Args:
        steps: The step count it ran at; its SSIM, PSNR and latency reduction are against
            the baseline of the same step count.
    """

    steps: int = 0

    @classmethod
    def of(cls, run: PolicyRun, steps: int) -> SweptRun:
        """``run``, recording that it ran at ``steps`` steps."""
        fields = {f.name: getattr(run, f.name) for f in dataclasses.fields(PolicyRun)}
        return cls(**fields, steps=steps)


def _steps_of(run: PolicyRun) -> int | None:
    """The step count of a step sweep's row; None outside a step sweep."""
    return run.steps if isinstance(run, SweptRun) else None


def check_begin(
    workload: Workload,
    target: Any,
    pairs: Sequence[tuple[str, PolicyLike]],
    num_steps: int,
    registry: Registry,
) -> None:
    """Attach each row's policy to ``target`` and begin and end a generation without running
    the model, so a policy that cannot start on this model fails before any generation.
    External caches (diffusers, cache-dit) are not checked here: one that cannot hook the
    model is reported as its row's failure and the bench goes on, as when one fails later.

    Raises:
        InvalidInputError: A row cannot begin; the message names the row and the cause.
    """
    for label, policy in pairs:
        if is_external(policy):
            continue  # a peer that cannot hook this model becomes its FAILED row, as at run time
        try:
            with attached(target, policy, registry, num_steps) as h, h.generation(num_steps):
                pass
        except Exception as err:
            message = " ".join(str(err).split())
            raise InvalidInputError(
                f"policy {label!r} cannot begin a generation on workload {workload.name!r} "
                f"({num_steps} steps); nothing has run: {type(err).__name__}: {message}"
            ) from err


def _config_of(policy: PolicyLike, registry: Registry) -> dict[str, Any]:
    """A row's validated configuration, as JSON-ready data."""
    if is_external(policy):
        return parse_external(policy).model_dump(mode="json")  # type: ignore[arg-type]
    return registry.make_policy(policy).config.model_dump(mode="json")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def bench_metadata(
    spec: BenchSpec, workload: Workload, registry: Registry, ctx: DistContext
) -> dict[str, Any]:
    """What a bench ran, for ``bench.json`` (``steps`` is a list in a step sweep)."""
    counts = spec.step_counts(workload.num_steps)
    return {
        "workload": workload.name,
        "description": workload.description,
        "seeds": spec.seed_list(),
        "seed_offset": spec.seed_offset,
        "steps": counts if spec.swept_steps else counts[0],
        "scheduler": workload.scheduler,
        "repeats": spec.repeats,
        "reference": spec.reference_label(),
        "configs": {label: _config_of(p, registry) for label, p in spec.labelled()},
        "bootstrap": {"level": 0.95, "resamples": RESAMPLES, "seed": BOOTSTRAP_SEED},
        "versions": {p: _version(p) for p in ("blockdance", "torch", "diffusers")},
        "torch_threads": torch.get_num_threads(),
        "ranks": ctx.world_size,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(sys.argv),
    }


def run_bench(
    spec: BenchSpec,
    *,
    registry: Registry | None = None,
    progress: bool = True,
    ctx: DistContext | None = None,
) -> BenchResult | None:
    """Run every policy of ``spec`` on its workload and compute the metrics.

    Every configuration is validated (:func:`check_rows`), then attached to the workload's
    model and its generation begun (:func:`check_begin`) at every step count, before the
    first generation. A row that fails later is recorded as failed and the other rows still
    run.

    In a step sweep (``spec.steps`` a list) the whole bench, baseline and rows, runs once
    per step count, in the order given; each step count's metrics are against its own
    baseline, and its runs are :class:`SweptRun` objects.

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
    reference = spec.reference_label()
    check_rows(registry, pairs[1:])  # fail on a bad config before any generation runs
    seeds = spec.seed_list()
    if len(seeds) < ctx.world_size:
        raise ValueError(f"{len(seeds)} seeds cannot be shared by {ctx.world_size} ranks")
    step_counts = spec.step_counts(workload.num_steps)
    target = workload.build()
    for steps in step_counts:
        check_begin(workload, target, pairs, steps, registry)
    meta = bench_metadata(spec, workload, registry, ctx)
    results: list[PolicyRun] = []
    for steps in step_counts:
        if spec.swept_steps and progress and ctx.is_main:
            print(f"-- {steps} steps --", flush=True)
        local = compare_policies(
            workload,
            pairs,
            seeds=shard(seeds, ctx),
            num_steps=steps,
            repeats=spec.repeats,
            progress=progress and ctx.is_main,
            registry=registry,
            target=target,
            keep_going=True,
        )
        runs = gather_runs(local, seeds, ctx)
        if runs is None:
            continue  # another rank gathers; this one still runs every step count
        add_consistency_metrics(runs)
        add_quality_metrics(runs, workload, seeds)
        results += [SweptRun.of(r, steps) for r in runs] if spec.swept_steps else runs
    if not ctx.is_main:
        return None
    return BenchResult(results, meta, reference)


def _summaries(run: PolicyRun, ref: PolicyRun | None) -> dict[str, float | None]:
    """Bootstrap interval of each per-seed metric, and the paired difference to ``ref``."""
    out: dict[str, float | None] = {}
    for key, name in PER_SEED_SUMMARY.items():
        values = run.per_seed.get(key)
        if values is None:
            continue
        est = bootstrap_mean(values)
        out[name] = est.mean
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = est.low, est.high
        ref_values = ref.per_seed.get(key) if ref is not None else None
        if ref_values is None:
            out[f"{name}_diff"] = out[f"{name}_diff_ci_low"] = out[f"{name}_diff_ci_high"] = None
            continue
        diff = paired_difference(values, ref_values)
        out[f"{name}_diff"] = diff.mean
        out[f"{name}_diff_ci_low"], out[f"{name}_diff_ci_high"] = diff.low, diff.high
    return out


def result_rows(runs: Sequence[PolicyRun], reference: str | None = None) -> list[dict[str, Any]]:
    """One flat record per run: status, latency, reductions, cache bytes, quality metrics
    with their bootstrap intervals and paired differences to ``reference`` (default: the
    second run), and the per-seed values (``per_seed``) and repeat latencies.

    The runs of a step sweep (:class:`SweptRun`) also record their ``steps``, and each is
    paired with the reference row of its own step count."""
    reference = reference or (runs[1].label if len(runs) > 1 else runs[0].label)
    refs = {
        _steps_of(r): r for r in runs if r.label == reference and r.error is None
    }  # one reference per step count
    rows = []
    for run in runs:
        m = dict(run.metrics)
        ideal = m.get("ideal")
        reduction = m.get("reduction")
        steps = _steps_of(run)
        row: dict[str, Any] = {"policy": run.label, **({} if steps is None else {"steps": steps})}
        row |= {
            "status": "failed" if run.error else "ok",
            "error": run.error,
            "latency_s": run.latency if run.latencies else None,
            "reduction": reduction,
            "ideal": ideal,
            "of_ideal": reduction / ideal if ideal and reduction is not None else None,
            "cache_bytes": None if run.external or run.error else run.stats.peak_cache_bytes,
            "ssim": m.get("ssim"),
            "psnr": m.get("psnr"),
            "fd_probe": m.get("fd_probe"),
            "accuracy": m.get("accuracy"),
        }
        row.update(_summaries(run, refs.get(steps)))
        row["latencies_s"] = list(run.latencies)
        row["per_seed"] = dict(run.per_seed)
        rows.append(row)
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


def _cell(row: dict[str, Any], key: str, fmt: str, interval: bool = True) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    text = fmt.format(value)
    low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    if interval and low is not None and high is not None:
        text += f" [{fmt.format(low)}, {fmt.format(high)}]"
    return text


def _signed_interval_cell(row: dict[str, Any], key: str, fmt: str) -> str:
    """``key`` with its interval (``key_ci_low``, ``key_ci_high``), ``~`` where the interval
    crosses zero; ``-`` when any of the three is missing."""
    value, low, high = (row.get(f"{key}{s}") for s in ("", "_ci_low", "_ci_high"))
    if value is None or low is None or high is None:
        return "-"
    mark = " ~" if low <= 0.0 <= high else "  "
    return f"{fmt.format(value)} [{fmt.format(low)}, {fmt.format(high)}]{mark}"


def _diff_cell(row: dict[str, Any], name: str, fmt: str, reference: str) -> str:
    if row["policy"] == reference:
        return "(reference)"
    return _signed_interval_cell(row, f"{name}_diff", fmt)


def _change_cell(row: dict[str, Any], name: str, fmt: str) -> str:
    """A per-seed change to the baseline (``temporal_change``) with its interval;
    ``(baseline)`` on the baseline's own row."""
    if row["policy"] == BASELINE_LABEL:
        return "(baseline)"
    return _signed_interval_cell(row, name, fmt)


def format_bench_table(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The bench's table: means with 95% intervals, paired differences to the reference
    (``~`` where the interval crosses zero), and a footer saying what the numbers rest on.

    A step sweep's rows (they have ``steps``) get one table per step count, with the
    columns aligned across them. A video workload's rows (they have ``temporal``) add the
    temporal consistency and its change to the baseline, seed by seed."""
    reference = meta["reference"]
    seeds = meta["seeds"]
    probe = any(r.get("fd_probe") is not None for r in rows)
    video = any(r.get("temporal") is not None for r in rows)
    cols: list[tuple[str, Any]] = [
        ("reduction", lambda r: _cell(r, "reduction", "{:.1%}")),
        ("ideal", lambda r: _cell(r, "ideal", "{:.1%}")),
        ("SSIM [95% CI]", lambda r: _cell(r, "ssim", "{:.4f}")),
        ("ΔSSIM [95% CI]", lambda r: _diff_cell(r, "ssim", "{:+.4f}", reference)),
        ("PSNR dB", lambda r: _cell(r, "psnr", "{:.2f}", interval=False)),
        ("ΔPSNR [95% CI]", lambda r: _diff_cell(r, "psnr", "{:+.2f}", reference)),
    ]
    if video:
        cols += [
            ("temporal [95% CI]", lambda r: _cell(r, "temporal", "{:.4f}")),
            ("Δtemporal/base [95% CI]", lambda r: _change_cell(r, "temporal_change", "{:+.2%}")),
        ]
    if probe:
        cols += [
            ("FD-probe", lambda r: _cell(r, "fd_probe", "{:.2f}")),
            ("accuracy [95% CI]", lambda r: _cell(r, "accuracy", "{:.3f}")),
            ("Δacc [95% CI]", lambda r: _diff_cell(r, "accuracy", "{:+.3f}", reference)),
        ]
    cols.append(
        (
            "cache MiB",
            lambda r: "-" if r["cache_bytes"] is None else f"{r['cache_bytes'] / 2**20:.2f}",
        )
    )
    width = max(18, *(len(r["policy"]) + 2 for r in rows))
    cells = [[fn(r) for _, fn in cols] for r in rows]
    widths = [
        max(len(h), *(len(c[i]) for c, r in zip(cells, rows) if r["status"] == "ok")) + 2
        for i, (h, _) in enumerate(cols)
    ]
    header = f"{'policy':<{width}}" + "".join(f"{h:>{w}}" for (h, _), w in zip(cols, widths))
    sections = list(dict.fromkeys(row.get("steps") for row in rows))
    lines: list[str] = []
    for steps in sections:
        if steps is not None:
            lines += [""] * bool(lines) + [f"{steps} {meta['scheduler']} steps"]
        lines += [header, "-" * len(header)]
        for row, cell in zip(rows, cells):
            if row.get("steps") != steps:
                continue
            if row["status"] != "ok":
                lines.append(f"{row['policy']:<{width}}  FAILED: {row['error']}")
                continue
            lines.append(
                f"{row['policy']:<{width}}" + "".join(f"{c:>{w}}" for c, w in zip(cell, widths))
            )
    n = len(seeds)
    if isinstance(meta["steps"], list):
        steps_text = (
            f"{'/'.join(map(str, meta['steps']))} {meta['scheduler']} steps (a step sweep: each "
            "step count ran with its own baseline, and its SSIM, PSNR, reduction and Δ are "
            "against that step count's rows)"
        )
    else:
        steps_text = f"{meta['steps']} {meta['scheduler']} steps"
    lines += [
        "",
        f"{n} seeds ({seeds[0]}..{seeds[-1]}), {steps_text}, "
        f"{meta['repeats']} repeat(s). Means with 95% percentile-bootstrap intervals over the "
        f"seeds ({meta['bootstrap']['resamples']} resamples, fixed seed).",
        f"Δ: paired difference to {reference!r}, seed by seed (row - reference). "
        "~ : its 95% interval crosses zero, so on these seeds the row cannot be told apart "
        "from the reference.",
        "ideal: share of block calls skipped (exact). reduction: measured wall time against "
        "the baseline; on a busy or shared machine it is noisy, so compare rows by ideal.",
    ]
    if video:
        lines.append(
            "temporal: mean SSIM between adjacent frames of each video (its own smoothness). "
            "Δtemporal/base: seed by seed, the row's temporal over the baseline's, minus 1 "
            "(-2.00% is 2% less smooth than the baseline's video of the same seed)."
        )
    if probe:
        lines.append(
            f"FD-probe is one number for the whole set of {n} seeds, with no interval; at a "
            "few dozen seeds it cannot separate rows. accuracy's interval is a bootstrap over "
            "the seeds' correct/incorrect; it is wide at this many seeds."
        )
    return "\n".join(lines)


def write_results(result: BenchResult, out: Path, title: str = "") -> list[Path]:
    """Write ``bench.json`` (metadata and rows with per-seed values), ``bench.csv`` (one
    line per row), ``bench_seeds.csv`` (one line per row and seed), and, when matplotlib is
    there, ``pareto.png`` and ``reuse_maps.png``.

    A step sweep's rows record their ``steps`` in all three files, and ``sweep.png``
    (:func:`sweep_figure`) takes the place of ``pareto.png``: a Pareto front across step
    counts would compare SSIMs taken against different baselines."""
    out.mkdir(parents=True, exist_ok=True)
    rows = result_rows(result.runs, result.reference)
    swept = any("steps" in row for row in rows)
    (out / "bench.json").write_text(json.dumps({"meta": result.meta, "rows": rows}, indent=1))
    with (out / "bench.csv").open("w", newline="") as f:
        fields = [k for k in rows[0] if k not in ("latencies_s", "per_seed")]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    keys = list(dict.fromkeys(k for r in rows for k in r["per_seed"]))
    with (out / "bench_seeds.csv").open("w", newline="") as f:
        head = ["policy", "steps"] if swept else ["policy"]
        writer = csv.DictWriter(f, fieldnames=[*head, "seed", *keys])
        writer.writeheader()
        for row in rows:
            for i, seed in enumerate(result.meta["seeds"] if row["per_seed"] else []):
                values = {k: row["per_seed"][k][i] for k in keys if k in row["per_seed"]}
                writer.writerow({k: row[k] for k in head} | {"seed": seed, **values})
    written = [out / "bench.json", out / "bench.csv", out / "bench_seeds.csv"]
    maps = [r for r in result.runs if r.error is None and not r.external]
    if swept:
        plot = save_sweep_plot(rows, out / "sweep.png", title)
        maps = [dataclasses.replace(r, label=f"{r.label}, {_steps_of(r)} steps") for r in maps]
    else:
        plot = save_pareto_plot(rows, out / "pareto.png", title)
    reuse = save_reuse_maps(maps, out / "reuse_maps.png") if plot else None
    return written + [p for p in (plot, reuse) if p is not None]


def pareto_figure(rows: Sequence[dict[str, Any]], title: str = "") -> tuple[Any, list[list[Any]]]:
    """The Pareto figure: SSIM against the ideal saving (left, exact) and against the
    measured latency reduction (right, noisy), with 95% intervals on SSIM.

    Returns:
        The figure, and each panel's label annotations.
    """
    plt = load_pyplot()
    ok = [r for r in rows if r["status"] == "ok" and r.get("ssim") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    panels = [
        ("ideal", "ideal saving (share of block calls skipped; exact)"),
        ("reduction", "measured latency reduction (1 - t / t_baseline; noisy)"),
    ]
    plotted = []
    for ax, (key, xlabel) in zip(axes, panels):
        shown = [r for r in ok if r.get(key) is not None]
        points = [(float(r[key]), float(r["ssim"])) for r in shown]
        front = set(pareto_front(points))
        for i, (row, (x, y)) in enumerate(zip(shown, points)):
            low, high = row.get("ssim_ci_low"), row.get("ssim_ci_high")
            err = [[y - low], [high - y]] if low is not None and high is not None else None
            color = "tab:green" if i in front else "tab:gray"
            ax.errorbar(x, y, yerr=err, fmt="o", ms=5, color=color, capsize=2, zorder=3)
        if front:
            ordered = sorted((points[i] for i in front), key=lambda p: p[0])
            ax.plot(*zip(*ordered), color="tab:green", lw=1, alpha=0.6, label="Pareto front")
            ax.legend(fontsize=8, loc="lower left")
        missing = [r["policy"] for r in ok if r.get(key) is None]
        if missing:
            xlabel += f"\nnot shown (no {key}): {', '.join(missing)}"
        ax.set_xlabel(xlabel, fontsize=8)
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
        ax.grid(alpha=0.3)
        ax.margins(x=0.25, y=0.15)
        plotted.append((ax, points, [r["policy"] for r in shown]))
    axes[0].set_ylabel("SSIM to the baseline (95% CI over seeds)")
    fig.suptitle(title or "policies: saving against consistency", fontsize=10)
    return fig, _label_panels(fig, [(ax, pts, labels, None) for ax, pts, labels in plotted])


def _label_panels(
    fig: Any, panels: Sequence[tuple[Any, list[tuple[float, float]], list[str], list[str] | None]]
) -> list[list[Any]]:
    """Lay the figure out, freeze each panel's limits, then place its labels (they are
    measured against the final layout); each panel's annotations."""
    fig.tight_layout()
    annotations = []
    for ax, points, labels, colors in panels:
        ax.set_xlim(ax.get_xlim())
        ax.set_ylim(ax.get_ylim())
        annotations.append(place_labels(ax, points, labels, colors=colors))
    return annotations


def _save_figure(
    figure: Callable[[Sequence[dict[str, Any]], str], tuple[Any, Any]],
    rows: Sequence[dict[str, Any]],
    path: Path,
    title: str,
) -> Path | None:
    """Write ``figure(rows, title)`` to ``path``; None when matplotlib is not installed."""
    plt = load_pyplot()
    if plt is None:
        return None
    fig, _ = figure(rows, title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_pareto_plot(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Write :func:`pareto_figure` to ``path``; None when matplotlib is not installed."""
    return _save_figure(pareto_figure, rows, path, title)


#: Marker of each step count's series in ``sweep.png`` (cycled).
_SWEEP_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _common_prefix(labels: Sequence[str]) -> str:
    """The words that two or more distinct labels all start with (``"blockdance "`` for
    ``blockdance N=2`` and ``blockdance N=3``); empty for fewer than two labels."""
    distinct = list(dict.fromkeys(labels))
    if len(distinct) < 2:
        return ""
    words = [label.split(" ") for label in distinct]
    common = []
    for parts in zip(*words):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    if any(len(w) == len(common) for w in words):  # a label would be left empty
        common = common[:-1]
    return " ".join(common) + " " if common else ""


def sweep_figure(rows: Sequence[dict[str, Any]], title: str = "") -> tuple[Any, list[list[Any]]]:
    """The step sweep's figure: SSIM (with its 95% interval) against the ideal saving
    (left, exact) and against the measured latency reduction (right, noisy), one series per
    step count, its points joined in the order of the saving from its baseline at (0, 1).

    Args:
        rows: :func:`result_rows` of a step sweep (each row has ``steps``).
        title: The figure's title.

    The points are labelled in their series' colour with the row's label, less the words
    every row's label starts with (``N=2`` for ``blockdance N=2``), which the legend names.

    Returns:
        The figure, and each panel's label annotations.
    """
    plt = load_pyplot()
    ok = [r for r in rows if r["status"] == "ok" and r.get("ssim") is not None]
    step_counts = list(dict.fromkeys(r["steps"] for r in rows))
    prefix = _common_prefix([r["policy"] for r in ok if r["policy"] != BASELINE_LABEL])
    legend_title = "steps (each its own baseline)"
    if prefix:
        legend_title += f"\nlabels: {prefix}..."
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
    panels = [
        ("ideal", "ideal saving (share of block calls skipped; exact)"),
        ("reduction", "measured latency reduction (1 - t / t_baseline; noisy)"),
    ]
    plotted = []
    for ax, (key, xlabel) in zip(axes, panels):
        points: list[tuple[float, float]] = []
        labels: list[str] = []
        label_colors: list[str] = []
        for k, steps in enumerate(step_counts):
            shown = sorted(
                (r for r in ok if r["steps"] == steps and r.get(key) is not None),
                key=lambda r: float(r[key]),
            )
            if not shown:
                continue
            xs = [float(r[key]) for r in shown]
            ys = [float(r["ssim"]) for r in shown]
            low = [max(0.0, y - (r.get("ssim_ci_low") or y)) for r, y in zip(shown, ys)]
            high = [max(0.0, (r.get("ssim_ci_high") or y) - y) for r, y in zip(shown, ys)]
            color = colors[k % len(colors)]
            marker = _SWEEP_MARKERS[k % len(_SWEEP_MARKERS)]
            ax.errorbar(
                xs,
                ys,
                yerr=[low, high],
                fmt=f"-{marker}",
                ms=5,
                lw=1,
                capsize=2,
                color=color,
                label=f"{steps} steps",
                zorder=3,
            )
            for r, x, y in zip(shown, xs, ys):
                if r["policy"] != BASELINE_LABEL:
                    points.append((x, y))
                    labels.append(r["policy"][len(prefix) :])
                    label_colors.append(color)
        missing = sorted({r["policy"] for r in ok if r.get(key) is None})
        if missing:
            xlabel += f"\nnot shown (no {key}): {', '.join(missing)}"
        ax.set_xlabel(xlabel, fontsize=8)
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
        ax.grid(alpha=0.3)
        ax.margins(x=0.25, y=0.15)
        ax.legend(fontsize=8, loc="lower left", title=legend_title, title_fontsize=7)
        plotted.append((ax, points, labels, label_colors))
    axes[0].set_ylabel("SSIM to the same step count's baseline (95% CI)")
    fig.suptitle(title or "step sweep: saving against consistency", fontsize=10)
    return fig, _label_panels(fig, plotted)


def save_sweep_plot(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Write :func:`sweep_figure` to ``path``; None when matplotlib is not installed."""
    return _save_figure(sweep_figure, rows, path, title)
