"""The ``fora`` policy: FORA, Fast-Forward Caching (Selvaraju et al., arXiv 2407.01425).

FORA caches what every transformer block produced at one step and serves it, instead of
computing, at the following ``N - 1`` steps; every ``N``-th step computes the whole network
and refreshes the cache. Here every block is reused on those steps, so the whole stack is
one run of reused blocks ending at the last block:

- ``reuse="output"`` (default): the last block's cached output is substituted, so the
  stack's output is the one of the last full step, whatever its input is now;
- ``reuse="residual"``: the change the stack made at the last full step,
  ``output(last) - input(0)``, is added to the current input. Summing every block's cached
  change is what FORA does inside each block (it caches the attention and MLP outputs that
  are added to the residual stream), taken over the stack at once.

The first ``start`` share of the steps (a warm-up) always computes; from the first step
after it, steps are grouped by ``N`` and the first of each group computes fully. The
schedule is static: deciding is arithmetic on the step index, with no tensor reads. The
step count is needed only when ``start > 0``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from blockdance.policies._common import REUSE_DESCRIPTION, ReuseMode, first_step
from blockdance.policy import Decision, GenerationInfo, Policy, PolicyConfig, StepContext


class ForaConfig(PolicyConfig):
    """Configuration of the ``fora`` policy."""

    kind: Literal["fora"] = "fora"
    N: int = Field(
        3, ge=1, description="Cache interval: one full step, then N-1 steps reuse every block."
    )
    reuse: ReuseMode = Field("output", description=REUSE_DESCRIPTION)
    start: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Share of the trajectory at the start that always computes (warm-up); "
        "groups of N count from the first step after it. Needs the step count when > 0.",
    )


class ForaPolicy(Policy[ForaConfig]):
    """Reuse every block on the last ``N - 1`` steps of each group of ``N``."""

    config_class = ForaConfig

    def __init__(self, config: ForaConfig) -> None:
        super().__init__(config)
        self.last = -1
        self.first = 0
        self.stop: int | None = None

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        cfg = self.config
        self.last = info.num_blocks - 1
        self.first = first_step(cfg.start, self.require_num_steps(info)) if cfg.start else 0
        self.stop = info.num_steps  # steps past a known count compute (as the runtime warns)

    def decide(self, ctx: StepContext, slot: int) -> Decision:
        step = ctx.step
        if (
            step >= self.first
            and (self.stop is None or step < self.stop)
            and (step - self.first) % self.config.N
        ):
            return Decision.REUSE
        return Decision.COMPUTE

    def boundaries(self) -> frozenset[int]:
        return frozenset({self.last})

    def residual_runs(self) -> dict[int, int]:
        return {self.last: 0} if self.config.reuse == "residual" else {}
