"""The ``random`` policy: a control that reuses on randomly chosen steps.

Not a published method: a baseline for comparisons. If a method's choice of *when* to
reuse matters, it should keep closer to the full model than reusing the same blocks on
the same number of steps picked at random (the BlockDance paper's claim against
indiscriminate reuse).

``fraction * num_steps`` steps, rounded half up (at most ``num_steps - 1``), are drawn without
replacement from ``1..num_steps - 1`` by a generator seeded with ``seed``, so the set is
the same for the same ``seed`` and step count. With ``window`` the steps are drawn from the
window's steps instead (the control for a policy that reuses only late in the trajectory,
such as BlockDance-Ada after its first ρ steps). Step 0 always computes (nothing is cached
yet). On a drawn step blocks ``0..boundary`` are reused, substituting the boundary's
output from the last step that computed it (output reuse, as BlockDance). Needs the step
count.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import Field

from blockdance.errors import GenerationError
from blockdance.policies._common import Window, round_half_up, window_steps
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
    window: Window = Field(
        None,
        description="Draw the steps from this window, fractions (start, end) of the "
        "trajectory (step 0 excluded); None: from steps 1..num_steps - 1.",
    )
    boundary: int | None = Field(
        None,
        ge=0,
        description="Last reused block (blocks 0..boundary are reused); None: the "
        "architecture's default structural boundary.",
    )


def draw_steps(
    fraction: float, seed: int, num_steps: int, window: tuple[float, float] | None = None
) -> frozenset[int]:
    """The reuse steps of the ``random`` policy.

    Args:
        fraction: Target share of the steps that reuse.
        seed: Seed of the draw.
        num_steps: Number of denoising steps.
        window: Draw from the steps of this window (without step 0); None: steps 1..s-1.

    Raises:
        GenerationError: The window holds fewer steps than ``fraction`` asks for.
    """
    if window is None:
        pool = range(1, num_steps)
        count = min(round_half_up(fraction * num_steps), max(num_steps - 1, 0))
    else:
        steps = window_steps(window, num_steps)
        pool = range(max(1, steps.start), steps.stop)
        count = round_half_up(fraction * num_steps)
        if count > len(pool):
            raise GenerationError(
                f"random: fraction={fraction} asks for {count} of {num_steps} steps, but the "
                f"window {window} holds {len(pool)} (steps {pool.start}..{pool.stop - 1}); "
                "lower the fraction or widen the window"
            )
    return frozenset(random.Random(seed).sample(pool, count))


class RandomPolicy(StepSetPolicy[RandomConfig]):
    """Reuse blocks ``0..boundary`` on a seeded random subset of the steps."""

    config_class = RandomConfig
    needs_deep_block = True

    def plan_steps(self, info: GenerationInfo, num_steps: int) -> tuple[None, frozenset[int]]:
        cfg = self.config
        return None, draw_steps(
            cfg.fraction, cfg.seed, num_steps, cfg.window
        )  # keep every computed output
