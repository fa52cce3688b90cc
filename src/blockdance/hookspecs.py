"""Hook specifications: the points where plugins extend blockdance.

A plugin is any module or object carrying functions marked with
:data:`blockdance.hookimpl` whose names match the specs below. First-party and
third-party plugins alike are discovered through the ``blockdance`` entry-point
group. Every hook runs when a registry is built or a model is attached — never per
block or per step — so plugins add no cost to generation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from argparse import _SubParsersAction

    from torch import nn

    from blockdance.architecture import ArchitectureSpec
    from blockdance.policy import Policy, PolicyConfig

PROJECT_NAME = "blockdance"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def blockdance_register_architectures(register: Callable[[ArchitectureSpec], None]) -> None:
    """Register the model families this plugin knows how to hook.

    Called once per plugin when the registry is built. Call ``register`` once for
    each :class:`~blockdance.ArchitectureSpec`; registering a name that another
    plugin already registered raises an error naming both plugins.

    Args:
        register: Callback taking one architecture spec.
    """


@hookspec
def blockdance_register_policies(
    register: Callable[[type[PolicyConfig], type[Policy]], None],
) -> None:
    """Register reuse-policy kinds.

    Called once per plugin when the registry is built. Call ``register`` with a
    frozen pydantic config class (whose ``kind`` field is a ``Literal`` naming the
    policy) and the :class:`~blockdance.Policy` subclass it configures. A kind that
    another plugin already registered raises an error naming both plugins.

    Args:
        register: Callback taking ``(config_class, policy_class)``.
    """


@hookspec
def blockdance_register_models(register: Callable[[str, Callable[..., nn.Module]], None]) -> None:
    """Register named model factories (for example ``"DiT-XL/2"``).

    Called once per plugin when the registry is built. The names become valid for
    :func:`blockdance.create_model`, the benchmark and the command line.

    Args:
        register: Callback taking ``(name, factory)``; ``factory(**kwargs)`` builds the model.
    """


@hookspec(historic=True)
def blockdance_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """Add hook specifications of your own to the plugin manager.

    A historic hook, as pytest's ``pytest_addhooks``: it runs for every plugin however late
    it is registered. The lab (``blockdance-lab``) adds its workload hook this way, so the
    core knows nothing of workloads. A plugin that implements a hook another plugin adds
    marks the implementation ``@blockdance.hookimpl(optionalhook=True)``, so it still loads
    where that plugin is not installed.

    Args:
        pluginmanager: The pluggy plugin manager; call its ``add_hookspecs(module)``.
    """


@hookspec
def blockdance_add_commands(subparsers: _SubParsersAction[Any]) -> None:
    """Add subcommands to the ``blockdance`` command line.

    Called once when the command line is built. Each command is an ``argparse`` parser
    made with ``subparsers.add_parser(name, help=...)`` whose ``func`` default takes the
    parsed arguments and returns the exit status. The core brings ``list``; the lab
    brings ``demo``, ``bench``, ``analyze``, ``calibrate`` and ``workloads``.

    Args:
        subparsers: The command line's ``add_subparsers()`` action.
    """


@hookspec(firstresult=True)
def blockdance_match_architecture(
    model: nn.Module, architectures: Sequence[ArchitectureSpec]
) -> ArchitectureSpec | None:
    """Choose the architecture for ``model``, overriding the default matching.

    Called once by :func:`blockdance.attach` when no architecture name is given.
    Stops at the first non-None result. When every implementation returns None,
    blockdance uses the single registered spec whose ``matches(model)`` is true.

    Args:
        model: The top-level model about to be attached.
        architectures: All registered specs, in registration order.

    Returns:
        The spec to use, or None to defer.
    """


def all_hookspec_names() -> list[str]:
    """Names of every hook defined in this module (used by the docs test)."""
    module_globals: dict[str, Any] = globals()
    return sorted(
        name
        for name, obj in module_globals.items()
        if name.startswith(f"{PROJECT_NAME}_") and hasattr(obj, f"{PROJECT_NAME}_spec")
    )
