"""The ``blockdance`` command line.

The core brings ``list``; plugins add commands through
:func:`~blockdance.hookspecs.blockdance_add_commands` (the lab adds ``demo``, ``bench``,
``analyze``, ``calibrate`` and ``workloads``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from blockdance._manager import BUILTIN_POLICIES_NAME, Registry, default_registry
from blockdance.errors import InvalidInputError

__all__ = ["build_parser", "main", "owner_label"]

#: Commands the lab (blockdance-lab) brings: named in the error when it is not installed.
LAB_COMMANDS = ("workloads", "demo", "bench", "analyze", "calibrate")


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
    """Print what the plugins registered, each entry with the plugin that registered it."""
    registry = default_registry()
    architectures = [
        (name, spec.description, owner_label(registry.architecture_owner(name)))
        for name, spec in registry.architectures.items()
    ]
    policies = []
    for kind, (config, _) in registry.policy_kinds.items():
        fields = ", ".join(f for f in config.model_fields if f != "kind") or "-"
        policies.append((kind, f"options: {fields}", owner_label(registry.policy_owner(kind))))
    print_sections([("architectures", architectures), ("policies", policies)])
    by_owner: dict[str, list[str]] = {}
    for name in registry.model_names:
        by_owner.setdefault(registry.model_owner(name), []).append(name)
    print("models:")
    for owner, names in by_owner.items():
        print(f"  {', '.join(names)}  [{owner_label(owner)}]")
    if not by_owner:
        print("  (none)")
    return 0


def build_parser(registry: Registry | None = None) -> argparse.ArgumentParser:
    """The parser: ``list`` and every command the plugins add.

    Args:
        registry: Whose plugins add commands (default: the process-wide registry).
    """
    parser = argparse.ArgumentParser(prog="blockdance", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="registered architectures, policies and models")
    p.set_defaults(func=cmd_list)
    (registry or default_registry()).pm.hook.blockdance_add_commands(subparsers=sub)
    return parser


def _commands(parser: argparse.ArgumentParser) -> set[str]:
    """The subcommand names of ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; invalid input (a bad policy file, say) is one line on stderr, exit 2."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _commands(parser)
    if argv and argv[0] in LAB_COMMANDS and argv[0] not in commands:
        print(
            f"blockdance {argv[0]}: this command comes with blockdance's lab, which is not "
            "installed; install it from a checkout with `pip install ./lab` (it brings "
            f"{', '.join(LAB_COMMANDS)})",
            file=sys.stderr,
        )
        return 2
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except InvalidInputError as e:
        print(f"blockdance {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
