"""The ``blockdance`` command line.

The core brings ``list``; plugins add commands through
:func:`~blockdance.hookspecs.blockdance_add_commands` (the lab adds ``demo``, ``bench``,
``analyze``, ``calibrate`` and ``workloads``). Every command takes ``--plugin MODULE[:OBJECT]``
to register a plugin that is not installed before it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pydantic_core import to_jsonable_python

from blockdance._listing import list_data, option_lines, policy_options, source_text
from blockdance._manager import (
    BUILTIN_POLICIES_NAME,
    Registry,
    default_registry,
)
from blockdance._plugin_option import (
    PluginOptionError,
    add_plugin_option,
    load_plugin,
    plugins_in,
    prescan,
)
from blockdance.errors import InvalidInputError

__all__ = [
    "PluginOptionError",
    "build_parser",
    "load_plugin",
    "main",
    "owner_label",
    "policy_options",
]

#: Commands the lab (blockdance-lab) brings: named in the error when it is not installed.
LAB_COMMANDS = (
    "workloads",
    "demo",
    "bench",
    "analyze",
    "calibrate",
    "magcache-calibrate",
    "train-ada",
)


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
        print(f"  {name:<{plugin_w}}{source_text(plugin)}")
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
        for line in option_lines(policy["options"], indent=6):
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
    add_plugin_option(parser)
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
    specs, rest = prescan(argv)
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
        for spec in plugins_in(args):  # an abbreviated option (--plug) the prescan missed
            load_plugin(spec)
        return int(args.func(args))
    except InvalidInputError as e:
        return _fail(f" {args.command}", e)


if __name__ == "__main__":
    sys.exit(main())
