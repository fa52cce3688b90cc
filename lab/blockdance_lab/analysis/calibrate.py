"""Propose a BlockDance boundary block and reuse window from a recorded :class:`Trace`.

The rule (docs/analysis.md has the reasoning):

1. **Settle step** ``s*``: the first step from which the SSIM between adjacent steps'
   x̂₀ stays at or above ``ssim_threshold`` until the latest window end (the structure has
   settled).
   Without x̂₀ numbers, the architecture's default window start is used instead.
2. **Candidates**: ``N`` is given; a window ``[start, stop)`` of steps with ``start >= s*``
   and ``stop <= ceil(end * S)`` (``end`` defaults to the paper's 95%), ending right after one
   of its reuse steps; a boundary ``b <= num_blocks - 2`` (at least one deep block computes at
   reuse steps).
3. **Cost of a candidate** (its *reuse distance*): at a reuse step ``r`` whose group's cache
   step is ``c``, the runtime substitutes block ``b``'s output from step ``c`` for the one
   step ``r`` would compute. Its relative error is estimated from the adjacent-step distances
   ``D[k, b]`` (relative L2, averaged over guidance branches) by the triangle inequality:
   ``e(r) = sum(D[k, b] for k in c+1..r)`` (exact for ``N = 2``). The reuse distance is the
   mean of ``e(r)`` over the window's reuse steps.
4. **Saving**: ``(#reuse steps) * (b + 1) / (num_steps * num_blocks)``, the share of block
   computations skipped (``GenerationStats.saved_fraction``).
5. **Target similarity** ``τ``: among candidates with reuse distance ``<= τ``, the one with the
   largest saving (ties: smaller distance, then earlier start).
   **Target saving** ``σ``: among candidates with saving ``>= σ``, the one with the smallest
   reuse distance (ties: larger saving, then earlier start). If no candidate starting at or
   after ``s*`` reaches ``σ``, earlier starts are allowed, and the result says so.

:func:`calibrate_combination` runs the rule at several ``N`` and compares their choices by
the same reuse distance. It cannot rank the forecast orders of ``blockdance-forecast``: the
trace holds only adjacent-step distances, not how well an extrapolation of earlier states
predicts a later one, so the order is left to validation, which measures every shortlisted
``(N, boundary, window)`` at every order asked for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from blockdance.errors import BlockDanceError
from blockdance.policies.blockdance import BlockDanceConfig, window_steps
from blockdance_lab.analysis.trace import Trace

if TYPE_CHECKING:
    from blockdance_lab.analysis.validate import Validation

__all__ = [
    "Calibration",
    "CalibrationError",
    "Candidate",
    "calibrate",
    "calibrate_combination",
    "evaluate_config",
    "settle_step",
]

#: Default x̂₀ SSIM between adjacent steps above which the structure counts as settled
#: (validated on the tiny shapes DiT, docs/analysis.md: 0.9 let windows start too early).
SSIM_THRESHOLD = 0.95
#: Default window end: the paper's 95% for every model it reports.
WINDOW_END = 0.95


class CalibrationError(BlockDanceError, ValueError):
    """No configuration meets the target on this trace."""


@dataclass(frozen=True)
class Candidate:
    """One configuration evaluated on a trace.

    Args:
        N: Group size.
        boundary: Boundary block.
        window: Window fractions.
        reuse_steps: The reuse steps the window and N give.
        distance: Mean estimated relative error of the substituted state over reuse steps.
        max_distance: The largest of those errors.
        saving: Share of block computations skipped.
    """

    N: int
    boundary: int
    window: tuple[float, float]
    reuse_steps: tuple[int, ...]
    distance: float
    max_distance: float
    saving: float

    @property
    def config(self) -> BlockDanceConfig:
        return BlockDanceConfig(N=self.N, boundary=self.boundary, window=self.window)

    def describe(self) -> str:
        """One line: the configuration, its reuse steps, saving and reuse distance."""
        return (
            f"N={self.N} boundary={self.boundary} window=({self.window[0]:.4g}, "
            f"{self.window[1]:.4g}) -> {len(self.reuse_steps)} reuse steps, saving "
            f"{self.saving:.1%}, reuse distance {self.distance:.4f} "
            f"(max {self.max_distance:.4f})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "N": self.N,
            "boundary": self.boundary,
            "window": list(self.window),
            "reuse_steps": list(self.reuse_steps),
            "distance": self.distance,
            "max_distance": self.max_distance,
            "saving": self.saving,
        }


@dataclass(frozen=True)
class Calibration:
    """A proposed configuration and how it was found.

    Args:
        chosen: The proposed candidate.
        default: The architecture's default boundary and window at the same N, evaluated on
            the same trace (for comparison).
        settle_step: First step from which x̂₀ SSIM stays above the threshold (None: unknown).
        target: ``"similarity"`` or ``"saving"``.
        target_value: The target's value.
        ssim_threshold: Threshold used for the settle step.
        notes: What was relaxed or assumed.
        shortlist: The best candidate of each boundary block by the rule, best first
            (``chosen`` is the first), when asked for.
        num_steps: Steps of the trace the candidates were evaluated on.
        shortlist_asked: How many shortlisted boundaries were asked for.
        shortfall: Why the shortlist holds fewer boundaries than asked (empty when it
            does not).
        validation: What :func:`~blockdance_lab.analysis.validate.validate` measured and
            chose, and what it left out; None when not validated.
        orders: Forecast orders validation measures each found configuration at (0 is
            ``blockdance``, 1 and 2 ``blockdance-forecast``); ``(0,)`` for plain BlockDance.
        per_n: For a combination (:func:`calibrate_combination`), the calibration at each
            ``N``, smallest first; empty for one ``N``.
    """

    chosen: Candidate
    default: Candidate | None
    settle_step: int | None
    target: str
    target_value: float
    ssim_threshold: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    shortlist: tuple[Candidate, ...] = field(default_factory=tuple)
    num_steps: int = 0
    shortlist_asked: int = 0
    shortfall: tuple[str, ...] = field(default_factory=tuple)
    validation: Validation | None = None
    orders: tuple[int, ...] = (0,)
    per_n: tuple[Calibration, ...] = ()

    @property
    def is_combination(self) -> bool:
        """Whether several ``N`` or a forecast order are searched (the summary and the
        validation labels then name N and the order of every configuration)."""
        return bool(self.per_n) or self.orders != (0,)

    @property
    def config(self) -> BlockDanceConfig:
        """The proposed ``blockdance`` configuration (:attr:`chosen`)."""
        return self.chosen.config

    @property
    def measured(self) -> tuple[tuple[Candidate, float], ...]:
        """``(candidate, mean SSIM)`` of each validated configuration this calibration
        found (shortlist and default), in validation order; empty when not validated."""
        if self.validation is None:
            return ()
        return tuple(
            (m.planned.candidate, m.ssim.mean)
            for m in self.validation.measured
            if m.planned.candidate is not None
        )

    def policy_dict(self) -> dict[str, Any]:
        """The configuration to use: validation's choice whatever its kind, else
        ``{"kind": "blockdance", "N": ..., "boundary": ..., "window": [...]}``."""
        if self.validation is not None and self.validation.chosen is not None:
            return dict(self.validation.chosen.planned.policy)
        return self.config.model_dump(mode="json")

    def write(self, path: str | Path) -> Path:
        """Write the policy configuration (only what ``blockdance.attach`` takes)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.policy_dict(), indent=1) + "\n")
        return path

    def to_dict(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.is_combination:
            extra = {
                "orders": list(self.orders),
                "per_n": [
                    {
                        "N": c.chosen.N,
                        "chosen": c.chosen.to_dict(),
                        "default": c.default.to_dict() if c.default else None,
                        "notes": list(c.notes),
                    }
                    for c in self.per_n
                ],
            }
        return {
            "policy": self.policy_dict(),
            "chosen": self.chosen.to_dict(),
            "default": self.default.to_dict() if self.default else None,
            "settle_step": self.settle_step,
            "target": self.target,
            "target_value": self.target_value,
            "ssim_threshold": self.ssim_threshold,
            "notes": list(self.notes),
            "shortlist": [c.to_dict() for c in self.shortlist],
            "shortlist_asked": self.shortlist_asked,
            "shortfall": list(self.shortfall),
            "validation": self.validation.to_dict() if self.validation else None,
            **extra,
        }

    def summary(self) -> str:
        if self.is_combination:
            return self._combination_summary()
        c = self.chosen
        lines = [
            f"target {self.target} {self.target_value:g}; structure settles at step "
            + (f"{self.settle_step}" if self.settle_step is not None else "(unknown)")
            + f" (x̂₀ SSIM >= {self.ssim_threshold:g})",
            f"proposed: {c.describe()}",
        ]
        if self.default is not None:
            lines.append(f"default : {self.default.describe()}")
        if self.validation is not None:
            lines.append("measured SSIM to the full model:")
            lines += self.validation.summary_lines()
            best = self.validation.chosen
            if best is not None and best.planned.candidate is None:
                lines.append(
                    f"chosen by validation: {best.label} {json.dumps(best.planned.policy)} "
                    "(a given configuration; the policy file holds it)"
                )
        elif self.shortfall:
            lines += [f"shortlist: {why}" for why in self.shortfall]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _combination_summary(self) -> str:
        ns = ", ".join(str(c.chosen.N) for c in self.per_n) or str(self.chosen.N)
        lines = [
            f"target {self.target} {self.target_value:g}; N in {ns}, forecast orders "
            f"{', '.join(map(str, self.orders))}; structure settles at step "
            + (f"{self.settle_step}" if self.settle_step is not None else "(unknown)")
            + f" (x̂₀ SSIM >= {self.ssim_threshold:g})",
            "the rule's choice at each N (reuse distance: the trace's estimate, order 0; "
            "* the rule's choice over all N):",
        ]
        rule = self.shortlist[0] if self.shortlist else self.chosen  # before validation
        for cal in self.per_n or (self,):
            c = cal.chosen
            mark = "*" if c == rule else " "
            lines.append(f" {mark} {c.describe()}")
        if self.validation is not None:
            lines.append("measured SSIM to the full model:")
            lines += self.validation.summary_lines()
            best = self.validation.chosen
            if best is not None:
                lines.append(
                    f"chosen by validation: {best.label} {json.dumps(best.planned.policy)}"
                )
        else:
            if any(o != 0 for o in self.orders):
                lines.append(
                    "forecast orders are chosen by validation only (the trace cannot estimate "
                    "a forecast's error): run with --validate K"
                )
            lines += [f"shortlist: {why}" for why in self.shortfall]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def settle_step(trace: Trace, threshold: float = SSIM_THRESHOLD, end: float = 1.0) -> int | None:
    """First step ``s`` such that x̂₀ SSIM(s'−1, s') >= threshold for every later ``s'``
    before the latest window stop ``ceil(end × S)``.

    Steps at or after that stop never reuse, so a sharp final denoising step (common with
    strong guidance) does not hide a structure that settled long before. Steps without a
    number (step 0) are skipped. None when there are no x̂₀ numbers or the last counted step
    is below the threshold.

    Args:
        trace: A recorded trace.
        threshold: x̂₀ SSIM that counts as settled.
        end: Latest window end as a fraction of the steps (1.0: every step counts).
    """
    stop = window_steps((0.0, end), trace.num_steps).stop
    curve = trace.x0_curve()[:stop]
    known = [s for s in range(len(curve)) if not np.isnan(curve[s])]
    if not known or curve[known[-1]] < threshold:
        return None
    first = known[-1]
    for s in reversed(known):
        if curve[s] < threshold:
            break
        first = s
    return first


def _fraction(step: int, num_steps: int) -> float:
    """A short fraction that :func:`window_steps` maps back to ``step`` (start or stop)."""
    frac = round(step / num_steps, 6)
    got = window_steps((frac, 1.0), num_steps).start if frac < 1 else num_steps
    return frac if got == step else step / num_steps


def evaluate_config(trace: Trace, n: int, boundary: int, window: tuple[float, float]) -> Candidate:
    """Reuse distance and saving of one configuration on ``trace`` (see the module doc)."""
    steps, blocks = trace.num_steps, trace.num_blocks
    if not 0 <= boundary < blocks:
        raise ValueError(f"boundary {boundary} is outside blocks 0..{blocks - 1}")
    dist = np.nan_to_num(trace.distance(), nan=0.0)[:, boundary]  # (steps,)
    in_window = window_steps(window, steps)
    errors: list[float] = []
    reuse: list[int] = []
    for r in in_window:
        offset = (r - in_window.start) % n
        if offset == 0:
            continue
        reuse.append(r)
        errors.append(float(dist[r - offset + 1 : r + 1].sum()))
    saving = len(reuse) * (boundary + 1) / (steps * blocks) if steps and blocks else 0.0
    return Candidate(
        N=n,
        boundary=boundary,
        window=window,
        reuse_steps=tuple(reuse),
        distance=float(np.mean(errors)) if errors else 0.0,
        max_distance=max(errors, default=0.0),
        saving=saving,
    )


@dataclass(frozen=True)
class _Grid:
    """Every candidate as flat arrays: window start and stop steps, boundary, numbers."""

    start: np.ndarray
    stop: np.ndarray
    boundary: np.ndarray
    distance: np.ndarray
    saving: np.ndarray

    def best(self, mask: np.ndarray, keys: tuple[np.ndarray, ...]) -> int | None:
        """Index of the masked candidate that sorts first by ``keys`` (first key first)."""
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return None
        order = np.lexsort(tuple(k[idx] for k in reversed(keys)))
        return int(idx[order[0]])


def _grid(trace: Trace, n: int, first_start: int, end: float) -> _Grid:
    """All windows ``[start, stop)`` with ``first_start <= start``, ``stop <= end * S``, ending
    right after a reuse step, and all boundaries ``0..B-2``."""
    steps, blocks = trace.num_steps, trace.num_blocks
    dist = np.nan_to_num(trace.distance(), nan=0.0)[:, : blocks - 1]  # (S, B-1)
    csum = np.vstack([np.zeros((1, blocks - 1)), np.cumsum(dist, axis=0)])  # csum[k] = D[:k]
    last_stop = window_steps((0.0, end), steps).stop
    cols: list[list[np.ndarray]] = [[], [], [], [], []]
    bs = np.arange(blocks - 1)
    for start in range(max(first_start, 0), last_stop):
        reuse = np.array([r for r in range(start, last_stop) if (r - start) % n], dtype=int)
        if reuse.size == 0:
            continue
        cache = reuse - (reuse - start) % n
        err = csum[reuse + 1] - csum[cache + 1]  # (R, B-1): D[c+1..r] summed
        mean = np.cumsum(err, axis=0) / np.arange(1, reuse.size + 1)[:, None]  # windows of k
        count = np.arange(1, reuse.size + 1)[:, None]
        cols[0].append(np.full(mean.shape, start))
        cols[1].append(np.broadcast_to((reuse + 1)[:, None], mean.shape))
        cols[2].append(np.broadcast_to(bs[None, :], mean.shape))
        cols[3].append(mean)
        cols[4].append(count * (bs[None, :] + 1) / (steps * blocks))
    flat = [np.concatenate([c.ravel() for c in col]) if col else np.zeros(0) for col in cols]
    return _Grid(*flat)


def _candidate(trace: Trace, n: int, grid: _Grid, i: int, end: float) -> Candidate:
    steps = trace.num_steps
    stop = int(grid.stop[i])
    # a window that runs to the latest end is written with that end (0.95, not 0.96 of 50)
    last = end if stop == window_steps((0.0, end), steps).stop else _fraction(stop, steps)
    window = (_fraction(int(grid.start[i]), steps), last)
    return evaluate_config(trace, n, int(grid.boundary[i]), window)


def calibrate(
    trace: Trace,
    *,
    n: int = 2,
    target_similarity: float | None = None,
    target_saving: float | None = None,
    ssim_threshold: float = SSIM_THRESHOLD,
    end: float = WINDOW_END,
    shortlist: int = 0,
) -> Calibration:
    """Propose a ``blockdance`` configuration for a target (see the module doc for the rule).

    Args:
        trace: A recorded trace (all blocks computed at every step: the ``none`` policy).
        n: Group size ``N`` of the proposed configuration.
        target_similarity: Largest allowed reuse distance (mean estimated relative L2 of the
            substituted state over reuse steps), e.g. ``0.05``.
        target_saving: Smallest share of block computations to skip, e.g. ``0.25``. Exactly
            one target is given; with none, the saving of the architecture's default
            configuration at this N is the target.
        ssim_threshold: x̂₀ SSIM between adjacent steps that counts as settled.
        end: Latest window end (fraction of the trajectory); earlier ends are searched.
        shortlist: Also keep the best candidate of each boundary block, the first
            ``shortlist`` of them by the same order, for
            :func:`~blockdance_lab.analysis.validate.validate` to measure.

    Raises:
        CalibrationError: No configuration meets the target.
    """
    if n < 2:
        raise ValueError(f"N must be >= 2 for any reuse, got {n}")
    if target_similarity is not None and target_saving is not None:
        raise ValueError("give target_similarity or target_saving, not both")
    if trace.num_steps < 2 or trace.num_blocks < 2:
        raise CalibrationError(
            f"the trace has {trace.num_steps} steps and {trace.num_blocks} blocks; calibration "
            "needs at least 2 of each"
        )
    notes: list[str] = []
    steps = trace.num_steps
    default_boundary = min(trace.default_boundary, trace.num_blocks - 2)
    default = evaluate_config(trace, n, default_boundary, trace.default_window)
    settled = settle_step(trace, ssim_threshold, end)
    if settled is None:
        first = window_steps(trace.default_window, steps).start
        why = (
            "no x̂₀ numbers in the trace"
            if np.isnan(trace.x0_curve()).all()
            else f"x̂₀ SSIM does not stay above {ssim_threshold:g} up to the window's latest end"
        )
        notes.append(f"{why}: windows start no earlier than the default start, step {first}")
    else:
        first = settled

    grid = _grid(trace, n, first, end)
    if target_similarity is not None:
        target, value = "similarity", float(target_similarity)
        mask = grid.distance <= value + 1e-12
        keys = (-grid.saving, grid.distance, grid.start)
        i = grid.best(mask, keys)
        if i is None:
            best = float(grid.distance.min()) if grid.distance.size else float("nan")
            raise CalibrationError(
                f"no configuration with windows starting at step >= {first} keeps the reuse "
                f"distance <= {value:g}; the smallest reachable is {best:.4g}. Raise "
                "--target-similarity, lower --ssim-threshold, or use more steps."
            )
    else:
        target = "saving"
        if target_saving is None:
            value = default.saving
            notes.append(f"no target given: the default configuration's saving {value:.1%}")
        else:
            value = float(target_saving)
        keys = (grid.distance, -grid.saving, grid.start)
        mask = grid.saving >= value - 1e-12
        i = grid.best(mask, keys)
        if i is None:
            grid = _grid(trace, n, 0, end)
            keys = (grid.distance, -grid.saving, grid.start)
            mask = grid.saving >= value - 1e-12
            i = grid.best(mask, keys)
            if i is not None:
                notes.append(
                    f"saving {value:.1%} is out of reach with windows starting at step >= "
                    f"{first}; earlier starts were allowed"
                )
        if i is None:
            top = float(grid.saving.max()) if grid.saving.size else 0.0
            raise CalibrationError(
                f"no configuration with N={n} and window end <= {end:g} skips {value:.1%} of "
                f"the block computations; the most is {top:.1%}. Lower --target-saving or raise N."
            )
    chosen = _candidate(trace, n, grid, i, end)
    per_boundary = [grid.best(mask & (grid.boundary == b), keys) for b in range(trace.num_blocks)]
    ranked = [j for j in per_boundary if j is not None]
    ranked.sort(key=lambda j: tuple(k[j] for k in keys))
    shortfall = (
        _shortfall(grid, trace.num_blocks, shortlist, [int(grid.boundary[j]) for j in ranked],
                   target, value)
        if shortlist > len(ranked)
        else []
    )  # fmt: skip
    return Calibration(
        chosen=chosen,
        default=default,
        settle_step=settled,
        target=target,
        target_value=value,
        ssim_threshold=ssim_threshold,
        notes=tuple(notes),
        shortlist=tuple(_candidate(trace, n, grid, j, end) for j in ranked[:shortlist]),
        num_steps=steps,
        shortlist_asked=shortlist,
        shortfall=tuple(shortfall),
    )


def _shortfall(
    grid: _Grid, blocks: int, asked: int, found: list[int], target: str, value: float
) -> list[str]:
    """Why the shortlist holds fewer than ``asked`` boundaries: each boundary ``0..B-2`` has
    at most one shortlisted window, and some cannot meet the target with any window."""
    head = f"{len(found)} of the {asked} boundaries asked for"
    reasons = []
    if asked > blocks - 1:
        reasons.append(
            f"a model of {blocks} blocks has {blocks - 1} boundaries (0..{blocks - 2}: at least "
            "one deep block computes at reuse steps)"
        )
    missed = [b for b in range(blocks - 1) if b not in found]
    if missed and target == "saving":
        most = [float(grid.saving[grid.boundary == b].max(initial=0.0)) for b in missed]
        reasons.append(
            f"no window of boundary {', '.join(map(str, missed))} skips {value:.1%} (the most: "
            + ", ".join(f"{m:.1%}" for m in most)
            + ")"
        )
    elif missed:
        least = [float(grid.distance[grid.boundary == b].min(initial=np.inf)) for b in missed]
        reasons.append(
            f"no window of boundary {', '.join(map(str, missed))} keeps the reuse distance "
            f"<= {value:g} (the least: " + ", ".join(f"{d:.4g}" for d in least) + ")"
        )
    return [f"{head}: {'; '.join(reasons)}"]


def _rule_key(c: Candidate, target: str) -> tuple[float, ...]:
    """The rule's order across N: least distance (saving target) or most saving (similarity
    target), then the other number, then the smaller N."""
    if target == "similarity":
        return (-c.saving, c.distance, c.N)
    return (c.distance, -c.saving, c.N)


def calibrate_combination(
    trace: Trace,
    ns: Sequence[int],
    *,
    orders: Sequence[int] = (0,),
    target_similarity: float | None = None,
    target_saving: float | None = None,
    ssim_threshold: float = SSIM_THRESHOLD,
    end: float = WINDOW_END,
    shortlist: int = 0,
) -> Calibration:
    """Run the rule at each ``N`` and take the best of their choices by the same rule.

    Each ``N`` is calibrated as :func:`calibrate` does (an ``N`` that cannot reach the
    target is left out with a note); the result's ``chosen`` is the choice with the least
    reuse distance (saving target) or the most saving (similarity target), and its
    ``shortlist`` the union of each ``N``'s shortlist (its choice alone with
    ``shortlist=0``) in that order. The forecast ``orders``
    are not ranked here (the trace cannot estimate a forecast's error): validation measures
    each shortlisted configuration at each order.

    Args:
        trace: A recorded trace (the ``none`` policy).
        ns: Group sizes to search, each >= 2.
        orders: Forecast orders validation measures (0: ``blockdance``; 1, 2:
            ``blockdance-forecast``).
        target_similarity: As :func:`calibrate`.
        target_saving: As :func:`calibrate`; with no target, the saving of the
            architecture's default configuration at the smallest ``N``.
        ssim_threshold: As :func:`calibrate`.
        end: As :func:`calibrate`.
        shortlist: Boundaries shortlisted at each ``N``.

    Raises:
        ValueError: An ``N`` below 2, an order outside 0..2, a repeated value, or both
            targets.
        CalibrationError: No ``N`` meets the target.
    """
    ns, orders = tuple(int(n) for n in ns), tuple(int(o) for o in orders)
    if not ns:
        raise ValueError("give at least one N")
    bad = [n for n in ns if n < 2]
    if bad:
        raise ValueError(f"N must be >= 2 for any reuse, got {bad[0]}")
    if not orders or any(not 0 <= o <= 2 for o in orders):
        raise ValueError(f"forecast orders are 0, 1 or 2 (0: plain blockdance), got {orders}")
    for name, values in (("N", ns), ("orders", orders)):
        if len(set(values)) != len(values):
            raise ValueError(f"{name} {values} repeats a value; give each once")
    if target_similarity is not None and target_saving is not None:
        raise ValueError("give target_similarity or target_saving, not both")
    if target_similarity is None and target_saving is None and trace.num_blocks >= 2:
        boundary = min(trace.default_boundary, trace.num_blocks - 2)
        target_saving = evaluate_config(trace, min(ns), boundary, trace.default_window).saving
    found: list[Calibration] = []
    failed: list[tuple[int, str]] = []
    for n in sorted(ns):
        try:
            found.append(
                calibrate(
                    trace,
                    n=n,
                    target_similarity=target_similarity,
                    target_saving=target_saving,
                    ssim_threshold=ssim_threshold,
                    end=end,
                    shortlist=shortlist,
                )
            )
        except CalibrationError as err:
            failed.append((n, str(err)))
    if not found:
        raise CalibrationError(
            "no N meets the target: " + " | ".join(f"N={n}: {why}" for n, why in failed)
        )
    target = found[0].target
    best = min(found, key=lambda c: _rule_key(c.chosen, target))
    short = sorted(
        (c for cal in found for c in cal.shortlist or (cal.chosen,)),
        key=lambda c: _rule_key(c, target),
    )
    notes = [f"N={n} left out: {why}" for n, why in failed]
    notes += [f"N={cal.chosen.N}: {note}" for cal in found for note in cal.notes]
    return Calibration(
        chosen=best.chosen,
        default=best.default,
        settle_step=best.settle_step,
        target=target,
        target_value=best.target_value,
        ssim_threshold=ssim_threshold,
        notes=tuple(notes),
        shortlist=tuple(short),
        num_steps=trace.num_steps,
        shortlist_asked=shortlist,
        shortfall=tuple(f"N={cal.chosen.N}: {why}" for cal in found for why in cal.shortfall),
        orders=orders,
        per_n=tuple(found),
    )
