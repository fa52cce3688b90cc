"""Small pieces the built-in reuse policies share."""

from __future__ import annotations

import math
from typing import Literal

from blockdance.policy import GenerationInfo

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


def resolve_boundary(info: GenerationInfo, boundary: int | None, kind: str) -> int:
    """The configured boundary, or the architecture default; an error names the range.

    Args:
        info: The generation's plan (block count and default boundary).
        boundary: Configured last reused block, or None for the architecture default.
        kind: Policy kind, for the message.
    """
    chosen = info.default_boundary if boundary is None else boundary
    if chosen >= info.num_blocks:
        raise ValueError(
            f"{kind} boundary={chosen} is out of range: the model has {info.num_blocks} "
            f"blocks (0..{info.num_blocks - 1}); the architecture default is "
            f"{info.default_boundary}"
        )
    return chosen
