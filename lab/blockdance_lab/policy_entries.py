"""Policies as the lab's commands take them: ``--policy`` values and bench-file entries.

An entry is a registered kind name, a JSON policy file, or a mapping with ``kind``, its
options and (in bench files) a ``label``; ``diffusers:`` kinds are external caches
(:mod:`blockdance_lab.external`). ``blockdance demo`` and ``blockdance bench`` both read
entries here, label them and check that each builds before anything runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from blockdance import PolicyLike, Registry
from blockdance.errors import InvalidInputError
from blockdance_lab.external import is_external, parse_external

__all__ = ["PolicyEntry", "check_policies", "labelled", "parse_policy_arg"]

#: A kind name or JSON file path, or a mapping with ``kind``, options and an optional label.
PolicyEntry = str | Mapping[str, Any]


def parse_policy_arg(spec: str) -> PolicyEntry:
    """A ``--policy`` value: a JSON object when it starts with ``{``, else a name or a path.

    Raises:
        InvalidInputError: It starts with ``{`` but is not valid JSON.
    """
    if not spec.lstrip().startswith("{"):
        return spec
    try:
        data: dict[str, Any] = json.loads(spec)  # starts with "{": an object if it parses
    except json.JSONDecodeError as e:
        raise InvalidInputError(
            f"--policy {spec!r} is not valid JSON ({e.msg} at column {e.colno}); write an "
            'object such as \'{"kind": "blockdance", "N": 2}\', a kind name or a .json file'
        ) from None
    return data


def labelled(
    entries: Iterable[PolicyEntry], *, with_options: bool = True
) -> list[tuple[str, PolicyLike]]:
    """``(label, policy)`` for each entry.

    A name is its own label and a JSON file is labelled by its stem. A mapping is labelled
    by its ``label`` (which the policy does not get), else by its kind, followed by its
    options when ``with_options``.
    """
    pairs: list[tuple[str, PolicyLike]] = []
    for entry in entries:
        if isinstance(entry, str):
            pairs.append((Path(entry).stem if entry.endswith(".json") else entry, entry))
            continue
        options = {k: v for k, v in entry.items() if k != "label"}
        rest = ", ".join(f"{k}={v}" for k, v in options.items() if k != "kind")
        auto = f"{options.get('kind')} {rest if with_options else ''}".strip()
        pairs.append((str(entry.get("label") or auto), options))
    return pairs


def check_policies(registry: Registry, policies: Sequence[tuple[str, Any]]) -> None:
    """Build each policy once, so a bad name, option or file fails before anything runs."""
    for _, policy in policies:
        if is_external(policy):
            parse_external(policy)
        else:
            registry.make_policy(policy)
