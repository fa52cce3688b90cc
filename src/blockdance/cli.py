"""The ``blockdance`` command line.

The core brings ``list``; plugins add commands through
:func:`~blockdance.hookspecs.blockdance_add_commands` (the lab adds ``demo``, ``bench``,
``analyze``, ``calibrate`` and ``workloads``). Every command takes ``--plugin MODULE[:OBJECT]``
to register a plugin that is not installed before it runs.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import inspect
import json
import os
import shutil
import sys
import textwrap
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pluggy
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from blockdance._manager import (
    BUILTIN_POLICIES_NAME,
    ENTRYPOINT_GROUP,
    Registry,
    default_registry,
    register_plugin,
)
from blockdance.errors import InvalidInputError, PluginClashError, listing
from blockdance.policy import PolicyConfig

__all__ = [
    "PluginOptionError",
    "build_parser",
    "load_plugin",
    "main",
    "owner_label",
    "policy_options",
]

#: Commands the lab (blockdance-lab) brings: named in the error when it is not installed.
LAB_COMMANDS = ("workloads", "demo", "bench", "analyze", "calibrate")

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


def owner_label(name: str) -> str:
    """How the command line names the plugin that registered an entry."""
    return "built-in" if name == BUILTIN_POLICIES_NAME else f"plugin {name}"


def print_sections(sections: Sequence[tuple[str, Sequence[tuple[str, str, str]]]]) -> None:
    """Print titled rows ``(name, text, owner)`` in aligned columns."""
    width = max((len(name) for _, rows in sections for name, _, _ in rows), default=0) + 2
    for title, rows in sections:
        print(f"{title}:")
        for name, text, owner in rows:
            print(f"  {name:<{width}}{text}  [{owner}]")
        if not rows:
            print("  (none)")


# -- --plugin ------------------------------------------------------------------------------------
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


def _add_plugin_option(parser: argparse.ArgumentParser, level: int = 0) -> None:
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
                    _add_plugin_option(sub, level + 1)


def _plugins_in(args: argparse.Namespace) -> list[str]:
    """The ``--plugin`` values of a parsed command line, those before the command first."""
    levels = sorted(k for k in vars(args) if k.startswith(_PLUGIN_DEST))
    return [spec for k in levels for spec in getattr(args, k)]


def _prescan(argv: Sequence[str]) -> tuple[list[str], list[str]]:
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


# -- list ------------------------------------------------------------------------------------------
def type_name(annotation: object) -> str:
    """A type annotation as it reads in source: ``int | None``, ``dict[int, Blocks]``."""
    if annotation is None or annotation is type(None):
        return "None"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        base = getattr(origin, "__qualname__", None) or str(origin).replace("typing.", "")
        return f"{base}[{inner}]" if args else base
    if isinstance(annotation, type):
        return annotation.__qualname__
    return str(annotation).replace("typing.", "")


_BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "multiple_of": "multiple of"}
_LENGTHS = {"min_length": "min length", "max_length": "max length"}


def _constraints(field: FieldInfo) -> list[str]:
    """A field's constraints (``>= 1``, ``< 1.0``) from its metadata."""
    out = []
    for meta in field.metadata:
        found = False
        for attr, text in {**_BOUNDS, **_LENGTHS}.items():
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{text} {value}")
                found = True
        if not found:
            out.append(repr(meta))
    return out


def _default(field: FieldInfo) -> tuple[bool, object]:
    """``(required, default)``; a default factory is called (``{}`` for ``dict``)."""
    if field.is_required():
        return True, None
    if field.default_factory is not None:
        try:
            return False, field.get_default(call_default_factory=True, validated_data={})
        except Exception:
            factory = getattr(field.default_factory, "__name__", "factory")
            return False, f"<{factory}()>"
    return False, None if field.default is PydanticUndefined else field.default


def policy_options(config_class: type[PolicyConfig]) -> list[dict[str, Any]]:
    """The options of a policy config class, ``kind`` left out.

    Returns:
        One dict per field: ``name``, ``type`` (the annotation as source text),
        ``constraints`` (``[">= 1"]``), ``required``, ``default`` (None when required) and
        ``description`` (None when the field has none).
    """
    rows = []
    for name, field in config_class.model_fields.items():
        if name == "kind":
            continue
        required, default = _default(field)
        rows.append(
            {
                "name": name,
                "type": type_name(field.annotation),
                "constraints": _constraints(field),
                "required": required,
                "default": default,
                "description": field.description,
            }
        )
    return rows


def _distribution(pm: pluggy.PluginManager, name: str) -> importlib.metadata.Distribution | None:
    """The distribution whose ``blockdance`` entry point ``name`` is the plugin registered."""
    plugin = pm.get_plugin(name)
    for ep in importlib.metadata.entry_points(group=ENTRYPOINT_GROUP, name=name):
        try:
            loaded = ep.load()
        except Exception:
            continue
        if loaded is plugin and ep.dist is not None:
            return ep.dist
    return None


def plugin_source(registry: Registry, name: str) -> dict[str, str | None]:
    """Where a registered plugin comes from.

    Returns:
        ``distribution`` and ``version`` (for an installed entry point or the built-ins, else
        None), ``object`` (the module or ``module.Class`` instance registered) and ``file``.
    """
    pm = registry.pm
    plugin = pm.get_plugin(name)
    module = plugin if isinstance(plugin, types.ModuleType) else inspect.getmodule(type(plugin))
    what = (
        plugin.__name__
        if isinstance(plugin, types.ModuleType)
        else f"{type(plugin).__module__}.{type(plugin).__qualname__} instance"
    )
    dist = _distribution(pm, name)
    dist_name, version = (dist.metadata["Name"], dist.version) if dist is not None else (None, None)
    if name == BUILTIN_POLICIES_NAME:
        dist_name, version = "blockdance", _version("blockdance")
    return {
        "distribution": dist_name,
        "version": version,
        "object": what,
        "file": getattr(module, "__file__", None),
    }


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def list_data(registry: Registry) -> dict[str, Any]:
    """What ``blockdance list --json`` prints: plugins, architectures, policies, models."""
    plugins = [
        {"name": name, **plugin_source(registry, name)}
        for name, plugin in registry.pm.list_name_plugin()
        if plugin is not None  # a blocked name
    ]
    return {
        "plugins": plugins,
        "architectures": [
            {"name": n, "description": s.description, "plugin": registry.architecture_owner(n)}
            for n, s in registry.architectures.items()
        ],
        "policies": [
            {
                "kind": kind,
                "config": f"{config.__module__}.{config.__qualname__}",
                "plugin": registry.policy_owner(kind),
                "options": policy_options(config),
            }
            for kind, (config, _) in registry.policy_kinds.items()
        ],
        "models": [{"name": n, "plugin": registry.model_owner(n)} for n in registry.model_names],
    }


def _source_text(source: dict[str, Any]) -> str:
    """``blockdance-dit 0.1.0: blockdance_dit.plugin``, or the object and its file."""
    if source["distribution"]:
        return f"{source['distribution']} {source['version'] or ''}".rstrip() + (
            f": {source['object']}"
        )
    return f"{source['object']}" + (f" ({source['file']})" if source["file"] else "")


def _option_lines(options: list[dict[str, Any]], indent: int) -> list[str]:
    """An option per line (name, type and constraints, default), its description below."""
    if not options:
        return []
    name_w = max(len(o["name"]) for o in options) + 2
    types_ = [
        o["type"] + (f" ({', '.join(o['constraints'])})" if o["constraints"] else "")
        for o in options
    ]
    type_w = max(len(t) for t in types_) + 2
    pad = " " * indent
    width = max(shutil.get_terminal_size((100, 24)).columns, 60)
    lines = []
    for option, type_text in zip(options, types_):
        default = "required" if option["required"] else f"default {option['default']!r}"
        lines.append(f"{pad}{option['name']:<{name_w}}{type_text:<{type_w}}{default}")
        if option["description"]:
            lines += textwrap.wrap(
                option["description"],
                width=width,
                initial_indent=pad + " " * name_w,
                subsequent_indent=pad + " " * name_w,
            )
    return lines


def cmd_list(args: argparse.Namespace) -> int:
    """Print what the plugins registered, each entry with the plugin that registered it, and
    each policy's options with their types and defaults."""
    registry = default_registry()
    data = list_data(registry)
    if args.json:
        print(json.dumps(to_jsonable_python(data, fallback=repr), indent=2))
        return 0
    print("plugins:")
    names = [owner_label(p["name"]).removeprefix("plugin ") for p in data["plugins"]]
    plugin_w = max(map(len, names), default=0) + 2
    for name, plugin in zip(names, data["plugins"]):
        print(f"  {name:<{plugin_w}}{_source_text(plugin)}")
    width = (
        max(
            (
                len(e[key])
                for section, key in (("architectures", "name"), ("policies", "kind"))
                for e in data[section]
            ),
            default=0,
        )
        + 2
    )
    print("architectures:")
    for arch in data["architectures"]:
        print(f"  {arch['name']:<{width}}{arch['description']}  [{owner_label(arch['plugin'])}]")
    if not data["architectures"]:
        print("  (none)")
    print("policies:")
    for policy in data["policies"]:
        fields = ", ".join(o["name"] for o in policy["options"]) or "-"
        label = owner_label(policy["plugin"])
        print(f"  {policy['kind']:<{width}}options: {fields}  [{label}]")
        for line in _option_lines(policy["options"], indent=6):
            print(line)
    if not data["policies"]:
        print("  (none)")
    by_owner: dict[str, list[str]] = {}
    for model in data["models"]:
        by_owner.setdefault(model["plugin"], []).append(model["name"])
    print("models:")
    for owner, models in by_owner.items():
        print(f"  {', '.join(models)}  [{owner_label(owner)}]")
    if not by_owner:
        print("  (none)")
    return 0


def build_parser(registry: Registry | None = None) -> argparse.ArgumentParser:
    """The parser: ``list`` and every command the plugins add, each taking ``--plugin``.

    Args:
        registry: Whose plugins add commands (default: the process-wide registry).
    """
    parser = argparse.ArgumentParser(prog="blockdance", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "list",
        help="registered plugins, architectures, policies (with their options) and models",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a listing")
    p.set_defaults(func=cmd_list)
    (registry or default_registry()).pm.hook.blockdance_add_commands(subparsers=sub)
    _add_plugin_option(parser)
    return parser


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    """The subcommand names of ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def _fail(command: str, error: Exception) -> int:
    print(f"blockdance{command}: error: {error}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; invalid input (a bad policy file, a bad ``--plugin``) is one line on
    stderr, exit 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    specs, rest = _prescan(argv)
    try:
        for spec in specs:  # before the parser is built: a plugin may add a command
            load_plugin(spec)
    except PluginOptionError as e:
        return _fail("", e)
    parser = build_parser()
    commands = _commands(parser)
    if rest and rest[0] in LAB_COMMANDS and rest[0] not in commands:
        print(
            f"blockdance {rest[0]}: this command comes with blockdance's lab, which is not "
            "installed; install it from a checkout with `pip install ./lab` (it brings "
            f"{', '.join(LAB_COMMANDS)})",
            file=sys.stderr,
        )
        return 2
    args = parser.parse_args(argv)
    try:
        for spec in _plugins_in(args):  # an abbreviated option (--plug) the prescan missed
            load_plugin(spec)
        return int(args.func(args))
    except InvalidInputError as e:
        return _fail(f" {args.command}", e)


if __name__ == "__main__":
    sys.exit(main())
