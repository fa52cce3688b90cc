"""The ``deepcache`` policy: DeepCache (Ma, Fang, Wang — CVPR 2024, arXiv 2312.00858).

DeepCache was designed for U-Nets: it caches the slowly changing high-level features and
recomputes only the shallow branch on the steps in between. The BlockDance paper ran it on
Diffusion Transformers by caching the output of the first half of the blocks and reusing
it on alternate steps across the whole trajectory; this policy does that:

- the boundary is block ``num_blocks // 2 - 1`` (the last block of the first half);
- steps are grouped by ``interval`` from step 0: the first step of each group computes
  fully (and refreshes the cache), the other ``interval - 1`` skip blocks
  ``0..boundary`` and feed the cached state into the second half;
- ``reuse="residual"`` adds the first half's cached change, ``output(boundary) -
  input(0)``, to the current input instead of substituting the raw state.

There is no window: the whole trajectory follows the schedule, and the step count is not
needed (a known count stops reuse at its end).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from blockdance.policies._common import (
    REUSE_DESCRIPTION,
    PeriodicLeadingRunPolicy,
    ReuseMode,
    require_two_blocks,
)
from blockdance.policy import GenerationInfo, PolicyConfig


class DeepCacheConfig(PolicyConfig):
    """Configuration of the ``deepcache`` policy."""

    kind: Literal["deepcache"] = "deepcache"
    interval: int = Field(
        2,
        ge=1,
        description="Cache interval: one full step, then interval-1 steps reuse the first "
        "half of the blocks (2: alternate steps).",
    )
    reuse: ReuseMode = Field("output", description=REUSE_DESCRIPTION)


class DeepCachePolicy(PeriodicLeadingRunPolicy[DeepCacheConfig]):
    """Reuse the first half of the blocks on all but the first step of each interval."""

    config_class = DeepCacheConfig

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        require_two_blocks(info, "deepcache reuses the first half of the blocks")
        self.boundary = info.num_blocks // 2 - 1
        self.period = self.config.interval
        self.stop = info.num_steps  # steps past a known count compute (as the runtime warns)
        self.residual = self.config.reuse == "residual"
