"""Statistics over seeds for ``blockdance bench``: bootstrap intervals and paired differences.

Every row of a bench runs the same seeds, so two rows are compared seed by seed: the paired
difference of a metric is ``row[seed] - reference[seed]``, and its interval comes from
resampling the seeds. The intervals are percentile bootstraps with a fixed random seed, so a
bench gives the same numbers every time it is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RESAMPLES", "Estimate", "bootstrap_mean", "paired_difference"]

#: Bootstrap resamples per interval.
RESAMPLES = 2000
#: Seed of the bootstrap's random generator (results are reproducible).
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds with its bootstrap confidence interval.

    Args:
        mean: The mean over the seeds.
        low: Lower end of the interval.
        high: Upper end of the interval.
        n: Number of seeds it rests on.
    """

    mean: float
    low: float
    high: float
    n: int

    @property
    def crosses_zero(self) -> bool:
        """Whether the interval holds zero (for a difference: not separable from none)."""
        return self.low <= 0.0 <= self.high

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high, "n": self.n}


def bootstrap_mean(
    values: Sequence[float],
    *,
    level: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Estimate:
    """The mean of ``values`` and its percentile-bootstrap interval.

    Args:
        values: One value per seed.
        level: Coverage of the interval (0.95: the 2.5th and 97.5th percentiles).
        resamples: Number of resamples of the seeds, with replacement.
        seed: Seed of the random generator drawing the resamples.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"expected a non-empty list of per-seed values, got shape {x.shape}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Estimate(float(x.mean()), float(low), float(high), int(x.size))


def paired_difference(
    values: Sequence[float], reference: Sequence[float], **options: Any
) -> Estimate:
    """Mean of ``values[i] - reference[i]`` over the seeds, with its bootstrap interval.

    Args:
        values: One value per seed for the row.
        reference: The reference row's values for the same seeds, in the same order.
        **options: ``level``, ``resamples`` and ``seed`` of :func:`bootstrap_mean`; each
            resample draws the same seeds for both rows.
    """
    a, b = np.asarray(values, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same seeds: {a.shape} against {b.shape}")
    return bootstrap_mean((a - b).tolist(), **options)
