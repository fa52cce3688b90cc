"""An example adaptive policy: skip the whole stack when the modulated input barely changed.

TeaCache (Liu et al., 2024) watches the first block's timestep-modulated input, which is
cheap to compute, and reuses the stack's cached residual while its accumulated relative L1
change stays below a threshold. This version reads the input of a DiT block (adaLN
``shift``/``scale`` from ``adaLN_modulation``, then ``norm1``), as the reference DiT and
diffusers' DiT-family blocks name them; it runs none of the block's attention or MLP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import torch
from pydantic import Field

import blockdance
from blockdance import BlockCall, Decision, GenerationInfo, Policy, PolicyConfig, StepContext


class TeaCacheConfig(PolicyConfig):
    """Configuration of the ``teacache-dit`` policy."""

    kind: Literal["teacache-dit"] = "teacache-dit"
    threshold: float = Field(
        0.1, gt=0.0, description="Accumulated relative L1 change that forces a compute."
    )
    warmup: int = Field(1, ge=1, description="First steps that always compute.")


class TeaCachePolicy(Policy[TeaCacheConfig]):
    """Reuse the whole stack's residual while block 0's modulated input stays close."""

    config_class: ClassVar[type[PolicyConfig]] = TeaCacheConfig

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        self.last = info.num_blocks - 1
        self.previous: torch.Tensor | None = None  # block 0's modulated input, last step
        self.accumulated = 0.0
        self.step_reuses: dict[int, bool] = {}  # step -> decision (shared by its branches)

    def inspects(self) -> frozenset[int]:
        return frozenset({0})

    def inspect(self, ctx: StepContext, slot: int, call: BlockCall) -> None:
        if ctx.branch or ctx.step in self.step_reuses:
            return  # decided at the step's first call; the other branches follow it
        block = call.module
        x, c = call.args[0], call.args[1]  # tokens (N, T, D), conditioning (N, D)
        shift, scale = block.adaLN_modulation(c).chunk(6, dim=1)[:2]  # 2 x (N, D)
        modulated = block.norm1(x) * (1 + scale[:, None]) + shift[:, None]  # (N, T, D)
        reuse = False
        if self.previous is not None and ctx.step >= self.config.warmup:
            change = (modulated - self.previous).abs().mean() / self.previous.abs().mean()
            self.accumulated += float(change)
            reuse = self.accumulated < self.config.threshold
        if not reuse:
            self.accumulated = 0.0
        self.previous = modulated
        self.step_reuses[ctx.step] = reuse

    def decide(self, ctx: StepContext, slot: int) -> Decision:
        return Decision.REUSE if self.step_reuses.get(ctx.step) else Decision.COMPUTE

    def boundaries(self) -> frozenset[int]:
        return frozenset({self.last})

    def residual_runs(self) -> dict[int, int]:
        return {self.last: 0}  # reuse adds the stack's cached change to the current input

    def memory_bytes(self) -> int:
        kept = self.previous
        return 0 if kept is None else kept.numel() * kept.element_size()

    def end(self) -> None:
        self.previous = None


class TeaCachePlugin:
    """Registers the ``teacache-dit`` policy kind."""

    @blockdance.hookimpl
    def blockdance_register_policies(
        self, register: Callable[[type[PolicyConfig], type[Policy]], None]
    ) -> None:
        register(TeaCacheConfig, TeaCachePolicy)
