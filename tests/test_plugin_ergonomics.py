"""Helpers for plugin authors: several block lists, arguments bound by the block's
signature, broken plugins skipped with a warning, and owners shown by ``blockdance list``."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pluggy
import pytest
import torch
from torch import nn

import blockdance
import blockdance_lab.plugin
from blockdance import (
    ArchitectureSpec,
    BlockList,
    PluginLoadWarning,
    SignatureIO,
    module_list_blocks,
    module_lists_blocks,
)
from blockdance.cli import main
from blockdance.errors import UnknownModelError, UnknownPolicyError
from blockdance.testing import ArchitectureChecks, make_registry
from blockdance_lab.workload import UnknownWorkloadError, Workload, workloads
from repo_files import load_example
from toymodel import TOY_SPEC, ToyBlock, ToyDenoiser, ToyPlugin, run

two_list = load_example("two_list_plugin")
ramp = load_example("blockdance_ramp_policy")


# -- module_lists_blocks ----------------------------------------------------------------------
def two_list_model() -> nn.Module:
    torch.manual_seed(0)
    return two_list.TwoListDenoiser(double=3, single=2).eval()


def test_slots_over_two_lists_are_numbered_globally_with_kinds_and_forms():
    model = two_list_model()
    slots = two_list.TWO_LIST.blocks(model)
    assert [(s.index, s.name, s.kind, s.form) for s in slots] == [
        (0, "double_blocks.0", "double", "two-stream"),
        (1, "double_blocks.1", "double", "two-stream"),
        (2, "double_blocks.2", "double", "two-stream"),
        (3, "single_blocks.0", "single", "joined"),
        (4, "single_blocks.1", "single", "joined"),
    ]
    modules = [*model.double_blocks, *model.single_blocks]
    assert all(s.module is m for s, m in zip(slots, modules, strict=True))
    assert not any(s.side_flow for s in slots)
    # each slot's SignatureIO is bound to its block's class
    assert [s.io.block for s in slots] == [two_list.DoubleBlock] * 3 + [two_list.SingleBlock] * 2


def test_side_flow_predicate_sees_global_index_and_total_count():
    model = two_list_model()
    seen: list[tuple[int, int]] = []

    def feeds_a_skip(index: int, count: int) -> bool:
        seen.append((index, count))
        return index % 2 == 1

    io = SignatureIO("hidden_states")
    blocks = module_lists_blocks(
        BlockList("double_blocks", io, side_flow=True),
        BlockList("single_blocks", io, side_flow=feeds_a_skip),
    )
    slots = blocks(model)
    assert seen == [(3, 5), (4, 5)]  # only the list with the predicate, global indices
    assert [s.side_flow for s in slots] == [True, True, True, True, False]


def test_side_flow_predicate_expresses_hunyuan_dit_long_skips():
    """Blocks ``i < n // 2 - 1`` feed HunyuanDiT's skip list: checked on the real model by
    following which block outputs reach a later block's ``skip`` argument."""
    diffusers = pytest.importorskip("diffusers")
    from diffusers.models.embeddings import get_2d_rotary_pos_embed

    torch.manual_seed(0)
    model = diffusers.HunyuanDiT2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=8,
        attention_head_dim=8,
        num_attention_heads=2,
        cross_attention_dim=8,
        cross_attention_dim_t5=8,
        pooled_projection_dim=4,
        hidden_size=16,
        text_len=4,
        text_len_t5=4,
        activation_fn="gelu-approximate",
    ).eval()
    blocks = module_lists_blocks(
        BlockList("blocks", SignatureIO("hidden_states"), side_flow=lambda i, n: i < n // 2 - 1)
    )
    slots = blocks(model)
    outputs: list[tuple[int, torch.Tensor]] = []  # (block index, output), kept alive
    skipped_in: list[torch.Tensor] = []  # the tensors passed as `skip`
    for slot in slots:
        original = slot.module.forward

        def spy(*args: Any, _slot: Any = slot, _f: Any = original, **kwargs: Any) -> Any:
            (state,) = _slot.io.read_input(args, kwargs)
            assert state is args[0]  # hidden_states is passed by position
            if kwargs.get("skip") is not None:
                skipped_in.append(kwargs["skip"])
            out = _f(*args, **kwargs)
            outputs.append((_slot.index, out))
            return out

        slot.module.forward = spy
    n = 2
    with torch.no_grad():
        model(
            torch.randn(n, 4, 8, 8),
            encoder_hidden_states=torch.randn(n, 4, 8),
            text_embedding_mask=torch.ones(n, 4),
            encoder_hidden_states_t5=torch.randn(n, 4, 8),
            text_embedding_mask_t5=torch.ones(n, 4),
            timestep=torch.full((n,), 500.0),
            image_meta_size=torch.randn(n, 6),
            style=torch.zeros(n, dtype=torch.long),
            image_rotary_emb=get_2d_rotary_pos_embed(8, ((0, 0), (4, 4)), (4, 4)),
            return_dict=False,
        )
    feeding = {i for i, out in outputs for skip in skipped_in if out is skip}
    assert len(skipped_in) == 3
    assert feeding == {0, 1, 2}  # 8 layers: 0..2 feed layers 7..5
    assert {s.index for s in slots if s.side_flow} == feeding


class Holder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(2, 2)])
        self.proj = nn.Linear(2, 2)
        self.plain = [nn.Linear(2, 2)]


def test_missing_block_list_names_the_attribute_and_the_model():
    blocks = module_lists_blocks(
        BlockList("blocks", SignatureIO("input")), BlockList("single_blocks", SignatureIO("x"))
    )
    with pytest.raises(AttributeError, match=r"Holder has no attribute 'single_blocks'"):
        blocks(Holder())


@pytest.mark.parametrize(("attr", "found"), [("proj", "Linear"), ("plain", "list")])
def test_block_list_that_is_not_a_module_list_names_what_it_is(attr, found):
    blocks = module_lists_blocks(BlockList(attr, SignatureIO("input")))
    with pytest.raises(TypeError, match=rf"Holder\.{attr} is a {found}, not an nn.ModuleList"):
        blocks(Holder())


def test_module_lists_blocks_refuses_no_list_and_a_list_twice():
    with pytest.raises(ValueError, match="at least one"):
        module_lists_blocks()
    io = SignatureIO("input")
    with pytest.raises(ValueError, match=r"\['blocks'\] given more than once"):
        module_lists_blocks(BlockList("blocks", io), BlockList("proj", io), BlockList("blocks", io))


def test_plain_block_io_is_shared_not_bound():
    io = blockdance.TensorIO(name="input")
    slots = module_lists_blocks(BlockList("blocks", io))(Holder())
    assert slots[0].io is io


@pytest.fixture
def two_list_registry() -> blockdance.Registry:
    return make_registry(("two-list-plugin", two_list.TwoListPlugin()))


def two_list_call(model: nn.Module, t: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(t)
    x, text = torch.randn(2, 6, 16, generator=g), torch.randn(2, 3, 16, generator=g)
    return model(x, text, torch.full((2,), t))


def test_two_list_example_keeps_the_architecture_contract(two_list_registry):
    """none is exact, removal restores, and BlockDance reuses across the change of form
    (8 blocks: the default boundary is block 5, in the joined list)."""
    checks = ArchitectureChecks(
        build=lambda: two_list.TwoListDenoiser().eval(),
        call=two_list_call,
        registry=two_list_registry,
    )
    checks.run_all()


def test_two_list_reuse_inside_the_two_stream_blocks_is_exact(two_list_registry):
    """A boundary in the double list: its cached (image, text) goes back out as (text, image).

    Reference: the unhooked model, with block 2's output at step 2 replaced (by a forward
    hook) by its output at step 1.
    """
    torch.manual_seed(0)
    model = two_list.TwoListDenoiser().eval()
    steps = [900, 800, 700]
    block2 = model.double_blocks[2]
    with torch.no_grad():
        with blockdance.attach(
            model, "schedule", reuse={2: "0-2"}, registry=two_list_registry, num_steps=3
        ) as handle:
            got = [two_list_call(model, t) for t in steps]

        outputs: list[Any] = []
        hook = block2.register_forward_hook(lambda m, a, out: outputs.append(out))
        want = [two_list_call(model, t) for t in steps[:2]]
        hook.remove()
        hook = block2.register_forward_hook(lambda m, a, out: outputs[1])
        want.append(two_list_call(model, steps[2]))
        hook.remove()
    assert handle.stats.reused_pairs() == {(2, 0), (2, 1), (2, 2)}
    for step, (a, b) in enumerate(zip(got, want, strict=True)):
        assert torch.equal(a, b), f"step {step} differs from the reference"
    assert not torch.equal(want[2], two_list_call(model, steps[2]))  # the reuse changed it


# -- SignatureIO ------------------------------------------------------------------------------
class Mixed(nn.Module):
    def forward(self, temb: Any, x: Any, /, y: Any = None, *, z: Any = None) -> Any:
        return x


class WithKwargs(nn.Module):
    def forward(self, x: Any, **kwargs: Any) -> Any:
        return x


def test_signature_io_reads_by_position_and_by_keyword():
    io = SignatureIO("hidden_states").for_block(two_list.SingleBlock(4))  # forward(temb, hs)
    assert io.read_input(("temb", "h"), {}) == ("h",)
    assert io.read_input(("temb",), {"hidden_states": "h"}) == ("h",)
    assert io.to_state("out") == ("out",)
    assert io.to_output(("s",), ("temb", "h"), {}) == "s"


def test_signature_io_positional_only_keyword_only_and_var_keyword():
    x_io = SignatureIO("x", block=Mixed)
    assert x_io.read_input(("t", "X"), {}) == ("X",)
    with pytest.raises(TypeError, match="'x' \\(position 1\\)"):
        x_io.read_input(("t",), {"x": "X"})  # positional-only: a keyword is not it
    z_io = SignatureIO("z", block=Mixed)
    assert z_io.read_input(("t", "X", "Y", "Z?"), {"z": "Z"}) == ("Z",)
    kw_io = SignatureIO("extra", block=WithKwargs)
    assert kw_io.read_input(("X",), {"extra": "E"}) == ("E",)


def test_signature_io_two_streams_in_a_declared_order():
    """SD3/Flux return (text, image); HiDream returns (image, text); the state is the
    order of the names either way."""
    names = ("hidden_states", "encoder_hidden_states")
    text_first = SignatureIO(*names, returns=names[::-1], block=two_list.DoubleBlock)
    image_first = SignatureIO(*names, returns=names, block=two_list.DoubleBlock)
    both = SignatureIO(*names, block=two_list.DoubleBlock)
    args, kwargs = ("img",), {"encoder_hidden_states": "txt", "temb": "temb"}
    for io in (text_first, image_first, both):
        assert io.read_input(args, kwargs) == ("img", "txt")
    assert text_first.to_state(("txt", "img")) == ("img", "txt")
    assert text_first.to_output(("img", "txt"), args, kwargs) == ("txt", "img")
    assert image_first.to_state(("img", "txt")) == ("img", "txt")
    assert image_first.to_output(("img", "txt"), args, kwargs) == ("img", "txt")
    assert both.to_output(("img", "txt"), args, kwargs) == ("img", "txt")


def test_signature_io_errors_name_the_block_and_the_argument():
    io = SignatureIO("hidden_states").for_block(two_list.SingleBlock(4))
    with pytest.raises(TypeError, match=r"SingleBlock block was called without .*'hidden_states'"):
        io.read_input(("temb",), {"h": 1})
    with pytest.raises(TypeError, match=r"DoubleBlock\.forward has no argument 'x'.*temb"):
        SignatureIO("x").for_block(two_list.DoubleBlock(4))
    with pytest.raises(TypeError, match="not bound to a block class"):
        SignatureIO("hidden_states").read_input(("h",), {})
    with pytest.raises(TypeError, match=r"returned a tuple of 2 items.*returns="):
        io.to_state(("a", "b"))
    pair = SignatureIO("hidden_states", "encoder_hidden_states", block=two_list.DoubleBlock)
    with pytest.raises(TypeError, match="returned a Tensor"):
        pair.to_state(torch.zeros(1))
    with pytest.raises(ValueError, match="exactly once"):
        SignatureIO("a", "b", returns=("a", "a"))
    with pytest.raises(ValueError, match="twice"):
        SignatureIO("a", "a")
    with pytest.raises(ValueError, match="needs the name"):
        SignatureIO()


def test_signature_is_read_once_per_block_class(monkeypatch):
    class Fresh(nn.Module):
        def forward(self, x: Any) -> Any:
            return x

    calls: list[Any] = []
    real = inspect.signature

    def counting(obj: Any, *args: Any, **kwargs: Any) -> inspect.Signature:
        calls.append(obj)
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(inspect, "signature", counting)
    holder = nn.Module()
    holder.blocks = nn.ModuleList(Fresh() for _ in range(5))
    slots = module_lists_blocks(BlockList("blocks", SignatureIO("x")))(holder)
    assert [s.io.block for s in slots] == [Fresh] * 5
    assert calls == [Fresh.forward]


def test_signature_io_bound_to_a_class_works_with_module_list_blocks():
    """``block=`` binds without module_lists_blocks: the toy model's blocks by signature."""

    class BySignature:
        @blockdance.hookimpl
        def blockdance_register_architectures(
            self, register: Callable[[ArchitectureSpec], None]
        ) -> None:
            register(
                ArchitectureSpec(
                    name="toy-by-signature",
                    matches=TOY_SPEC.matches,
                    blocks=module_list_blocks("blocks", SignatureIO("x", block=ToyBlock)),
                    timestep=TOY_SPEC.timestep,
                    window=TOY_SPEC.window,
                )
            )

    def call(model: nn.Module, t: int) -> torch.Tensor:
        x = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(t))
        return model(x, torch.full((2,), t))

    checks = ArchitectureChecks(
        build=lambda: ToyDenoiser().eval(),
        call=call,
        registry=make_registry(("toy-signature", BySignature())),
    )
    checks.run_all()
    with pytest.raises(TypeError, match=r"ToyBlock\.forward has no argument 'hidden_states'"):
        SignatureIO("hidden_states", block=ToyBlock)


# -- plugins that fail to import --------------------------------------------------------------
def toy_module(name: str) -> ModuleType:
    """A plugin module with module-level hook implementations, registering the toy spec."""
    module = ModuleType(name)

    @blockdance.hookimpl
    def blockdance_register_architectures(register: Callable[[ArchitectureSpec], None]) -> None:
        register(TOY_SPEC)

    module.blockdance_register_architectures = blockdance_register_architectures  # type: ignore[attr-defined]
    return module


@pytest.fixture
def entry_points(monkeypatch) -> Iterator[list[importlib.metadata.EntryPoint]]:
    """The ``blockdance`` entry points the loader sees: only the ones a test adds."""
    eps: list[importlib.metadata.EntryPoint] = []

    def fake(**params: Any) -> list[importlib.metadata.EntryPoint]:
        assert params == {"group": "blockdance"}
        return list(eps)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    monkeypatch.delenv("BLOCKDANCE_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("BLOCKDANCE_BLOCK_PLUGINS", raising=False)
    monkeypatch.setitem(sys.modules, "ergonomics_toy_plugin", toy_module("ergonomics_toy_plugin"))
    yield eps


def ep(name: str, value: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=value, group="blockdance")


def test_a_plugin_that_fails_to_import_is_skipped_with_a_warning(entry_points):
    entry_points += [
        ep("broken", "blockdance_no_such_module.plugin"),
        ep("toy-ep", "ergonomics_toy_plugin"),
    ]
    with pytest.warns(PluginLoadWarning) as record:
        pm = blockdance.get_plugin_manager()
    assert len(record) == 1
    message = str(record[0].message)
    assert "'broken'" in message
    assert "broken = blockdance_no_such_module.plugin" in message
    assert "ModuleNotFoundError: No module named 'blockdance_no_such_module'" in message
    assert "BLOCKDANCE_BLOCK_PLUGINS=broken" in message
    assert pm.get_plugin("broken") is None
    assert pm.get_plugin("toy-ep") is sys.modules["ergonomics_toy_plugin"]
    registry = blockdance.Registry(pm)
    assert registry.architecture_owner("toy") == "toy-ep"
    assert registry.policy_owner("blockdance") == "blockdance.builtin_policies"


def test_a_missing_attribute_in_an_entry_point_is_skipped_too(entry_points):
    entry_points += [ep("toy-ep", "ergonomics_toy_plugin"), ep("no-attr", "json:NO_SUCH")]
    with pytest.warns(PluginLoadWarning, match=r"'no-attr'.*json:NO_SUCH.*AttributeError"):
        pm = blockdance.get_plugin_manager()
    assert "toy" in blockdance.Registry(pm).architectures


def test_blocked_and_disabled_plugins_are_not_imported(entry_points, monkeypatch):
    entry_points += [ep("broken", "blockdance_no_such_module.plugin")]
    entry_points += [ep("toy-ep", "ergonomics_toy_plugin")]
    monkeypatch.setenv("BLOCKDANCE_BLOCK_PLUGINS", "broken, toy-ep")
    pm = blockdance.get_plugin_manager()  # no warning: filterwarnings=error would raise
    assert pm.get_plugin("toy-ep") is None and pm.is_blocked("broken")
    monkeypatch.delenv("BLOCKDANCE_BLOCK_PLUGINS")
    monkeypatch.setenv("BLOCKDANCE_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert blockdance.get_plugin_manager().get_plugin("toy-ep") is None
    monkeypatch.delenv("BLOCKDANCE_DISABLE_PLUGIN_AUTOLOAD")
    assert blockdance.get_plugin_manager(autoload=False).get_plugin("toy-ep") is None


def test_a_misspelt_hook_in_an_entry_point_still_fails_loudly(entry_points, monkeypatch):
    module = ModuleType("ergonomics_misspelt_plugin")

    @blockdance.hookimpl
    def blockdance_register_architecture(register: Any) -> None:  # missing "s"
        raise AssertionError("never called")

    module.blockdance_register_architecture = blockdance_register_architecture  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    entry_points += [ep("misspelt", module.__name__)]
    with pytest.raises(pluggy.PluginValidationError, match="blockdance_register_architecture"):
        blockdance.get_plugin_manager()


# -- owners -----------------------------------------------------------------------------------
class OwnedPlugin:
    """An architecture, a policy kind, a model and a workload, all from one plugin."""

    @blockdance.hookimpl
    def blockdance_register_architectures(
        self, register: Callable[[ArchitectureSpec], None]
    ) -> None:
        register(TOY_SPEC)

    @blockdance.hookimpl
    def blockdance_register_policies(self, register: Callable[..., None]) -> None:
        register(ramp.RampConfig, ramp.RampPolicy)

    @blockdance.hookimpl
    def blockdance_register_models(self, register: Callable[..., None]) -> None:
        register("Toy-8", lambda: nn.Identity())

    @blockdance.hookimpl
    def blockdance_register_workloads(self, register: Callable[[Workload], None]) -> None:
        register(
            Workload(
                name="toy-work",
                description="toy workload",
                build=nn.Identity,
                generate=lambda target, request: torch.zeros(1),
            )
        )


@pytest.fixture
def owned_registry() -> blockdance.Registry:
    # the workload hook is the lab's
    return make_registry(("lab", blockdance_lab.plugin), ("owned", OwnedPlugin()))


def test_registry_names_the_owner_of_each_entry(owned_registry):
    r = owned_registry
    assert r.architecture_owner("toy") == "owned"
    assert r.policy_owner("blockdance-ramp") == "owned"
    assert r.policy_owner("schedule") == "blockdance.builtin_policies"
    assert r.model_owner("Toy-8") == "owned"
    assert workloads(r).owner("toy-work") == "owned"
    with pytest.raises(UnknownPolicyError, match="blockdance-ramp"):
        r.policy_owner("nope")
    with pytest.raises(UnknownModelError, match="Toy-8"):
        r.model_owner("nope")
    with pytest.raises(blockdance.UnknownArchitectureError, match="toy"):
        r.architecture_owner("nope")
    with pytest.raises(UnknownWorkloadError, match="toy-work"):
        workloads(r).owner("nope")


def test_blockdance_list_names_the_plugin_of_each_entry(owned_registry, monkeypatch, capsys):
    monkeypatch.setattr("blockdance.cli.default_registry", lambda: owned_registry)
    monkeypatch.setattr("blockdance_lab.cli.default_registry", lambda: owned_registry)
    assert main(["list"]) == 0
    assert main(["workloads"]) == 0
    lines = capsys.readouterr().out.splitlines()

    def line(name: str) -> str:
        (found,) = [ln for ln in lines if ln.split()[0] == name]
        return found

    assert line("toy").endswith("test denoiser (tests/toymodel.py)  [plugin owned]")
    assert line("blockdance-ramp").endswith("switch  [plugin owned]")
    assert line("blockdance").endswith("options: N, boundary, window  [built-in]")
    assert line("toy-work").endswith("toy workload  [plugin owned]")
    assert line("Toy-8") == "  Toy-8  [plugin owned]"
    assert lines.index("models:") < lines.index("  Toy-8  [plugin owned]")


def test_list_functions_keep_their_return_types():
    archs = blockdance.list_architectures()
    assert archs and all(isinstance(k, str) and isinstance(v, str) for k, v in archs.items())
    policies = blockdance.list_policies()
    assert policies["blockdance"] is blockdance.BlockDanceConfig


# -- the policy tutorial's variant of a built-in policy ------------------------------------------
@pytest.fixture
def ramp_registry() -> blockdance.Registry:
    return make_registry(("toy-plugin", ToyPlugin()), ("ramp-plugin", ramp.RampPlugin()))


def toy_x() -> torch.Tensor:
    return torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("options", "reuse_steps"),
    [
        # window 25%-95% of 20 steps: 5..18; switch at 5 + ceil(0.5 * 14) = 12
        ({"N": 2, "N_late": 4}, {6, 8, 10, 13, 14, 15, 17, 18}),
        # switch at 5 + ceil(0.25 * 14) = 9; groups of 3 from 9 on
        ({"N": 2, "N_late": 3, "switch": 0.25}, {6, 8, 10, 11, 13, 14, 16, 17}),
    ],
)
def test_policy_tutorial_variant_schedule(toy, ramp_registry, options, reuse_steps):
    with blockdance.attach(
        toy, "blockdance-ramp", num_steps=20, registry=ramp_registry, **options
    ) as handle:
        assert type(handle.policy) is ramp.RampPolicy
        got = run(toy, toy_x(), 20)
    boundary = 5  # the toy model's default: 8 blocks
    expected = {(s, b) for s in reuse_steps for b in range(boundary + 1)}
    assert handle.stats.reused_pairs() == expected

    # reused steps substitute the state of the last cache step: the explicit schedule
    table = {s: f"0-{boundary}" for s in reuse_steps}
    with blockdance.attach(toy, "schedule", reuse=table, registry=ramp_registry):
        want = run(toy, toy_x(), 20)
    for step, (a, b) in enumerate(zip(got, want, strict=True)):
        assert torch.equal(a, b), f"step {step} differs from the equivalent schedule"


def test_policy_tutorial_variant_registers_beside_the_built_in(ramp_registry):
    from pydantic import ValidationError

    from blockdance.policies import BlockDancePolicy

    assert ramp_registry.policy_owner("blockdance-ramp") == "ramp-plugin"
    assert type(ramp_registry.make_policy("blockdance", N=2)) is BlockDancePolicy
    policy = ramp_registry.make_policy({"kind": "blockdance-ramp", "N_late": 5})
    assert isinstance(policy, BlockDancePolicy) and policy.config.N_late == 5
    assert policy.config.model_dump()["kind"] == "blockdance-ramp"
    with pytest.raises(ValidationError, match="N_late"):
        ramp_registry.make_policy("blockdance-ramp", N_late=0)
    with pytest.raises(ValidationError, match="window must satisfy"):  # BlockDance's validator
        ramp_registry.make_policy("blockdance-ramp", window=(0.9, 0.1))
