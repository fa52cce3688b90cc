"""The lab's plugin: its hook, its commands and the zoo's workloads.

Found through the ``blockdance`` entry-point group like any plugin; importing it costs
nothing heavy (the commands and the zoo import their modules when they run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

import blockdance
from blockdance_lab import hookspecs

if TYPE_CHECKING:
    from blockdance_lab.workload import Workload


@blockdance.hookimpl
def blockdance_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@blockdance.hookimpl
def blockdance_add_commands(subparsers: Any) -> None:
    from blockdance_lab.cli import add_commands

    add_commands(subparsers)


@blockdance.hookimpl
def blockdance_register_workloads(register: Callable[[Workload], None]) -> None:
    from blockdance_lab.zoo.workloads import WORKLOADS

    for workload in WORKLOADS:
        register(workload)
