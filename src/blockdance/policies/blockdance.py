"""The BlockDance policy (Zhang et al., CVPR 2025, arXiv 2503.15927).

Inside a reuse window, steps are grouped by ``N``: the first step of each group is a
*cache step* that runs the whole network and keeps the output of the boundary block
(the last structural block); the other ``N - 1`` steps are *reuse steps* that skip
blocks ``0..boundary`` and feed the cached state into the deep blocks. Outside the
window every step computes fully.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from blockdance.policies._common import Window, group_steps
from blockdance.policies.step_set import StepSetPolicy, window_steps
from blockdance.policy import GenerationInfo, PolicyConfig

__all__ = ["BlockDanceConfig", "BlockDancePolicy", "window_steps"]


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
    window: Window = Field(
        None,
        description="Reuse window as fractions (start, end) of the trajectory; None: the "
        "architecture's default (25%-95% for DiT, 40%-95% for PixArt-alpha).",
    )


class BlockDancePolicy(StepSetPolicy[BlockDanceConfig]):
    """Reuse the structural blocks' output on the non-first steps of each group of N."""

    config_class = BlockDanceConfig
    needs_deep_block = True

    def plan_steps(
        self, info: GenerationInfo, num_steps: int
    ) -> tuple[frozenset[int], frozenset[int]]:
        cfg = self.config
        window = info.default_window if cfg.window is None else cfg.window
        return group_steps(window_steps(window, num_steps), cfg.N)
