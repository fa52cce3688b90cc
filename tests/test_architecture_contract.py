"""blockdance.testing's contract checks on every registered architecture (issues 15, 16).

Parametrised over the registry, as timm parametrises over its model registry: each spec
brings a tiny instance (``ArchitectureSpec.example``), so a new plugin is checked without a
test of its own, and a spec without an example fails here. tests/test_examples.py checks
the examples themselves (each builds a model matched to its own architecture); the plugins'
own tests check what is particular to their models (slots, streams, pipelines).
"""

from __future__ import annotations

import pytest

import blockdance
from blockdance.testing import ArchitectureChecks
from toymodel import toy_registry

REGISTRY = blockdance.default_registry()


def check_registered_architecture(registry: blockdance.Registry, name: str) -> None:
    """The whole contract on the example of the architecture registered as ``name``."""
    spec = registry.architecture(name)
    owner = registry.architecture_owner(name)
    assert spec.example is not None, (
        f"architecture {name!r} (plugin {owner!r}) has no example: give its spec "
        "example=... returning blockdance.ArchitectureExample(build=..., call=...)"
    )
    ArchitectureChecks.for_architecture(spec, registry).run_all()


@pytest.mark.parametrize("name", sorted(REGISTRY.architectures))
def test_every_registered_architecture_keeps_the_contract(name: str) -> None:
    check_registered_architecture(REGISTRY, name)


def test_an_architecture_without_an_example_fails_and_is_named():
    """Not a skip: a plugin whose spec has no example fails the run, naming spec and plugin."""
    registry = toy_registry()  # the toy spec declares no example
    assert registry.architecture("toy").example is None
    try:
        check_registered_architecture(registry, "toy")
    except BaseException as error:  # pytest's skip is a BaseException, not an Exception
        failure = error
    else:
        raise AssertionError("an architecture without an example passed the contract test")
    assert type(failure) is AssertionError
    assert "architecture 'toy' (plugin 'toy-plugin') has no example" in str(failure)
