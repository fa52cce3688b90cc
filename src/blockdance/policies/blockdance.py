"""The BlockDance policy (Zhang et al., CVPR 2025, arXiv 2503.15927).

Inside a reuse window, steps are grouped by ``N``: the first step of each group is a
*cache step* that runs the whole network and keeps the output of the boundary block
(the last structural block); the other ``N - 1`` steps are *reuse steps* that skip
blocks ``0..boundary`` and feed the cached state into the deep blocks. Outside the
window every step computes fully.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from blockdance.policies._common import resolve_boundary
from blockdance.policy import Decision, GenerationInfo, Policy, PolicyConfig, StepContext


class BlockDanceConfig(PolicyConfig):
    """Configuration of the ``blockdance`` policy."""

    kind: Literal["blockdance"] = "blockdance"
    N: int = Field(2, ge=1, description="Group size: one cache step then N-1 reuse steps.")
    boundary: int | None = Field(
        None,
        ge=0,
        description="Last structural block (its output is cached); None: the architecture's "
        "default (block 20 of 28 in the paper, scaled to depth).",
    )
    window: tuple[float, float] | None = Field(
        None,
        description="Reuse window as fractions (start, end) of the trajectory; None: the "
        "architecture's default (25%-95% for DiT, 40%-95% for PixArt-alpha).",
    )

    @field_validator("window")
    @classmethod
    def _check_window(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0.0 <= v[0] < v[1] <= 1.0:
            raise ValueError(f"window must satisfy 0 <= start < end <= 1, got {v}")
        return v


def window_steps(window: tuple[float, float], num_steps: int) -> range:
    """Steps ``i`` with ``start <= i / num_steps < end``.

    Args:
        window: ``(start, end)`` fractions of the trajectory.
        num_steps: Number of denoising steps.
    """
    eps = 1e-9
    first = math.ceil(window[0] * num_steps - eps)
    last = math.ceil(window[1] * num_steps - eps)
    return range(first, min(last, num_steps))


class BlockDancePolicy(Policy[BlockDanceConfig]):
    """Reuse the structural blocks' output on the non-first steps of each group of N."""

    config_class = BlockDanceConfig

    def __init__(self, config: BlockDanceConfig) -> None:
        super().__init__(config)
        self.boundary = -1
        self.cache_steps: frozenset[int] = frozenset()
        self.reuse_steps: frozenset[int] = frozenset()

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        num_steps = self.require_num_steps(info)
        cfg = self.config
        boundary = resolve_boundary(info, cfg.boundary, "blockdance")
        window = info.default_window if cfg.window is None else cfg.window
        steps = window_steps(window, num_steps)
        self.boundary = boundary
        self.cache_steps = frozenset(s for s in steps if (s - steps.start) % cfg.N == 0)
        self.reuse_steps = frozenset(s for s in steps if (s - steps.start) % cfg.N != 0)

    def decide(self, ctx: StepContext, slot: int) -> Decision:
        if slot <= self.boundary and ctx.step in self.reuse_steps:
            return Decision.REUSE
        return Decision.COMPUTE

    def boundaries(self) -> frozenset[int]:
        return frozenset({self.boundary})

    def keep(self, ctx: StepContext, slot: int) -> bool:
        return ctx.step in self.cache_steps
