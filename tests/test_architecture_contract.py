"""blockdance.testing's contract checks on every registered architecture (issue 15).

Parametrised over the registry, as timm parametrises over its model registry: each spec
brings a tiny instance (``ArchitectureSpec.example``), so a new plugin is checked without a
test of its own, and a spec without an example fails here.
"""

from __future__ import annotations

import pytest

import blockdance
from blockdance.testing import ArchitectureChecks

REGISTRY = blockdance.default_registry()


@pytest.mark.parametrize("name", sorted(REGISTRY.architectures))
def test_every_registered_architecture_keeps_the_contract(name: str) -> None:
    spec = REGISTRY.architecture(name)
    owner = REGISTRY.architecture_owner(name)
    assert spec.example is not None, (
        f"architecture {name!r} (plugin {owner!r}) has no example: give its spec "
        "example=... returning blockdance.ArchitectureExample(build=..., call=...)"
    )
    ArchitectureChecks.for_architecture(spec, REGISTRY).run_all()
