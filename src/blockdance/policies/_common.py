"""Small pieces the built-in reuse policies share."""

from __future__ import annotations

import math
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator

from blockdance.policy import Decision, GenerationInfo, Policy, PolicyConfig, StepContext

C = TypeVar("C", bound=PolicyConfig)


def _check_window(v: tuple[float, float] | None) -> tuple[float, float] | None:
    if v is not None and not 0.0 <= v[0] < v[1] <= 1.0:
        raise ValueError(f"window must satisfy 0 <= start < end <= 1, got {v}")
    return v


#: A reuse window option: fractions ``(start, end)`` of the trajectory, or None for the
#: architecture's default.
Window = Annotated[tuple[float, float] | None, AfterValidator(_check_window)]

#: How a reused run of blocks is served: ``output`` substitutes the boundary's cached
#: state; ``residual`` adds the run's cached change to the run's current input.
ReuseMode = Literal["output", "residual"]

REUSE_DESCRIPTION = (
    "'output': substitute the cached state of the run's last block; 'residual': add the "
    "run's cached change (output of its last block minus input of its first) to the run's "
    "current input."
)


def first_step(fraction: float, num_steps: int) -> int:
    """The first step ``i`` with ``i / num_steps >= fraction`` (the window arithmetic).

    The ``1e-9`` absorbs float error: ``0.35 * 20`` is ``7.000000000000001``, step 7.
    """
    return math.ceil(fraction * num_steps - 1e-9)


def window_steps(window: tuple[float, float], num_steps: int) -> range:
    """Steps ``i`` with ``start <= i / num_steps < end``.

    Args:
        window: ``(start, end)`` fractions of the trajectory.
        num_steps: Number of denoising steps.
    """
    return range(first_step(window[0], num_steps), min(first_step(window[1], num_steps), num_steps))


def group_steps(steps: range, n: int) -> tuple[frozenset[int], frozenset[int]]:
    """``steps`` in groups of ``n`` from their start: ``(first of each group, the others)``.

    Args:
        steps: Consecutive steps.
        n: Group size.
    """
    firsts = frozenset(s for s in steps if (s - steps.start) % n == 0)
    return firsts, frozenset(steps).difference(firsts)


def round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def resolve_boundary(
    info: GenerationInfo, boundary: int | None, kind: str, *, deep: bool = False
) -> int:
    """The configured boundary, or the architecture default; an error names the range.

    Args:
        info: The generation's plan (block count and default boundary).
        boundary: Configured last reused block, or None for the architecture default.
        kind: Policy kind, for the message.
        deep: At least one deep block must follow the boundary (BlockDance's structural
            blocks): the last block is refused too.
    """
    chosen = info.default_boundary if boundary is None else boundary
    last = info.num_blocks - 1
    if chosen > last or (deep and chosen == last):
        why = (
            "is out of range"
            if chosen > last
            else "leaves no deep block after it to compute (a reuse step would reuse the whole "
            "model; that is FORA, kind 'fora')"
        )
        raise ValueError(
            f"{kind} boundary={chosen} {why}: the model has {info.num_blocks} blocks "
            f"(0..{last})"
            + (
                f", and the structural blocks 0..boundary must leave at least one deep block, "
                f"so boundary is at most {last - 1}"
                if deep
                else ""
            )
            + f"; the architecture default is {info.default_boundary}"
        )
    return chosen


def require_two_blocks(info: GenerationInfo, what: str) -> None:
    """Refuse a model of fewer than 2 blocks; ``what`` says why the policy needs them."""
    if info.num_blocks < 2:
        raise ValueError(f"{what}, but the model has {info.num_blocks} block; it needs at least 2")


class PeriodicLeadingRunPolicy(Policy[C]):
    """Reuse blocks ``0..boundary`` on all but the first step of each group of ``period``.

    Groups count from step ``first``; steps before it, and from ``stop`` on when the step
    count is known, compute. Deciding is arithmetic on the step index, so the step count
    is not needed. Subclasses set the four attributes and ``residual`` in :meth:`begin`.
    """

    def __init__(self, config: C) -> None:
        super().__init__(config)
        self.boundary = -1
        self.first = 0
        self.period = 1
        self.stop: int | None = None
        self.residual = False

    def decide(self, ctx: StepContext, slot: int) -> Decision:
        step = ctx.step
        if (
            slot <= self.boundary
            and step >= self.first
            and (self.stop is None or step < self.stop)
            and (step - self.first) % self.period
        ):
            return Decision.REUSE
        return Decision.COMPUTE

    def boundaries(self) -> frozenset[int]:
        return frozenset({self.boundary})

    def residual_runs(self) -> dict[int, int]:
        return {self.boundary: 0} if self.residual else {}
