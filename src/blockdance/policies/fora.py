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

from blockdance.policies._common import (
    REUSE_DESCRIPTION,
    PeriodicLeadingRunPolicy,
    ReuseMode,
    first_step,
)
from blockdance.policy import GenerationInfo, PolicyConfig


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


class ForaPolicy(PeriodicLeadingRunPolicy[ForaConfig]):
    """Reuse every block on the last ``N - 1`` steps of each group of ``N``."""

    config_class = ForaConfig

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        cfg = self.config
        self.boundary = info.num_blocks - 1  # the whole stack is one run
        self.first = first_step(cfg.start, self.require_num_steps(info)) if cfg.start else 0
        self.period = cfg.N
        self.stop = info.num_steps  # steps past a known count compute (as the runtime warns)
        self.residual = cfg.reuse == "residual"
