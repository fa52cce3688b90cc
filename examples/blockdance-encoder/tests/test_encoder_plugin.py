"""Tests of the tutorial's example plugin, run with the package installed."""

from __future__ import annotations

import blockdance_encoder
import pytest
import torch
from blockdance_encoder import ENCODER

import blockdance
from blockdance.testing import ArchitectureChecks, make_registry

# The spec's example: build() makes a tiny model, call(model, t) runs one step of it.
EXAMPLE = ENCODER.example()
build, call = EXAMPLE.build, EXAMPLE.call


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # tiny models: extra threads only add contention


def test_entry_point_is_installed():
    assert "encoder" in blockdance.list_architectures()
    assert "Encoder-Tiny" in blockdance.list_models()


def test_architecture_contract():
    ArchitectureChecks(build=build, call=call).run_all()


def test_none_is_identity():
    model = build()
    with torch.no_grad():
        ref = call(model, 500)
        with blockdance.attach(model, "none", num_steps=1) as handle:
            assert handle.architecture.name == "encoder"
            got = call(model, 500)
    assert torch.equal(ref, got)
    assert handle.stats.block_calls == len(model.layers)


def test_plugin_registered_in_a_test_registry():
    """No installation needed: a registry of the built-in policies and this module alone."""
    registry = make_registry(("encoder-under-test", blockdance_encoder))
    ArchitectureChecks(build=build, call=call, registry=registry).check_blockdance_schedule(2)
