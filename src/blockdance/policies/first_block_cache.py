"""The ``first-block-cache`` policy: an adaptive first-block cache.

It follows the first-block cache of ParaAttention (``FBCache``) and diffusers'
``FirstBlockCache``, the simplest form of TeaCache's idea (Liu et al., "Timestep Embedding
Tells: It's Time to Cache for Video Diffusion Model", arXiv 2411.19108): let a cheap
indicator computed at the start of the network decide, per step, whether the rest of the
network would change enough to be worth computing.

- Block 0 always computes. Right after it, its output ``a`` is compared with its output
  ``b`` at the last step of the same guidance branch that computed fully:
  ``mean|a - b| / mean|b|`` (summed over the tensors of a multi-stream block).
- Below ``threshold``, outside the warm-up (``start``), and with fewer than
  ``max_consecutive`` reuses in a row, blocks ``1..last`` are reused as one residual run:
  the change they made at that last full step, ``output(last) - input(1)``, is added to
  block 1's current input. Otherwise the step computes fully, and its block-0 output
  becomes the new reference. A reused step does not move the reference, so slow drift
  adds up until it crosses the threshold.

ParaAttention and diffusers compare block 0's *residual* (output minus input); a policy
sees only a block's output (``Policy.observe``), so this compares outputs.

The decision reads a tensor: one ``.item()`` host sync per step and branch, after block 0.
That stalls a GPU pipeline briefly and breaks whole-graph compilation; it is inherent to an
adaptive decision (static schedules need none). The policy holds one block-0 output per
branch (freed when the generation ends), next to the runtime's cached change.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from blockdance.policies._common import first_step, require_two_blocks
from blockdance.policy import Decision, GenerationInfo, Policy, PolicyConfig, StepContext


class FirstBlockCacheConfig(PolicyConfig):
    """Configuration of the ``first-block-cache`` policy."""

    kind: Literal["first-block-cache"] = "first-block-cache"
    threshold: float = Field(
        0.05,
        ge=0.0,
        description="Reuse when block 0's relative L1 change, mean|a-b| / mean|b|, since the "
        "last fully computed step is below this (0: never reuse).",
    )
    max_consecutive: int | None = Field(
        None,
        ge=1,
        description="At most this many reused steps in a row; None: no limit.",
    )
    start: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Share of the trajectory at the start that always computes (warm-up). "
        "Needs the step count when > 0.",
    )


def _tensors(output: Any) -> tuple[torch.Tensor, ...]:
    """The tensors a block returned: one tensor, or the tensors of a tuple or list."""
    if isinstance(output, torch.Tensor):
        return (output,)
    if isinstance(output, (tuple, list)):
        found = tuple(t for t in output if isinstance(t, torch.Tensor))
        if found:
            return found
    raise TypeError(
        "first-block-cache compares block 0's output across steps and expects a tensor or a "
        f"tuple of tensors; block 0 returned {type(output).__name__}"
    )


class FirstBlockCachePolicy(Policy[FirstBlockCacheConfig]):
    """Reuse blocks ``1..last`` as a residual when block 0's output barely changed."""

    config_class = FirstBlockCacheConfig
    observes = True

    def __init__(self, config: FirstBlockCacheConfig) -> None:
        super().__init__(config)
        self.last = -1
        self.first = 0
        self._previous: dict[int, tuple[torch.Tensor, ...]] = {}  # branch -> block-0 output
        self._reuse_at: dict[int, int] = {}  # branch -> step whose blocks 1.. are reused
        self._in_a_row: dict[int, int] = {}  # branch -> consecutive reused steps

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        require_two_blocks(info, "first-block-cache reuses blocks 1.. after computing block 0")
        cfg = self.config
        self.last = info.num_blocks - 1
        self.first = first_step(cfg.start, self.require_num_steps(info)) if cfg.start else 0
        self._previous = {}
        self._reuse_at = {}
        self._in_a_row = {}

    def end(self) -> None:
        self._previous = {}
        self._reuse_at = {}
        self._in_a_row = {}

    def decide(self, ctx: StepContext, slot: int) -> Decision:
        if slot and self._reuse_at.get(ctx.branch) == ctx.step:
            return Decision.REUSE
        return Decision.COMPUTE

    def observe(self, ctx: StepContext, slot: int, output: Any) -> None:
        if slot:
            return
        branch = ctx.branch
        current = _tensors(output)
        previous = self._previous.get(branch)
        in_a_row = self._in_a_row.get(branch, 0)
        cfg = self.config
        if (
            previous is not None
            and ctx.step >= self.first
            and (cfg.max_consecutive is None or in_a_row < cfg.max_consecutive)
            and self._similar(current, previous)
        ):
            self._reuse_at[branch] = ctx.step
            self._in_a_row[branch] = in_a_row + 1
            return
        self._reuse_at.pop(branch, None)
        self._in_a_row[branch] = 0
        self._previous[branch] = tuple(t.detach().clone() for t in current)

    def _similar(
        self, current: tuple[torch.Tensor, ...], previous: tuple[torch.Tensor, ...]
    ) -> bool:
        if len(current) != len(previous) or any(
            a.shape != b.shape for a, b in zip(current, previous)
        ):
            return False  # inputs changed shape: compute (the runtime would refuse the cache)
        change = torch.stack(
            [(a.float() - b.float()).abs().sum() for a, b in zip(current, previous)]
        )
        scale = torch.stack([b.float().abs().sum() for b in previous])
        # change / scale < threshold, without dividing (scale may be 0): one host sync
        return bool((change.sum() < self.config.threshold * scale.sum()).item())

    def boundaries(self) -> frozenset[int]:
        return frozenset({self.last})

    def residual_runs(self) -> dict[int, int]:
        return {self.last: 1}

    def memory_bytes(self) -> int:
        """The block-0 outputs kept for the comparison, one per branch."""
        return sum(t.numel() * t.element_size() for s in self._previous.values() for t in s)
