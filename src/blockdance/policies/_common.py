"""Small pieces the built-in reuse policies share."""

from __future__ import annotations

import math
from typing import Literal

#: How a reused run of blocks is served: ``output`` substitutes the boundary's cached
#: state; ``residual`` adds the run's cached change to the run's current input.
ReuseMode = Literal["output", "residual"]

REUSE_DESCRIPTION = (
    "'output': substitute the cached state of the run's last block; 'residual': add the "
    "run's cached change (output of its last block minus input of its first) to the run's "
    "current input."
)


def first_step(fraction: float, num_steps: int) -> int:
    """The first step ``i`` with ``i / num_steps >= fraction`` (the window arithmetic)."""
    return math.ceil(fraction * num_steps - 1e-9)


def round_half_up(x: float) -> int:
    return math.floor(x + 0.5)
