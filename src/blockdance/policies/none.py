"""The ``none`` policy: every block computes at every step (the reference)."""

from __future__ import annotations

from typing import Literal

from blockdance.policy import Decision, Policy, PolicyConfig, StepContext


class NoneConfig(PolicyConfig):
    """Configuration of the ``none`` policy (no options)."""

    kind: Literal["none"] = "none"


class NonePolicy(Policy[NoneConfig]):
    """Always compute; attaching it must leave outputs bit-identical."""

    config_class = NoneConfig

    def decide(self, ctx: StepContext, slot: int) -> Decision:
        return Decision.COMPUTE
