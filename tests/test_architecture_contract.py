"""blockdance.testing's contract checks on every registered architecture (issues 15, 16).

Parametrised over the registry, as timm parametrises over its model registry: each spec
brings a tiny instance (``ArchitectureSpec.example``), so a new plugin is checked without a
test of its own, and a spec without an example fails here. The plugins' own tests check
what is particular to their models (slots, streams, pipelines), not this contract again.
"""

from __future__ import annotations

import pytest

import blockdance
from blockdance.testing import ArchitectureChecks
from toymodel import toy_registry

REGISTRY = blockdance.default_registry()

#: The first-party architectures and the plugin (entry point) that registers each: the
#: three plugins and the tutorial's example plugin, all installed for the test run.
FIRST_PARTY = {
    "dit": "dit",
    "diffusers-dit": "dit",
    "pixart-alpha": "dit",
    "hunyuan-dit": "dit",
    "sd3": "mmdit",
    "flux": "mmdit",
    "hidream": "mmdit",
    "stdit": "stdit",
    "latte": "stdit",
    "encoder": "encoder",
}


def check_registered_architecture(registry: blockdance.Registry, name: str) -> None:
    """The whole contract on the example of the architecture registered as ``name``.

    The example's model must also be the one the registry matches to ``name``, so that
    ``attach`` without ``architecture=`` finds the spec the checks ran on.
    """
    spec = registry.architecture(name)
    owner = registry.architecture_owner(name)
    assert spec.example is not None, (
        f"architecture {name!r} (plugin {owner!r}) has no example: give its spec "
        "example=... returning blockdance.ArchitectureExample(build=..., call=...)"
    )
    matched = registry.match(spec.example().build()).name
    assert matched == name, (
        f"the example of architecture {name!r} (plugin {owner!r}) is matched as {matched!r}"
    )
    ArchitectureChecks.for_architecture(spec, registry).run_all()


def test_the_first_party_architectures_are_registered_by_their_plugins():
    owners = {name: REGISTRY.architecture_owner(name) for name in REGISTRY.architectures}
    assert {name: owners.get(name) for name in FIRST_PARTY} == FIRST_PARTY


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
