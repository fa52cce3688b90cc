"""Built-in reuse policies, registered through blockdance's own plugin hook."""

from __future__ import annotations

from collections.abc import Callable

from blockdance.hookspecs import hookimpl
from blockdance.policies.ada import AdaConfig, AdaPolicy
from blockdance.policies.adaptive import (
    AdaptiveConfig,
    AdaptivePolicy,
)
from blockdance.policies.blockdance import BlockDanceConfig, BlockDancePolicy
from blockdance.policies.dbcache import DBCacheConfig, DBCachePolicy
from blockdance.policies.deepcache import DeepCacheConfig, DeepCachePolicy
from blockdance.policies.delta_dit import DeltaDiTConfig, DeltaDiTPolicy
from blockdance.policies.first_block_cache import FirstBlockCacheConfig, FirstBlockCachePolicy
from blockdance.policies.fora import ForaConfig, ForaPolicy
from blockdance.policies.forecast import (
    ForecastConfig,
    ForecastPolicy,
    TaylorSeerConfig,
    TaylorSeerPolicy,
)
from blockdance.policies.magcache import MagCacheConfig, MagCachePolicy
from blockdance.policies.none import NoneConfig, NonePolicy
from blockdance.policies.random_reuse import RandomConfig, RandomPolicy
from blockdance.policies.schedule import ScheduleConfig, SchedulePolicy
from blockdance.policies.step_set import StepSetPolicy, window_steps
from blockdance.policy import Policy, PolicyConfig

__all__ = [
    "AdaptiveConfig",
    "AdaptivePolicy",
    "BlockDanceConfig",
    "BlockDancePolicy",
    "DBCacheConfig",
    "DBCachePolicy",
    "DeepCacheConfig",
    "DeepCachePolicy",
    "DeltaDiTConfig",
    "DeltaDiTPolicy",
    "FirstBlockCacheConfig",
    "FirstBlockCachePolicy",
    "ForaConfig",
    "ForaPolicy",
    "ForecastConfig",
    "ForecastPolicy",
    "MagCacheConfig",
    "MagCachePolicy",
    "NoneConfig",
    "NonePolicy",
    "RandomConfig",
    "RandomPolicy",
    "ScheduleConfig",
    "SchedulePolicy",
    "StepSetPolicy",
    "TaylorSeerConfig",
    "TaylorSeerPolicy",
    "window_steps",
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
        register(ForaConfig, ForaPolicy)
        register(DeepCacheConfig, DeepCachePolicy)
        register(DeltaDiTConfig, DeltaDiTPolicy)
        register(FirstBlockCacheConfig, FirstBlockCachePolicy)
        register(RandomConfig, RandomPolicy)
        register(ForecastConfig, ForecastPolicy)
        register(TaylorSeerConfig, TaylorSeerPolicy)
        register(MagCacheConfig, MagCachePolicy)
        register(DBCacheConfig, DBCachePolicy)
        register(AdaConfig, AdaPolicy)
        register(AdaptiveConfig, AdaptivePolicy)
