"""The ``random`` policy: a control that reuses on randomly chosen steps.

Not a published method: a baseline for comparisons. If a method's choice of *when* to
reuse matters, it should keep closer to the full model than reusing the same blocks on
the same number of steps picked at random (the BlockDance paper's claim against
indiscriminate reuse).

``fraction * num_steps`` steps, rounded half up (at most ``num_steps - 1``), are drawn without
replacement from ``1..num_steps - 1`` by a generator seeded with ``seed``, so the set is
the same for the same ``seed`` and step count. Step 0 always computes (nothing is cached
yet). On a drawn step blocks ``0..boundary`` are reused, substituting the boundary's
output from the last step that computed it (output reuse, as BlockDance). Needs the step
count.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import Field

from blockdance.policies._common import round_half_up
from blockdance.policies.step_set import StepSetPolicy
from blockdance.policy import GenerationInfo, PolicyConfig


class RandomConfig(PolicyConfig):
    """Configuration of the ``random`` policy."""

    kind: Literal["random"] = "random"
    fraction: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Target share of the steps that reuse: fraction * num_steps steps rounded "
        "half up, at most num_steps - 1 (step 0 always computes).",
    )
    seed: int = Field(0, description="Seed of the step draw; same seed and step count, same steps.")
    boundary: int | None = Field(
        None,
        ge=0,
        description="Last reused block (blocks 0..boundary are reused); None: the "
        "architecture's default structural boundary.",
    )


def draw_steps(fraction: float, seed: int, num_steps: int) -> frozenset[int]:
    """The reuse steps of the ``random`` policy.

    Args:
        fraction: Target share of the steps that reuse.
        seed: Seed of the draw.
        num_steps: Number of denoising steps.
    """
    count = min(round_half_up(fraction * num_steps), max(num_steps - 1, 0))
    return frozenset(random.Random(seed).sample(range(1, num_steps), count))


class RandomPolicy(StepSetPolicy[RandomConfig]):
    """Reuse blocks ``0..boundary`` on a seeded random subset of the steps."""

    config_class = RandomConfig
    needs_deep_block = True

    def plan_steps(self, info: GenerationInfo, num_steps: int) -> tuple[None, frozenset[int]]:
        cfg = self.config
        return None, draw_steps(cfg.fraction, cfg.seed, num_steps)  # keep every computed output
