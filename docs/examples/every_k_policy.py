"""An example reuse policy: after a warm-up, reuse the structural blocks every k-th step.

Steps ``0 .. first - 1`` (``first = ceil(warmup * num_steps)``) compute fully. From
``first`` on, steps are counted in groups of ``k``: the last step of each group reuses
blocks ``0..boundary``, substituting the boundary output of the step just before it.
With ``k=2`` and ``warmup=0.25`` this is BlockDance N=2 with the window 25%-100%, except
that the state comes from the previous step rather than from the group's first step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from pydantic import Field

import blockdance
from blockdance import Decision, GenerationInfo, Policy, PolicyConfig, StepContext


class EveryKConfig(PolicyConfig):
    """Configuration of the ``every-k`` policy."""

    kind: Literal["every-k"] = "every-k"
    k: int = Field(3, ge=2, description="Reuse on the last step of every group of k steps.")
    warmup: float = Field(
        0.25, ge=0.0, lt=1.0, description="Share of the trajectory that always computes fully."
    )
    boundary: int | None = Field(
        None, ge=0, description="Last reused block; None: the architecture's default."
    )


class EveryKPolicy(Policy[EveryKConfig]):
    """Reuse blocks ``0..boundary`` on every k-th step after the warm-up."""

    config_class = EveryKConfig

    def __init__(self, config: EveryKConfig) -> None:
        super().__init__(config)
        self.boundary = -1
        self.reuse_steps: frozenset[int] = frozenset()

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        num_steps = self.require_num_steps(info)  # clear error when the count is unknown
        cfg = self.config
        boundary = info.default_boundary if cfg.boundary is None else cfg.boundary
        if boundary >= info.num_blocks - 1:
            raise ValueError(
                f"every-k boundary={boundary} leaves no deep block to compute: the model has "
                f"{info.num_blocks} blocks; use 0..{info.num_blocks - 2}"
            )
        first = math.ceil(cfg.warmup * num_steps)
        self.boundary = boundary
        self.reuse_steps = frozenset(
            s for s in range(first, num_steps) if (s - first) % cfg.k == cfg.k - 1
        )

    def decide(self, ctx: StepContext, slot: int) -> Decision:
        if slot <= self.boundary and ctx.step in self.reuse_steps:
            return Decision.REUSE
        return Decision.COMPUTE

    def boundaries(self) -> frozenset[int]:
        return frozenset({self.boundary})

    def keep(self, ctx: StepContext, slot: int) -> bool:
        return ctx.step + 1 in self.reuse_steps  # keep only what the next step reuses


class EveryKPlugin:
    """Registers the ``every-k`` policy kind."""

    @blockdance.hookimpl
    def blockdance_register_policies(
        self, register: Callable[[type[PolicyConfig], type[Policy]], None]
    ) -> None:
        register(EveryKConfig, EveryKPolicy)


#: What an entry point names: ``every-k = "my_package.every_k_policy:PLUGIN"``.
PLUGIN = EveryKPlugin()
