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
    """The first step ``i`` with ``i / num_steps >= fraction`` (the window arithmetic)."""
    return math.ceil(fraction * num_steps - 1e-9)


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
