"""``blockdance.register_plugin`` keeps no plugin it refuses, so later registrations work."""

from __future__ import annotations

import pluggy
import pytest

import blockdance
from toymodel import ToyPlugin


class Misspelt:
    @blockdance.hookimpl
    def blockdance_register_architecture(self, register):  # no "s": no such hook
        pass


class Clashing:
    @blockdance.hookimpl
    def blockdance_register_policies(self, register):
        register(blockdance.NoneConfig, blockdance.Policy)  # "none" is the core's


@pytest.fixture(autouse=True)
def fresh_registry():
    blockdance.reload_plugins()
    yield
    blockdance.reload_plugins()


def names() -> set[str]:
    return {name for name, _ in blockdance.default_registry().pm.list_name_plugin()}


@pytest.mark.parametrize(
    ("plugin", "error"),
    [(Misspelt(), pluggy.PluginValidationError), (Clashing(), blockdance.PluginClashError)],
    ids=["misspelt-hook", "name-clash"],
)
def test_a_refused_plugin_is_not_kept(plugin, error):
    before = blockdance.default_registry()
    plugins_before = names()
    with pytest.raises(error):
        blockdance.register_plugin(plugin, name="refused")
    assert blockdance.default_registry() is before  # the registry in use is unchanged
    assert names() == plugins_before  # and its plugin manager holds no trace of the plugin
    assert before.pm.get_plugin("refused") is None


def test_registering_works_after_a_refusal():
    with pytest.raises(pluggy.PluginValidationError, match="blockdance_register_architecture"):
        blockdance.register_plugin(Misspelt(), name="refused")
    registry = blockdance.register_plugin(ToyPlugin(), name="toy-after")
    assert registry is blockdance.default_registry()
    assert "toy" in blockdance.list_architectures()
    assert registry.architecture_owner("toy") == "toy-after"
    with pytest.raises(pluggy.PluginValidationError):  # refused again, not left over
        blockdance.register_plugin(Misspelt(), name="refused")
    assert "toy-after" in names() and "refused" not in names()


def test_file_options_are_typed_paths_or_marked_ones() -> None:
    """What a tool reading policies from a file (the bench) joins to that file's folder."""
    from pathlib import Path

    from pydantic import Field

    from blockdance import FILE_OPTION, PolicyConfig, file_options

    class ThirdParty(PolicyConfig):
        kind: str = "third-party"
        weights: Path
        extra: Path | None = None
        table: list[float] | str = Field("t.json", json_schema_extra=FILE_OPTION)
        label: str = "x.json"  # a string, not a file option
        ratio: float = 0.5

    assert file_options(ThirdParty) == ("weights", "extra", "table")
    shipped = blockdance.list_policies()
    assert file_options(shipped["magcache"]) == ("mag_ratios",)
    assert file_options(shipped["blockdance-adaptive"]) == ("changes",)
    assert file_options(shipped["blockdance-ada"]) == ("weights",)
    assert file_options(shipped["blockdance"]) == ()
