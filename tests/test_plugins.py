"""Plugin manager, registry and error messages."""

from __future__ import annotations

from collections.abc import Callable

import pluggy
import pytest
import torch
from pydantic import ValidationError

import blockdance
from blockdance import ArchitectureSpec, _manager
from blockdance._manager import DISABLE_AUTOLOAD_ENV
from blockdance.testing import make_registry
from toymodel import TOY_SPEC, ToyPlugin, run, toy_registry


def test_entry_points_load_first_party_plugins():
    pm = blockdance.get_plugin_manager()
    assert "dit" in {name for name, _ in pm.list_name_plugin()}
    archs = blockdance.list_architectures()
    assert {"dit", "diffusers-dit", "pixart-alpha"} <= set(archs)
    assert {"none", "blockdance", "schedule"} <= set(blockdance.list_policies())
    assert "DiT-XL/2" in blockdance.list_models()


def test_env_var_turns_off_autoloading(monkeypatch):
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    registry = blockdance.Registry(blockdance.get_plugin_manager())
    assert registry.architectures == {}
    assert "blockdance" in registry.policy_kinds  # core policies stay


def test_blocked_plugin_is_not_loaded(monkeypatch):
    monkeypatch.setenv("BLOCKDANCE_BLOCK_PLUGINS", "dit")
    registry = blockdance.Registry(blockdance.get_plugin_manager())
    assert "dit" not in registry.architectures


def test_registration_clash_names_both_plugins():
    with pytest.raises(blockdance.PluginClashError, match=r"first-plugin.*second-plugin"):
        make_registry(("first-plugin", ToyPlugin()), ("second-plugin", ToyPlugin()))


def test_policy_kind_clash_names_both_plugins():
    class Again:
        @blockdance.hookimpl
        def blockdance_register_policies(self, register):
            register(blockdance.NoneConfig, blockdance.Policy)

    with pytest.raises(blockdance.PluginClashError, match=r"builtin_policies.*my-policies"):
        make_registry(("my-policies", Again()))


# A hook implementation whose name matches no hookspec is refused where blockdance takes a
# plugin in: each test below fails if that path stops calling pluggy's check_pending().
class Typo:
    @blockdance.hookimpl
    def blockdance_register_polices(self, register):  # "polices": no such hook
        pass


def test_register_plugin_refuses_a_misspelt_hook():
    try:
        with pytest.raises(pluggy.PluginValidationError, match="blockdance_register_polices"):
            blockdance.register_plugin(Typo(), name="typo")
    finally:
        blockdance.reload_plugins()  # a fresh process-wide registry for the tests that follow


def test_make_registry_refuses_a_misspelt_hook():
    with pytest.raises(pluggy.PluginValidationError, match="blockdance_register_polices"):
        make_registry(("typo", Typo()))


class TypoEntryPoint:
    """An installed entry point (as importlib.metadata gives it) naming ``Typo()``."""

    name = "typo"
    value = "typo_package:PLUGIN"
    dist = None

    def load(self) -> object:
        return Typo()


def test_get_plugin_manager_refuses_a_misspelt_hook_in_an_entry_point(monkeypatch):
    entry_points = _manager.importlib.metadata.entry_points

    def with_typo(**params):
        found = list(entry_points(**params))
        return [*found, TypoEntryPoint()] if params.get("group") == "blockdance" else found

    monkeypatch.setattr(_manager.importlib.metadata, "entry_points", with_typo)
    with pytest.raises(pluggy.PluginValidationError, match="blockdance_register_polices"):
        blockdance.get_plugin_manager(autoload=True)


def test_match_override_hook_wins(toy):
    other = ArchitectureSpec(
        name="toy-override",
        matches=lambda m: False,
        blocks=TOY_SPEC.blocks,
        timestep=TOY_SPEC.timestep,
    )

    class Override:
        @blockdance.hookimpl
        def blockdance_register_architectures(self, register: Callable) -> None:
            register(other)

        @blockdance.hookimpl
        def blockdance_match_architecture(self, model, architectures):
            return next(a for a in architectures if a.name == "toy-override")

    registry = make_registry(("toy", ToyPlugin()), ("override", Override()))
    with blockdance.attach(toy, "none", registry=registry) as h:
        assert h.architecture.name == "toy-override"


def test_unknown_model_lists_registered_architectures():
    with pytest.raises(blockdance.UnknownArchitectureError) as err:
        blockdance.attach(torch.nn.Linear(2, 2), "none")
    msg = str(err.value)
    assert "Linear" in msg and "dit" in msg and "pixart-alpha" in msg


def test_unknown_architecture_name_lists_registered(toy, registry):
    with pytest.raises(blockdance.UnknownArchitectureError, match=r"toy: test denoiser"):
        blockdance.attach(toy, "none", architecture="nope", registry=registry)


def test_unknown_policy_lists_kinds(toy, registry):
    listing = r"kinds: blockdance, .*none, .*schedule"
    with pytest.raises(blockdance.UnknownPolicyError, match=listing):
        blockdance.attach(toy, "fastest", registry=registry)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"N": 0}, "N"),
        ({"N": "two"}, "N"),
        ({"window": (0.9, 0.2)}, "window"),
        ({"boundary": -1}, "boundary"),
        ({"bondary": 3}, "bondary"),
    ],
)
def test_invalid_config_names_the_field(toy, registry, options, field):
    with pytest.raises(ValidationError) as err:
        blockdance.attach(toy, "blockdance", registry=registry, **options)
    assert field in str(err.value)
    assert not hasattr(toy, "_blockdance_runtime")


def test_configs_are_frozen():
    cfg = blockdance.BlockDanceConfig(N=3)
    with pytest.raises(ValidationError):
        cfg.N = 4  # type: ignore[misc]
    assert blockdance.BlockDanceConfig.model_validate(cfg.model_dump()) == cfg


def test_boundary_out_of_range_is_explained(toy, registry):
    with blockdance.attach(toy, "blockdance", boundary=8, registry=registry, num_steps=4):
        with pytest.raises(ValueError, match="8 blocks"):
            run(toy, torch.zeros(1, 2, 16), 4)


def test_load_policy_config(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"kind": "schedule", "reuse": {"3": "0-2", "4": [0, 1, 2]}}')
    cfg = blockdance.load_policy_config(path)
    assert isinstance(cfg, blockdance.ScheduleConfig)
    assert cfg.reuse == {3: (0, 1, 2), 4: (0, 1, 2)}
    path.write_text('{"kind": "schedule", "reuse": {"3": "0-2"}, "extra": 1}')
    with pytest.raises(ValidationError, match="extra"):
        blockdance.load_policy_config(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        blockdance.load_policy_config(tmp_path / "missing.json")


def test_default_boundary_scales_paper_choice():
    assert blockdance.default_boundary(28) == 20
    assert blockdance.default_boundary(12) == 8
    assert blockdance.default_boundary(8) == 5
    assert blockdance.default_boundary(2) == 0


def test_toy_registry_is_isolated_from_installed_plugins():
    assert set(toy_registry().architectures) == {"toy"}
