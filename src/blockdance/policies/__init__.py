"""Built-in reuse policies, registered through blockdance's own plugin hook."""

from __future__ import annotations

from collections.abc import Callable

from blockdance.hookspecs import hookimpl
from blockdance.policies.blockdance import BlockDanceConfig, BlockDancePolicy
from blockdance.policies.none import NoneConfig, NonePolicy
from blockdance.policies.schedule import ScheduleConfig, SchedulePolicy
from blockdance.policy import Policy, PolicyConfig

__all__ = [
    "BlockDanceConfig",
    "BlockDancePolicy",
    "NoneConfig",
    "NonePolicy",
    "ScheduleConfig",
    "SchedulePolicy",
]


class BuiltinPolicies:
    """The core's policy plugin (registered by the plugin manager, not an entry point)."""

    @hookimpl
    def blockdance_register_policies(
        self, register: Callable[[type[PolicyConfig], type[Policy]], None]
    ) -> None:
        register(NoneConfig, NonePolicy)
        register(BlockDanceConfig, BlockDancePolicy)
        register(ScheduleConfig, SchedulePolicy)
