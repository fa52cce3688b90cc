"""The ``delta-dit`` policy: Δ-DiT (Chen et al., arXiv 2406.01125).

Δ-DiT observes that the front blocks of a DiT shape the image's outline and the rear blocks
its details, and that early sampling steps settle the outline while late steps refine
details. It therefore skips the *rear* blocks early in the trajectory and the *front*
blocks late, serving the skipped blocks from its Δ-Cache: the change (deviation) the
skipped blocks added at the last step that computed them.

- The trajectory is split at ``split`` (a share of the steps, window arithmetic): steps
  ``i / num_steps < split`` are the early phase, the rest the late phase.
- In each phase, steps are grouped by ``interval`` from the phase's first step: the first
  step of each group computes fully, the other ``interval - 1`` reuse a run of
  ``num_blocks`` blocks: blocks ``n - k .. n - 1`` (the rear run, ending at the last block)
  early, blocks ``0 .. k - 1`` (the front run) late, for ``k`` reused of ``n``.
- ``reuse="residual"`` (default) adds the run's cached change, ``output(last block of the
  run) - input(first block of the run)``, to the run's current input: this is Δ-Cache.
  It is the default because the rear run does not start at block 0: at a reuse step its
  input has just been computed afresh by the front blocks, and a raw cached state could
  only stand in for the run's output if that output did not depend on its input, which it
  does. ``reuse="output"`` substitutes the raw state anyway (it discards what the front
  blocks computed at that step); it is there for comparison.

The runs at both ends must not overlap (``k <= n // 2``): a block is a reuse boundary for
the whole generation, so the front run's last block, were it inside the rear run, would
substitute its own cached state in the middle of the rear run. Needs the step count.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator

from blockdance.policies._common import REUSE_DESCRIPTION, ReuseMode, first_step, group_steps
from blockdance.policy import Decision, GenerationInfo, Policy, PolicyConfig, StepContext


class DeltaDiTConfig(PolicyConfig):
    """Configuration of the ``delta-dit`` policy."""

    kind: Literal["delta-dit"] = "delta-dit"
    interval: int = Field(
        2,
        ge=1,
        description="Cache interval within each phase: one full step, then interval-1 steps "
        "reuse the phase's run of blocks.",
    )
    split: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Share of the trajectory in the early phase (rear blocks reused); the "
        "rest is the late phase (front blocks reused).",
    )
    num_blocks: int | float = Field(
        0.5,
        description="Blocks in each reused run: an integer count, or a float fraction in "
        "(0, 0.5] of the model's blocks (rounded down, at least 1). The front and rear runs "
        "must not overlap, so at most half of the blocks.",
    )
    reuse: ReuseMode = Field(
        "residual",
        description=REUSE_DESCRIPTION + " Default 'residual' (Δ-Cache): the rear run's input "
        "changes at every step.",
    )

    @field_validator("num_blocks", mode="before")
    @classmethod
    def _no_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError(f"num_blocks must be an integer count or a float fraction, got {v}")
        return v

    @field_validator("num_blocks")
    @classmethod
    def _check_num_blocks(cls, v: int | float) -> int | float:
        if isinstance(v, int) and v < 1:
            raise ValueError(f"num_blocks as a count must be >= 1, got {v}")
        if isinstance(v, float) and not 0.0 < v <= 0.5:
            raise ValueError(
                f"num_blocks as a fraction must be in (0, 0.5], got {v} (the front and rear "
                "runs must not overlap); give an integer for a count of blocks"
            )
        return v


class DeltaDiTPolicy(Policy[DeltaDiTConfig]):
    """Reuse the rear blocks early in the trajectory and the front blocks late."""

    config_class = DeltaDiTConfig

    def __init__(self, config: DeltaDiTConfig) -> None:
        super().__init__(config)
        self.count = 0
        self.split_step = 0
        self.rear: range = range(0)  # blocks of the rear run
        self.front: range = range(0)  # blocks of the front run
        self.rear_steps: frozenset[int] = frozenset()
        self.front_steps: frozenset[int] = frozenset()

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        num_steps = self.require_num_steps(info)
        cfg = self.config
        n = info.num_blocks
        spec = cfg.num_blocks
        k = spec if isinstance(spec, int) else max(1, math.floor(spec * n + 1e-9))
        if k > n // 2:
            raise ValueError(
                f"delta-dit num_blocks={spec} means {k} blocks per run, but the model has {n} "
                f"blocks: the front run 0..{k - 1} and the rear run {n - k}..{n - 1} would "
                f"overlap. Use at most {n // 2} blocks (a fraction <= 0.5)"
                + ("" if n >= 2 else "; a model with fewer than 2 blocks cannot use delta-dit")
            )
        split = first_step(cfg.split, num_steps)
        self.count = k
        self.split_step = split
        self.rear = range(n - k, n)
        self.front = range(k)
        _, self.rear_steps = group_steps(range(min(split, num_steps)), cfg.interval)
        _, self.front_steps = group_steps(range(split, num_steps), cfg.interval)

    def decide(self, ctx: StepContext, slot: int) -> Decision:
        step = ctx.step
        if (step in self.rear_steps and slot in self.rear) or (
            step in self.front_steps and slot in self.front
        ):
            return Decision.REUSE
        return Decision.COMPUTE

    def _runs(self) -> dict[int, int]:
        """``{last block: first block}`` of each run that some step reuses."""
        runs = {}
        if self.rear_steps:
            runs[self.rear[-1]] = self.rear[0]
        if self.front_steps:
            runs[self.front[-1]] = self.front[0]
        return runs

    def boundaries(self) -> frozenset[int]:
        return frozenset(self._runs())

    def residual_runs(self) -> dict[int, int]:
        return self._runs() if self.config.reuse == "residual" else {}

    def keep(self, ctx: StepContext, slot: int) -> bool:
        # keep each run's state only in the phase that reuses it
        if self.rear and slot == self.rear[-1]:
            return ctx.step < self.split_step
        return ctx.step >= self.split_step
