"""The lab's hook: workloads. Added to blockdance's plugin manager by the lab's plugin.

A plugin that registers workloads marks the implementation
``@blockdance.hookimpl(optionalhook=True)`` and imports the lab inside it, so that the
plugin still loads where the lab is not installed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from blockdance.hookspecs import hookspec

if TYPE_CHECKING:
    from blockdance_lab.workload import Workload


@hookspec
def blockdance_register_workloads(register: Callable[[Workload], None]) -> None:
    """Register workloads: a model plus the loop that generates with it.

    Called once per plugin when the workloads are first read. ``blockdance demo``,
    ``bench``, ``analyze`` and ``calibrate`` run registered workloads by name.

    Args:
        register: Callback taking one :class:`~blockdance_lab.workload.Workload`.
    """
