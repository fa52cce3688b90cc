"""blockdance.testing's own helpers."""

from __future__ import annotations

import types

import pluggy
import pytest

import blockdance
from blockdance.testing import make_registry
from toymodel import ToyPlugin

# -- make_registry -----------------------------------------------------------------------------


class ExtraPolicies:
    @blockdance.hookimpl
    def blockdance_register_policies(self, register):
        class AlwaysConfig(blockdance.PolicyConfig):
            kind: str = "always-compute"

        class Always(blockdance.Policy[AlwaysConfig]):
            config_class = AlwaysConfig

            def decide(self, ctx, slot):
                return blockdance.Decision.COMPUTE

        register(AlwaysConfig, Always)


def test_make_registry_holds_the_builtin_policies_and_only_the_given_plugins():
    registry = make_registry(ToyPlugin())
    assert set(registry.architectures) == {"toy"}  # no installed entry point
    assert {"none", "blockdance", "schedule", "fora", "random"} <= set(registry.policy_kinds)
    assert make_registry().architectures == {}


def test_make_registry_names_plugins_canonically_or_as_given():
    toy, extra = ToyPlugin(), ExtraPolicies()
    registry = make_registry(toy, ("extra-policies", extra))
    assert registry.pm.get_plugin(registry.pm.get_canonical_name(toy)) is toy
    assert registry.pm.get_plugin("extra-policies") is extra
    assert "always-compute" in registry.policy_kinds


def test_make_registry_takes_a_module():
    module = types.ModuleType("toy_plugin_module")

    @blockdance.hookimpl
    def blockdance_register_architectures(register):
        ToyPlugin().blockdance_register_architectures(register)

    module.blockdance_register_architectures = blockdance_register_architectures
    registry = make_registry(module)
    assert registry.pm.get_plugin("toy_plugin_module") is module
    assert set(registry.architectures) == {"toy"}


def test_make_registry_is_fresh_each_call():
    first = make_registry(("toy", ToyPlugin()))
    second = make_registry()
    assert first.pm is not second.pm and second.pm.get_plugin("toy") is None


def test_make_registry_autoload_adds_installed_plugins():
    assert "dit" in make_registry(autoload=True).architectures


def test_make_registry_refuses_a_misspelt_hook():
    class Typo:
        @blockdance.hookimpl
        def blockdance_register_architecture(self, register):  # missing "s"
            pass

    with pytest.raises(pluggy.PluginValidationError, match="blockdance_register_architecture"):
        make_registry(ToyPlugin(), Typo())
