"""Measure configurations on real generations and keep the one closest to the full model.

The rule of :func:`~blockdance_lab.analysis.calibrate.calibrate` ranks ``blockdance``
configurations by an estimate: the reuse distance at the boundary block. That estimate sees
the error of the substituted state, not how the deeper blocks amplify or damp it, so it can
rank a deeper boundary against a shorter window wrongly (docs/analysis.md shows a case).
Validation settles it by measurement: generate a few seeds under ``none`` and under each
configuration, and choose the one whose samples are closest to the full model's (mean SSIM)
among those that skip at least the target saving, so the choice never trades speed for
similarity.

The configurations are the calibration's shortlist (the best window of each boundary block;
the first is the rule's choice), the architecture's default, and any registered policy
configurations given beside them (``fora``, ``deepcache``, a plugin's kind …). Whatever is
asked for but not measured is listed with the reason: a duplicate, a target out of reach, a
policy that cannot begin on the model, a generation that failed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from blockdance import PolicyLike, Registry, default_registry
from blockdance.errors import InvalidInputError
from blockdance.policies._common import group_steps
from blockdance.policies.blockdance import window_steps
from blockdance.policies.forecast import ForecastConfig
from blockdance_lab.analysis.calibrate import Calibration, Candidate
from blockdance_lab.compare import attached, compare_policies
from blockdance_lab.external import is_external, parse_external
from blockdance_lab.policy_entries import PolicyEntry, labelled, parse_policy_arg
from blockdance_lab.report import add_consistency_metrics
from blockdance_lab.statistics import Estimate, bootstrap_mean
from blockdance_lab.workload import Workload

__all__ = [
    "VALIDATION_SEED0",
    "VALIDATION_SEED_STEP",
    "Measured",
    "Planned",
    "Validation",
    "candidate_policy",
    "plan_validation",
    "read_candidates",
    "validate",
    "validation_seeds",
]

#: First seed of the validation generations, apart from the demo's and bench's seeds 0..n-1,
#: so that a configuration is not chosen on the samples it is then reported on.
VALIDATION_SEED0 = 100_000
#: Default distance between validation seeds. The shipped workloads derive the condition
#: from the seed (class ``s % 16``, background ``(s // 16) % 5``, direction ``(s + s // 16) % 4``):
#: consecutive seeds from 100000 all ask the SD3 for one background, a step of 17 spreads 16
#: seeds over every class and background (docs/analysis.md). Seeds stay i.i.d. noise for any
#: other workload, so the step costs nothing there.
VALIDATION_SEED_STEP = 17


def validation_seeds(count: int = 16, step: int = VALIDATION_SEED_STEP) -> tuple[int, ...]:
    """The validation seeds: ``VALIDATION_SEED0, VALIDATION_SEED0 + step, ...`` (``count``)."""
    return tuple(range(VALIDATION_SEED0, VALIDATION_SEED0 + step * count, step))


#: Tolerance when comparing a saving with the target (savings are ratios of small integers).
_EPS = 1e-9


@dataclass(frozen=True)
class Planned:
    """A configuration to validate.

    Args:
        label: How tables and plots name it.
        policy: Its validated configuration as JSON data (``{"kind": ..., ...}``), or the
            external cache's configuration for a ``diffusers:`` entry.
        source: ``"rule"`` (the rule's choice), ``"shortlist"``, ``"default"`` or
            ``"given"`` (asked for by the caller).
        candidate: The calibration's estimate for a configuration it found; None for
            given ones.
        order: Forecast order a found configuration runs at (0: ``blockdance``; 1, 2:
            ``blockdance-forecast``; the estimate is the order-0 one).
    """

    label: str
    policy: dict[str, Any]
    source: str
    candidate: Candidate | None = None
    order: int = 0


@dataclass(frozen=True)
class Measured:
    """A validated configuration and what its generations measured.

    Args:
        planned: The configuration.
        saving: Ideal saving: the share of block calls the runtime skipped (exact; None for
            an external cache that skips no whole block).
        ssim: Mean SSIM to the ``none`` samples of the same seeds, with its 95% bootstrap
            interval over the seeds.
        psnr: Mean PSNR in dB to the ``none`` samples.
        eligible: Whether it skips at least the target saving (only those can be chosen).
        note: What else to know (below the target, identical samples to another one).
    """

    planned: Planned
    saving: float | None
    ssim: Estimate
    psnr: float
    eligible: bool
    note: str = ""

    @property
    def label(self) -> str:
        return self.planned.label

    def to_dict(self) -> dict[str, Any]:
        estimate = self.planned.candidate.to_dict() if self.planned.candidate else None
        return {
            "label": self.label,
            "source": self.planned.source,
            "policy": self.planned.policy,
            "saving": self.saving,
            "ssim": self.ssim.mean,
            "ssim_ci_low": self.ssim.low,
            "ssim_ci_high": self.ssim.high,
            "psnr": self.psnr,
            "eligible": self.eligible,
            "note": self.note,
            "estimate": estimate,
            "order": self.planned.order if self.planned.candidate else None,
        }


@dataclass(frozen=True)
class Validation:
    """What a validation measured, what it chose, and what it did not measure and why.

    Args:
        asked: Configurations asked for: the shortlist size, the default when asked, and
            the given ones.
        measured: The configurations measured, in the order they were planned.
        not_validated: ``(what, why)`` for each configuration asked for but not measured.
        seeds: The seeds generated.
        num_steps: Steps of each generation.
        target_saving: Saving a configuration must reach to be chosen.
        best: Index in ``measured`` of the chosen configuration; None when none is eligible.
    """

    asked: int
    measured: tuple[Measured, ...]
    not_validated: tuple[tuple[str, str], ...]
    seeds: tuple[int, ...]
    num_steps: int
    target_saving: float
    best: int | None

    @property
    def chosen(self) -> Measured | None:
        return None if self.best is None else self.measured[self.best]

    def to_dict(self) -> dict[str, Any]:
        return {
            "asked": self.asked,
            "validated": len(self.measured),
            "seeds": list(self.seeds),
            "num_steps": self.num_steps,
            "target_saving": self.target_saving,
            "chosen": None if self.chosen is None else self.chosen.label,
            "measured": [m.to_dict() for m in self.measured],
            "not_validated": [{"what": w, "why": y} for w, y in self.not_validated],
        }

    def summary_lines(self) -> list[str]:
        first = self.seeds[0] if self.seeds else 0
        lines = [
            f"validated {len(self.measured)} of {self.asked} configurations asked for, on "
            f"{len(self.seeds)} seeds from {first}, {self.num_steps} steps; chosen: the "
            f"highest SSIM among those skipping >= {self.target_saving:.1%}",
        ]
        width = max([len("configuration"), *(len(m.label) for m in self.measured)]) + 2
        lines.append(
            f"   {'configuration':<{width}}{'ideal':>7}  {'SSIM [95% CI]':<26}{'PSNR dB':>8}"
        )
        for i, m in enumerate(self.measured):
            mark = "*" if i == self.best else " "
            saving = "-" if m.saving is None else f"{m.saving:.1%}"
            ssim = f"{m.ssim.mean:.4f} [{m.ssim.low:.4f}, {m.ssim.high:.4f}]"
            tail = f"  ({m.note})" if m.note else ""
            lines.append(f" {mark} {m.label:<{width}}{saving:>7}  {ssim:<26}{m.psnr:>8.2f}{tail}")
        if self.not_validated:
            lines.append(f"not validated ({len(self.not_validated)}):")
            lines += [f" - {what}: {why}" for what, why in self.not_validated]
        return lines


def read_candidates(spec: str) -> list[PolicyEntry]:
    """Policy entries from one ``--candidate`` value.

    A kind name, a JSON object, or a JSON file: a policy file (one object) is one entry; a
    file holding a list (of kind names, objects with an optional ``label``, or policy files
    relative to the list's folder) gives one entry per item.

    Raises:
        InvalidInputError: The value or the file is not valid JSON, or a list item is
            neither a name nor an object.
    """
    path = Path(spec)
    if spec.lstrip().startswith("{") or path.suffix != ".json" or not path.is_file():
        return [parse_policy_arg(spec)]
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"--candidate {spec}: not valid JSON ({e.msg})") from None
    if not isinstance(data, list):
        return [spec]  # a policy file: the registry reads it
    entries: list[PolicyEntry] = []
    for i, item in enumerate(data):
        if isinstance(item, dict):
            entries.append(item)
        elif isinstance(item, str):
            relative = path.parent / item
            is_file = item.endswith(".json") and relative.is_file()
            entries.append(str(relative) if is_file else item)
        else:
            raise InvalidInputError(
                f"--candidate {spec}: item {i} is {type(item).__name__}; each item is a kind "
                'name, a policy file or an object such as {"kind": "fora", "N": 2}'
            )
    return entries


def _window_label(window: tuple[float, float]) -> str:
    return f"{window[0] * 100:.4g}%-{window[1] * 100:.4g}%"


def _candidate_label(c: Candidate, order: int = 0) -> str:
    if order:
        return (
            f"blockdance-forecast order {order} N={c.N} boundary {c.boundary}, "
            f"{_window_label(c.window)}"
        )
    return f"blockdance N={c.N} boundary {c.boundary}, {_window_label(c.window)}"


def candidate_policy(c: Candidate, order: int = 0) -> dict[str, Any]:
    """The policy configuration of a found candidate at a forecast order: ``blockdance`` at
    order 0 (what ``blockdance-forecast`` order 0 runs), else ``blockdance-forecast``."""
    if order == 0:
        return c.config.model_dump(mode="json")
    config = ForecastConfig(N=c.N, boundary=c.boundary, window=c.window, order=order)
    return config.model_dump(mode="json")


def _schedule_key(policy: dict[str, Any], calibration: Calibration) -> str:
    """What makes two configurations run the same: a ``blockdance`` configuration by its N,
    boundary and reuse steps (windows that round to the same steps are one), any other by
    its whole validated configuration."""
    kind = policy.get("kind")
    if kind in ("blockdance", "blockdance-forecast") and calibration.default is not None:
        default = calibration.default
        boundary = default.boundary if policy.get("boundary") is None else policy["boundary"]
        window = default.window if policy.get("window") is None else tuple(policy["window"])
        steps = window_steps(window, calibration.num_steps)
        _, reuse = group_steps(steps, int(policy["N"]))
        order = int(policy.get("order", 1)) if kind == "blockdance-forecast" else 0
        extra = {k: v for k, v in policy.items() if k not in _SCHEDULE_OPTIONS}
        return json.dumps(
            ["blockdance", order, policy["N"], boundary, sorted(reuse), extra], sort_keys=True
        )
    return json.dumps(policy, sort_keys=True)


#: Options of ``blockdance`` / ``blockdance-forecast`` that :func:`_schedule_key` reads
#: (any other option keeps two configurations apart).
_SCHEDULE_OPTIONS = frozenset({"kind", "N", "boundary", "window", "order"})


def _config_data(policy: PolicyLike, registry: Registry) -> dict[str, Any]:
    if is_external(policy):
        return parse_external(policy).model_dump(mode="json")  # type: ignore[arg-type]
    return registry.make_policy(policy).config.model_dump(mode="json")


def plan_validation(
    calibration: Calibration,
    *,
    candidates: Sequence[PolicyEntry] = (),
    include_default: bool = True,
    registry: Registry | None = None,
) -> tuple[list[Planned], list[tuple[str, str]], int]:
    """The configurations a validation measures, those it leaves out with the reason, and
    how many were asked for. Nothing runs; each given entry is built once, so a bad kind or
    option fails here.

    The shortlist (or the rule's choice alone when the calibration kept none) comes first,
    then the default (at each ``N`` of a combination) when it reaches the target saving, each
    at every forecast order of ``calibration.orders`` (order 0 as ``blockdance``), then each
    given entry. A configuration that runs the same schedule as one before it is left out.

    Args:
        calibration: A result of ``calibrate(...)`` for a target saving.
        candidates: Further policy entries (kind names, mappings, policy files).
        include_default: Also measure the architecture's default configuration.
        registry: Resolves the given entries' kinds.

    Raises:
        InvalidInputError: A given entry names no registered kind or has a bad option.
    """
    registry = registry or default_registry()
    short = list(calibration.shortlist) or [calibration.chosen]
    orders = calibration.orders
    per_n = calibration.per_n or (calibration,)
    defaults = [c.default for c in per_n if c.default is not None] if include_default else []
    found = max(calibration.shortlist_asked, 1) * len(per_n)
    asked = (found + len(defaults)) * len(orders) + len(candidates)
    planned: list[Planned] = []
    left_out = [("shortlist", why) for why in calibration.shortfall]
    seen: dict[str, str] = {}

    def add(item: Planned) -> None:
        key = _schedule_key(item.policy, calibration)
        if key in seen:
            blockdance = item.policy.get("kind") == "blockdance"
            same = "N, boundary and reuse steps" if blockdance else "configuration"
            left_out.append((item.label, f"same {same} as {seen[key]!r}, measured once"))
            return
        seen[key] = item.label
        planned.append(item)

    for i, c in enumerate(short):
        is_rule = c == calibration.chosen and i == 0
        source = "rule" if is_rule else "shortlist"
        for order in orders:
            label = _candidate_label(c, order) + (" (rule)" if is_rule else "")
            add(Planned(label, candidate_policy(c, order), source, c, order))
    for default in defaults:
        for order in orders:
            label = _candidate_label(default, order) + " (default)"
            if default.saving < calibration.target_value - _EPS:
                left_out.append(
                    (label, f"skips {default.saving:.1%}, below the target saving "
                     f"{calibration.target_value:.1%}; it could not be chosen")
                )  # fmt: skip
            else:
                add(Planned(label, candidate_policy(default, order), "default", default, order))
    for label, policy in labelled(candidates):
        try:
            data = _config_data(policy, registry)
        except Exception as err:
            message = " ".join(str(err).split())
            raise InvalidInputError(
                f"candidate {label!r} is not a valid policy configuration: "
                f"{type(err).__name__}: {message}"
            ) from err
        add(Planned(label, data, "given"))
    return planned, left_out, asked


def _begin_check(
    workload: Workload, target: Any, planned: Sequence[Planned], num_steps: int, registry: Registry
) -> tuple[list[Planned], list[tuple[str, str]]]:
    """Attach each configuration and begin a generation without running the model: those
    that cannot start on this model are left out with their error."""
    ok: list[Planned] = []
    failed: list[tuple[str, str]] = []
    for item in planned:
        try:
            with attached(target, item.policy, registry, num_steps) as h, h.generation(num_steps):
                pass
        except Exception as err:
            message = " ".join(str(err).split())
            failed.append(
                (item.label, f"cannot begin on {workload.name}: {type(err).__name__}: {message}")
            )
            continue
        ok.append(item)
    return ok, failed


def validate(
    calibration: Calibration,
    workload: Workload,
    *,
    seeds: Sequence[int] | None = None,
    candidates: Sequence[PolicyEntry] = (),
    include_default: bool = True,
    registry: Registry | None = None,
    progress: bool = False,
) -> Calibration:
    """Generate with each configuration (:func:`plan_validation`) and choose the closest to
    ``none`` among those reaching the target saving.

    The generations take the trace's number of steps, for which the candidates were found.

    Args:
        calibration: A result of ``calibrate(...)`` for a target saving (with
            ``shortlist=k`` to measure the best window of each of k boundaries).
        workload: The workload the trace was recorded on.
        seeds: Seeds to generate (default :func:`validation_seeds`: 16 seeds from
            :data:`VALIDATION_SEED0`, :data:`VALIDATION_SEED_STEP` apart).
        candidates: Further policy configurations of any registered kind, measured beside
            the calibration's (kind names, ``{"kind": ...}`` mappings, policy files).
        include_default: Also measure the architecture's default configuration when it
            reaches the target saving.
        registry: Registry to resolve the workload's architecture and the policies.
        progress: Progress bar per generation.

    Returns:
        The calibration with ``validation`` set; ``chosen`` is the best measured
        configuration the calibration found (``blockdance``), and ``policy_dict()`` the best
        of all, whatever its kind.

    Raises:
        ValueError: A target similarity (validation compares configurations of equal or
            higher saving, which a similarity target does not fix).
        InvalidInputError: A given configuration names no registered kind or has a bad
            option (nothing has run).
    """
    if calibration.target != "saving":
        raise ValueError(
            "validation picks the most similar configuration among those reaching a saving; "
            "calibrate with a target saving (or no target) to validate"
        )
    registry = registry or default_registry()
    planned, left_out, asked = plan_validation(
        calibration, candidates=candidates, include_default=include_default, registry=registry
    )
    seeds = validation_seeds() if seeds is None else tuple(seeds)
    target = workload.build()
    planned, failed = _begin_check(workload, target, planned, calibration.num_steps, registry)
    left_out += failed
    runs = compare_policies(
        workload,
        [("none", "none")] + [(p.label, p.policy) for p in planned],
        seeds=seeds,
        num_steps=calibration.num_steps,
        warmup=False,
        progress=progress,
        registry=registry,
        target=target,
        keep_going=True,
    )
    add_consistency_metrics(runs)
    goal = calibration.target_value
    measured: list[Measured] = []
    samples: list[tuple[str, torch.Tensor]] = []
    for item, run in zip(planned, runs[1:]):
        if run.error is not None:
            left_out.append((item.label, f"failed while generating: {run.error}"))
            continue
        saving = run.metrics.get("ideal")
        eligible = saving is not None and saving >= goal - _EPS
        notes = [] if eligible else [f"below the target saving {goal:.1%}: not chosen"]
        twin = next((label for label, x in samples if torch.equal(x, run.samples)), None)
        if twin is not None:
            notes.append(f"samples identical to {twin!r}")
        samples.append((item.label, run.samples))
        measured.append(
            Measured(
                item,
                saving,
                bootstrap_mean(run.per_seed["ssim"]),
                run.metrics["psnr"],
                eligible,
                "; ".join(notes),
            )
        )
    ranked = [i for i, m in enumerate(measured) if m.eligible]
    best = max(ranked, key=lambda i: (measured[i].ssim.mean, measured[i].saving), default=None)
    own = [m for m in measured if m.eligible and m.planned.candidate is not None]
    chosen = calibration.chosen
    if own:
        top = max(own, key=lambda m: (m.ssim.mean, m.saving))
        chosen = top.planned.candidate or chosen
    validation = Validation(
        asked=asked,
        measured=tuple(measured),
        not_validated=tuple(left_out),
        seeds=seeds,
        num_steps=calibration.num_steps,
        target_saving=goal,
        best=best,
    )
    note = (
        f"validated on {len(seeds)} seeds from {seeds[0]}: chose the highest measured SSIM "
        f"of {len(ranked)} configurations reaching the target saving"
        if best is not None
        else "validation measured no configuration reaching the target saving; the rule's "
        "choice stands"
    )
    return dataclasses.replace(
        calibration,
        chosen=chosen,
        validation=validation,
        notes=(*calibration.notes, note),
    )
