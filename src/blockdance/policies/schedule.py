"""The ``schedule`` policy: an explicit table of which blocks each step reuses."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from blockdance.policy import Decision, GenerationInfo, Policy, PolicyConfig, StepContext


def _parse_blocks(spec: Any) -> list[int]:
    """Expand ``[0, "3-5", 9]`` into ``[0, 3, 4, 5, 9]``."""
    if isinstance(spec, (int, str)):
        spec = [spec]
    out: list[int] = []
    for item in spec:
        if isinstance(item, str) and "-" in item.strip().lstrip("-"):
            lo, hi = (int(p) for p in item.split("-", 1))
            if hi < lo:
                raise ValueError(f"block range {item!r} is empty")
            out.extend(range(lo, hi + 1))
        else:
            out.append(int(item))
    return out


class ScheduleConfig(PolicyConfig):
    """Configuration of the ``schedule`` policy.

    ``reuse`` maps a step index to the blocks reused at that step, as integers or
    ranges such as ``"0-20"``. The last block of each contiguous run is a reuse
    boundary: its output is cached whenever it computes and substituted when reused.
    """

    kind: Literal["schedule"] = "schedule"
    reuse: dict[int, tuple[int, ...]] = Field(
        default_factory=dict, description="Step index -> reused block indices."
    )

    @field_validator("reuse", mode="before")
    @classmethod
    def _expand(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        return {step: tuple(sorted(set(_parse_blocks(blocks)))) for step, blocks in v.items()}

    @field_validator("reuse")
    @classmethod
    def _check(cls, v: dict[int, tuple[int, ...]]) -> dict[int, tuple[int, ...]]:
        for step, blocks in v.items():
            if step < 0 or any(b < 0 for b in blocks):
                raise ValueError(f"step {step}: steps and blocks must be >= 0, got {blocks}")
        return v


def runs(blocks: tuple[int, ...]) -> list[tuple[int, int]]:
    """Contiguous ``(first, last)`` runs of sorted block indices."""
    out: list[tuple[int, int]] = []
    for b in blocks:
        if out and b == out[-1][1] + 1:
            out[-1] = (out[-1][0], b)
        else:
            out.append((b, b))
    return out


class SchedulePolicy(Policy[ScheduleConfig]):
    """Reuse exactly the (step, block) pairs listed in the configuration."""

    config_class = ScheduleConfig

    def __init__(self, config: ScheduleConfig) -> None:
        super().__init__(config)
        self.table = {step: frozenset(blocks) for step, blocks in config.reuse.items()}
        self._boundaries = frozenset(
            last for blocks in config.reuse.values() for _, last in runs(blocks)
        )

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        for step, blocks in self.config.reuse.items():
            if info.num_steps is not None and step >= info.num_steps:
                raise ValueError(
                    f"schedule lists step {step}, but the generation has {info.num_steps} steps"
                )
            if blocks and blocks[-1] >= info.num_blocks:
                raise ValueError(
                    f"schedule step {step} reuses block {blocks[-1]}, but the model has "
                    f"{info.num_blocks} blocks (0..{info.num_blocks - 1})"
                )

    def decide(self, ctx: StepContext, slot: int) -> Decision:
        reused = self.table.get(ctx.step)
        if reused is not None and slot in reused:
            return Decision.REUSE
        return Decision.COMPUTE

    def boundaries(self) -> frozenset[int]:
        return self._boundaries
