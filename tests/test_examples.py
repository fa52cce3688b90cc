"""Every first-party architecture ships an example (``ArchitectureSpec.example``) that fits it.

The contract checks themselves run on every registered architecture's example in
tests/test_architecture_contract.py; here: every first-party spec has one, each registered
example builds a model in eval mode that the registry matches to its own architecture
(so ``attach`` without ``architecture=`` finds the spec the contract ran on), its call
depends on the timestep only, and listing plugins imports none of them.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import blockdance

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
}


def test_every_first_party_architecture_has_an_example():
    registry = blockdance.default_registry()
    owned = {
        name: registry.architecture_owner(name)
        for name in registry.architectures
        if registry.architecture_owner(name) in set(FIRST_PARTY.values())
    }
    assert owned == FIRST_PARTY
    assert all(registry.architecture(name).example is not None for name in owned)


@pytest.mark.parametrize("name", sorted(blockdance.default_registry().architectures))
def test_example_builds_its_architecture_and_depends_on_t_only(name):
    registry = blockdance.default_registry()
    example_of = registry.architecture(name).example
    assert example_of is not None
    example = example_of()
    model, twin = example.build(), example.build()
    assert not model.training
    assert registry.match(model).name == name
    with torch.no_grad():
        out = example.call(model, 500)
        again = example.call(twin, 500)  # a fresh build: same weights, same inputs
        other = example.call(model, 400)
    assert isinstance(out, torch.Tensor) and torch.isfinite(out).all()
    assert torch.equal(out, again)
    assert not torch.equal(out, other)


def test_listing_architectures_imports_no_example():
    code = (
        "import sys, blockdance; blockdance.list_architectures(); "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('diffusers', 'timm') "
        "or m.endswith('.examples')]; print(heavy); assert not heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
