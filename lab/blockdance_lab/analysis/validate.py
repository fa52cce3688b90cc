"""Measure a calibration's shortlist on real generations and keep the best one.

The rule of :func:`~blockdance_lab.analysis.calibrate.calibrate` ranks configurations by an
estimate: the reuse distance at the boundary block. That estimate sees the error of the
substituted state, not how the deeper blocks amplify or damp it, so it can rank a deeper
boundary against a shorter window wrongly (docs/analysis.md shows a case). Validation settles
it by measurement: generate a few seeds under each shortlisted configuration (the best window
of each boundary block, plus the architecture's default) and under ``none``, and choose the
configuration whose samples are closest to the full model's (mean SSIM). Every candidate
reaches the calibration's target saving, so the choice never trades speed for similarity.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from blockdance import PolicyLike, Registry
from blockdance_lab.analysis.calibrate import Calibration, Candidate
from blockdance_lab.compare import compare_policies
from blockdance_lab.report import add_consistency_metrics
from blockdance_lab.workload import Workload

__all__ = ["VALIDATION_SEED0", "validate"]

#: First seed of the validation generations, apart from the demo's and bench's seeds 0..n-1,
#: so that a configuration is not chosen on the samples it is then reported on.
VALIDATION_SEED0 = 100_000


def validate(
    calibration: Calibration,
    workload: Workload,
    *,
    seeds: Sequence[int] | None = None,
    include_default: bool = True,
    registry: Registry | None = None,
    progress: bool = False,
) -> Calibration:
    """Generate with each shortlisted configuration and choose the one closest to ``none``.

    The generations take the trace's number of steps, for which the candidates were found.

    Args:
        calibration: A result of ``calibrate(..., shortlist=k)`` for a target saving.
        workload: The workload the trace was recorded on.
        seeds: Seeds to generate (default 16 seeds from :data:`VALIDATION_SEED0`).
        include_default: Also measure the architecture's default configuration when it
            reaches the target saving.
        registry: Registry to resolve the workload's architecture.
        progress: Progress bar per generation.

    Returns:
        The calibration with ``chosen`` set to the configuration of highest measured SSIM and
        ``measured`` holding every measurement.

    Raises:
        ValueError: No shortlist, or a target similarity (validation compares candidates of
            equal or higher saving, which a similarity target does not fix).
    """
    if not calibration.shortlist:
        raise ValueError("nothing to validate: calibrate with shortlist=k (k >= 1) first")
    if calibration.target != "saving":
        raise ValueError(
            "validation picks the most similar configuration among those reaching a saving; "
            "calibrate with a target saving (or no target) to validate"
        )
    candidates: list[Candidate] = list(calibration.shortlist)
    default = calibration.default
    if (
        include_default
        and default is not None
        and default not in candidates
        and default.saving >= calibration.target_value - 1e-12
    ):
        candidates.append(default)
    if seeds is None:
        seeds = range(VALIDATION_SEED0, VALIDATION_SEED0 + 16)
    seeds = tuple(seeds)
    policies: list[tuple[str, PolicyLike]] = [("none", "none")] + [
        (f"candidate {i}", c.config) for i, c in enumerate(candidates)
    ]
    runs = compare_policies(
        workload,
        policies,
        seeds=seeds,
        num_steps=calibration.num_steps,
        warmup=False,
        progress=progress,
        registry=registry,
    )
    add_consistency_metrics(runs)
    measured = tuple((c, run.metrics["ssim"]) for c, run in zip(candidates, runs[1:]))
    best = max(measured, key=lambda m: (m[1], m[0].saving))[0]
    note = (
        f"validated on {len(seeds)} seeds from {seeds[0]}: chose the highest measured SSIM "
        f"of {len(measured)} configurations"
    )
    return dataclasses.replace(
        calibration, chosen=best, measured=measured, notes=(*calibration.notes, note)
    )
