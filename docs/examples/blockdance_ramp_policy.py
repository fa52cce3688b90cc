"""An example variant of a built-in policy: BlockDance whose groups grow along the window.

Structure settles as denoising goes on, so later steps can reuse more often. The first
``switch`` share of the reuse window is grouped by ``N`` as in BlockDance; the rest by
``N_late``. Each part starts with a cache step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar, Literal

from pydantic import Field

import blockdance
from blockdance import BlockDanceConfig, GenerationInfo, Policy, PolicyConfig
from blockdance.policies import BlockDancePolicy
from blockdance.policies.blockdance import window_steps


class RampConfig(BlockDanceConfig):
    """Configuration of the ``blockdance-ramp`` policy: BlockDance's options and two more."""

    kind: Literal["blockdance-ramp"] = "blockdance-ramp"  # type: ignore[assignment]
    N_late: int = Field(4, ge=1, description="Group size after the switch.")
    switch: float = Field(
        0.5, gt=0.0, lt=1.0, description="Share of the reuse window grouped by N; N_late after."
    )


class RampPolicy(BlockDancePolicy):
    """BlockDance with groups of ``N`` early in the window and of ``N_late`` after the switch."""

    config_class: ClassVar[type[BlockDanceConfig]] = RampConfig
    config: RampConfig

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)  # BlockDance's checks, boundary and step sets (groups of N)
        cfg = self.config
        num_steps = self.require_num_steps(info)
        steps = window_steps(info.default_window if cfg.window is None else cfg.window, num_steps)
        split = steps.start + math.ceil(cfg.switch * len(steps))
        parts = ((range(steps.start, split), cfg.N), (range(split, steps.stop), cfg.N_late))
        self.cache_steps = frozenset(s for r, n in parts for s in r if (s - r.start) % n == 0)
        self.reuse_steps = frozenset(s for r, n in parts for s in r if (s - r.start) % n != 0)


class RampPlugin:
    """Registers the ``blockdance-ramp`` policy kind."""

    @blockdance.hookimpl
    def blockdance_register_policies(
        self, register: Callable[[type[PolicyConfig], type[Policy]], None]
    ) -> None:
        register(RampConfig, RampPolicy)
