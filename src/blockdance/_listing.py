"""What ``blockdance list`` shows: each entry's plugin and source, each policy's options."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import shutil
import textwrap
import types
import typing
from typing import Any

import pluggy
from pydantic.fields import FieldInfo
from pydantic.functional_validators import (
    AfterValidator,
    BeforeValidator,
    PlainValidator,
    WrapValidator,
)
from pydantic_core import PydanticUndefined

from blockdance._manager import (
    BUILTIN_POLICIES_NAME,
    ENTRYPOINT_GROUP,
    Registry,
)
from blockdance.policy import PolicyConfig


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


_VALIDATORS = (AfterValidator, BeforeValidator, PlainValidator, WrapValidator)


def _constraints(field: FieldInfo) -> list[str]:
    """A field's constraints (``>= 1``, ``< 1.0``) from its metadata."""
    out = []
    for meta in field.metadata:
        if isinstance(meta, _VALIDATORS):
            continue  # code, not a bound: the field's description states its rule
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


def source_text(source: dict[str, Any]) -> str:
    """``blockdance-dit 0.1.0: blockdance_dit.plugin``, or the object and its file."""
    if source["distribution"]:
        return f"{source['distribution']} {source['version'] or ''}".rstrip() + (
            f": {source['object']}"
        )
    return f"{source['object']}" + (f" ({source['file']})" if source["file"] else "")


def option_lines(options: list[dict[str, Any]], indent: int) -> list[str]:
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
