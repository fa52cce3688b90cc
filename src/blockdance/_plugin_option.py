"""``--plugin MODULE[:OBJECT]``: register a plugin that is not installed, on every command."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import inspect
import os
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import pluggy

from blockdance._manager import (
    Registry,
    default_registry,
    register_plugin,
)
from blockdance.errors import InvalidInputError, PluginClashError, listing

PLUGIN_OPTION = "--plugin"
#: Namespace attributes that hold ``--plugin`` values, one per parser level (``_0`` before the
#: command, ``_1`` after it ...): argparse copies a subcommand's namespace over its parent's,
#: so a shared attribute would drop the values given before the command.
_PLUGIN_DEST = "blockdance_plugins_"
PLUGIN_HELP = (
    "register a plugin that is not installed before the command runs: MODULE:OBJECT names "
    "a module-level object carrying @blockdance.hookimpl functions (an instance, a class, "
    "which is instantiated without arguments, or a module), MODULE alone registers the module "
    "itself. The working directory is put on sys.path first, so ./my_policy.py is "
    "--plugin my_policy:PLUGIN. Repeatable; accepted before or after the command"
)


class PluginOptionError(InvalidInputError):
    """A ``--plugin`` value names no importable module, no object, or no plugin."""


def _hook_names(pm: pluggy.PluginManager) -> list[str]:
    """The hooks a plugin can implement: the core's and those other plugins added."""
    return sorted(
        name
        for name, caller in vars(pm.hook).items()
        if name.startswith("blockdance_") and getattr(caller, "spec", None) is not None
    )


def _implemented_hooks(pm: pluggy.PluginManager, obj: object) -> list[str]:
    """Names of ``obj``'s attributes marked ``@blockdance.hookimpl`` (as pluggy reads them)."""
    found = []
    for name in dir(obj):
        try:
            if pm.parse_hookimpl_opts(obj, name) is not None:
                found.append(name)
        except Exception:  # an attribute whose getter raises is no hook implementation
            continue
    return found


def _where(module: types.ModuleType) -> str:
    """A module's name and file, for messages."""
    path = getattr(module, "__file__", None)
    return f"module {module.__name__!r}" + (f" ({path})" if path else "")


def _public_names(module: types.ModuleType) -> list[str]:
    """The names a module defines for use: ``__all__``, else its non-underscore names less
    submodules, typing constructs, and classes and functions imported from elsewhere."""
    exported = getattr(module, "__all__", None)
    if exported is not None:
        return [str(name) for name in exported]
    names = []
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        defined_in = getattr(value, "__module__", module.__name__)
        if defined_in in ("typing", "typing_extensions", "__future__") or (
            (inspect.isclass(value) or inspect.isroutine(value)) and defined_in != module.__name__
        ):
            continue
        names.append(name)
    return names


def _import(spec: str, module_name: str) -> types.ModuleType:
    """Import ``module_name`` with the working directory on ``sys.path``."""
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        stem = Path(module_name).stem
        raise PluginOptionError(
            f"--plugin {spec}: {module_name!r} is a file path, but --plugin takes a module "
            f"name: run from the file's folder (or put it on PYTHONPATH) and give "
            f"--plugin {stem}:OBJECT"
        )
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    importlib.invalidate_caches()  # a file written since the last import is found
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            top = module_name.split(".")[0]
            raise PluginOptionError(
                f"--plugin {spec}: cannot import module {module_name!r}: {e}. Searched the "
                f"working directory ({cwd}) and sys.path; put {top}.py (or the package "
                f"folder {top}/) in the working directory, add its folder to PYTHONPATH, "
                "or install the distribution that provides it"
            ) from None
        raise PluginOptionError(
            f"--plugin {spec}: module {module_name!r} was found but importing it failed: "
            f"{type(e).__name__}: {e}; install what it imports"
        ) from None
    except Exception as e:  # a syntax error, an exception at import time
        raise PluginOptionError(
            f"--plugin {spec}: importing module {module_name!r} failed: {type(e).__name__}: {e}"
        ) from None


def _resolve(spec: str, module: types.ModuleType, attr: str) -> object:
    """``module.attr`` (dotted), or an error listing what the module offers."""
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = _public_names(module)
            pm = default_registry().pm
            plugins = [n for n in names if _implemented_hooks(pm, getattr(module, n, None))]
            offered = listing(names) if names else "(none)"
            hint = f"; of these, {', '.join(plugins)} implement blockdance hooks" if plugins else ""
            raise PluginOptionError(
                f"--plugin {spec}: {_where(module)} has no attribute {attr!r}; its public "
                f"names: {offered}{hint}. Give --plugin {module.__name__}:NAME"
            ) from None
    return obj


def load_plugin(spec: str) -> Registry:
    """Register the plugin named by a ``--plugin`` value in the process-wide registry.

    ``MODULE:OBJECT`` imports ``MODULE`` (the working directory first on ``sys.path``) and
    registers its attribute ``OBJECT`` (dotted names allowed); a class is instantiated without
    arguments. ``MODULE`` alone registers the module. The plugin's name is ``spec`` itself,
    which ``blockdance list`` shows beside what it registered. A value already registered is
    not registered again.

    Args:
        spec: ``MODULE`` or ``MODULE:OBJECT``.

    Returns:
        The rebuilt process-wide registry.

    Raises:
        PluginOptionError: The module cannot be imported, has no such object, the object
            implements no blockdance hook, or registering it fails (a misspelt hook, a name
            another plugin registered).
    """
    spec = spec.strip()
    module_name, sep, attr = spec.partition(":")
    if not module_name or (sep and not attr):
        raise PluginOptionError(
            f"--plugin {spec!r}: give MODULE or MODULE:OBJECT, e.g. --plugin my_policy:PLUGIN"
        )
    pm = default_registry().pm
    if pm.get_plugin(spec) is not None:
        return default_registry()
    if pm.is_blocked(spec):
        raise PluginOptionError(
            f"--plugin {spec}: the plugin name {spec!r} is blocked (BLOCKDANCE_BLOCK_PLUGINS); "
            "remove it from that variable"
        )
    module = _import(spec, module_name)
    obj = _resolve(spec, module, attr) if attr else module
    what = f"{module_name}.{attr}" if attr else _where(module)
    is_class = isinstance(obj, type)
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as e:
            raise PluginOptionError(
                f"--plugin {spec}: {what} is a class and instantiating it without arguments "
                f"failed ({type(e).__name__}: {e}); name an instance instead, e.g. "
                f"PLUGIN = {attr.split('.')[-1]}(...) in {module_name} and --plugin "
                f"{module_name}:PLUGIN"
            ) from None
    if not _implemented_hooks(pm, obj):
        unmarked = [n for n in dir(obj) if n.startswith("blockdance_")]
        hint = (
            f" ({', '.join(unmarked)} is named like a hook but lacks the @blockdance.hookimpl "
            "marker)"
            if unmarked
            else ""
        )
        if is_class:
            kind = " (a class)"
        elif isinstance(obj, types.ModuleType):
            kind = ""
        else:
            kind = f" (an instance of {type(obj).__name__})"
        raise PluginOptionError(
            f"--plugin {spec}: {what}{kind} is not a blockdance plugin: it "
            f"implements no hook{hint}. A plugin is a module, class or instance with functions "
            f"marked @blockdance.hookimpl and named after a hook: {', '.join(_hook_names(pm))} "
            "(docs/plugin-hooks.md)"
        )
    existing = pm.get_name(obj)
    if existing is not None:
        raise PluginOptionError(
            f"--plugin {spec}: {what} is already registered as plugin {existing!r} (an "
            "installed entry point, or an earlier --plugin); drop this --plugin"
        )
    try:
        return register_plugin(obj, name=spec)
    except (pluggy.PluginValidationError, PluginClashError) as e:
        message = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise PluginOptionError(f"--plugin {spec}: {message}") from None
    except Exception as e:  # a hook that raises while the registry is built
        raise PluginOptionError(
            f"--plugin {spec}: registering {what} failed: {type(e).__name__}: {e}"
        ) from None


def add_plugin_option(parser: argparse.ArgumentParser, level: int = 0) -> None:
    """Give ``parser`` and every subcommand parser below it the ``--plugin`` option.

    A parser that already defines ``--plugin`` itself keeps its own.
    """
    if PLUGIN_OPTION not in parser._option_string_actions:
        parser.add_argument(
            PLUGIN_OPTION,
            dest=f"{_PLUGIN_DEST}{level}",
            action="append",
            default=argparse.SUPPRESS,
            metavar="MODULE[:OBJECT]",
            help=PLUGIN_HELP,
        )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for sub in action.choices.values():  # aliases map to the same parser
                if id(sub) not in seen:
                    seen.add(id(sub))
                    add_plugin_option(sub, level + 1)


def plugins_in(args: argparse.Namespace) -> list[str]:
    """The ``--plugin`` values of a parsed command line, those before the command first."""
    levels = sorted(k for k in vars(args) if k.startswith(_PLUGIN_DEST))
    return [spec for k in levels for spec in getattr(args, k)]


def prescan(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The ``--plugin`` values anywhere in ``argv``, and the other arguments.

    Read before the parser is built, so a plugin given this way can add a command. A
    malformed ``--plugin`` (no value) is left to the full parser to report.
    """
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    pre.add_argument(PLUGIN_OPTION, action="append", default=[])
    try:
        known, rest = pre.parse_known_args(list(argv))
    except argparse.ArgumentError:
        return [], list(argv)
    return list(known.plugin), rest
