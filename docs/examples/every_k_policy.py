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
from blockdance import GenerationInfo, Policy, PolicyConfig, StepSetPolicy


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


class EveryKPolicy(StepSetPolicy[EveryKConfig]):
    """Reuse blocks ``0..boundary`` on every k-th step after the warm-up."""

    config_class = EveryKConfig

    def resolve_boundary(self, info: GenerationInfo) -> int:
        boundary = super().resolve_boundary(info)  # config or default, inside the model
        if boundary >= info.num_blocks - 1:
            raise ValueError(
                f"every-k boundary={boundary} leaves no deep block to compute: the model has "
                f"{info.num_blocks} blocks; use 0..{info.num_blocks - 2}"
            )
        return boundary

    def plan_steps(
        self, info: GenerationInfo, num_steps: int
    ) -> tuple[frozenset[int], frozenset[int]]:
        k = self.config.k
        first = math.ceil(self.config.warmup * num_steps)
        reuse = frozenset(s for s in range(first, num_steps) if (s - first) % k == k - 1)
        return frozenset(s - 1 for s in reuse), reuse  # keep only what the next step reuses


class EveryKPlugin:
    """Registers the ``every-k`` policy kind."""

    @blockdance.hookimpl
    def blockdance_register_policies(
        self, register: Callable[[type[PolicyConfig], type[Policy]], None]
    ) -> None:
        register(EveryKConfig, EveryKPolicy)


#: What an entry point names: ``every-k = "my_package.every_k_policy:PLUGIN"``.
PLUGIN = EveryKPlugin()
