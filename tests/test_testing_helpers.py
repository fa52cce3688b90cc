"""blockdance.testing's own helpers: make_registry and the BlockDance schedule check."""

from __future__ import annotations

import math
import types

import pluggy
import pytest
import torch

import blockdance
import blockdance.policies._common as common
import blockdance.policies.blockdance as blockdance_policy
from blockdance.testing import ArchitectureChecks, blockdance_reuse_steps, make_registry
from toymodel import ToyDenoiser, ToyPlugin

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


# -- the BlockDance schedule check ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("window", "num_steps", "n", "steps"),
    [
        # 25%-95% of 20: steps 5..18 (19/20 = 95% is outside); groups of 2 from 5
        ((0.25, 0.95), 20, 2, [6, 8, 10, 12, 14, 16, 18]),
        # 35%-90% of 20: 7..17 (0.35 * 20 is 7.000000000000001 in floats); groups of 3 from 7
        ((0.35, 0.9), 20, 3, [8, 9, 11, 12, 14, 15, 17]),
        # 10%-100% of 10: 1..9 (0.1 as a float is a hair above 1/10; the decimal counts)
        ((0.1, 1.0), 10, 2, [2, 4, 6, 8]),
        ((0.0, 1.0), 4, 1, []),
        ((0.4, 0.95), 12, 4, [6, 7, 8, 10, 11]),  # 4.8 -> 5..11 (11/12 < 0.95)
    ],
)
def test_blockdance_reuse_steps_by_hand(window, num_steps, n, steps):
    assert blockdance_reuse_steps(window, num_steps, n) == steps


def call(model: torch.nn.Module, t: int) -> torch.Tensor:
    x = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(t))
    return model(x, torch.full((2,), t))


def toy_checks(num_steps: int) -> ArchitectureChecks:
    return ArchitectureChecks(
        build=lambda: ToyDenoiser().eval(),
        call=call,
        num_steps=num_steps,
        registry=make_registry(ToyPlugin()),
    )


@pytest.mark.parametrize("num_steps", [12, 20])
@pytest.mark.parametrize("n", [2, 3])
def test_schedule_check_passes_on_the_policy_as_it_is(num_steps, n):
    toy_checks(num_steps).check_blockdance_schedule(n)


def late_by_one(fraction: float, num_steps: int) -> int:
    return math.ceil(fraction * num_steps - 1e-9) + 1


def stop_early(window: tuple[float, float], num_steps: int) -> range:
    right = common.window_steps(window, num_steps)
    return range(right.start, right.stop - 1)


@pytest.mark.parametrize(
    ("module", "name", "wrong"),
    [
        (common, "first_step", late_by_one),  # the shared arithmetic: policy and helpers
        (blockdance_policy, "window_steps", stop_early),  # what BlockDance calls
    ],
)
def test_schedule_check_fails_when_the_window_arithmetic_is_off_by_one(
    monkeypatch, module, name, wrong
):
    """The expected steps do not come from the policy's code, so its errors show."""
    monkeypatch.setattr(module, name, wrong)
    with pytest.raises(AssertionError, match="reused"):
        toy_checks(20).check_blockdance_schedule(2)
