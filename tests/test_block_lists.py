"""The core's generic plugin helpers: interleaved block lists, class matchers, lazy examples.

Expected slot orders and boundaries are written out by hand for the toy models here.
"""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import blockdance
from blockdance import (
    BlockList,
    InterleavedSpec,
    SignatureIO,
    TensorIO,
    block_argument,
    imported_class,
    interleaved_blocks,
    lazy_example,
    module_list_blocks,
    timestep_argument,
)


class Triple(nn.Module):
    """Three lists whose blocks run in turn: spatial i, temporal i, mixer i."""

    def __init__(self, depth: int = 4, mixers: int | None = None) -> None:
        super().__init__()
        self.spatial = nn.ModuleList(nn.Linear(2, 2) for _ in range(depth))
        self.temporal = nn.ModuleList(nn.Linear(2, 2) for _ in range(depth))
        self.mix = nn.Module()
        self.mix.blocks = nn.ModuleList(nn.Linear(2, 2) for _ in range(mixers or depth))


LISTS = (
    BlockList("spatial", TensorIO(name="input"), kind="spatial"),
    BlockList("temporal", TensorIO(name="input"), kind="temporal"),
    BlockList(
        "mix.blocks", TensorIO(name="input"), kind="mixer", side_flow=lambda i, n: i < n // 2
    ),
)


def test_interleaved_slots_run_group_by_group():
    model = Triple(depth=2)
    slots = interleaved_blocks(*LISTS)(model)
    assert [s.name for s in slots] == [
        "spatial.0",
        "temporal.0",
        "mix.blocks.0",
        "spatial.1",
        "temporal.1",
        "mix.blocks.1",
    ]
    assert [s.kind for s in slots] == ["spatial", "temporal", "mixer"] * 2
    assert [s.index for s in slots] == list(range(6))
    expected = [model.spatial[0], model.temporal[0], model.mix.blocks[0]]
    expected += [model.spatial[1], model.temporal[1], model.mix.blocks[1]]
    assert all(s.module is m for s, m in zip(slots, expected, strict=True))
    # the predicate sees global indices: mixer 0 is slot 2 of 6, mixer 1 slot 5
    assert [s.side_flow for s in slots] == [False, False, True, False, False, False]


def test_interleaved_lists_must_be_equally_long():
    blocks = interleaved_blocks(*LISTS)
    with pytest.raises(ValueError, match=r"4 spatial, 4 temporal, 3 mix\.blocks"):
        blocks(Triple(depth=4, mixers=3))
    with pytest.raises(ValueError, match="at least one"):
        interleaved_blocks()
    with pytest.raises(ValueError, match=r"\['spatial'\] given more than once"):
        interleaved_blocks(LISTS[0], LISTS[0])


@pytest.mark.parametrize(
    ("group", "slots", "boundary"),
    [
        (2, 56, 41),  # Latte: pair 20 of 28 ends at slot 2 * 20 + 1
        (2, 8, 5),  # 4 pairs: default_boundary(4) = 2, which ends at slot 2 * 2 + 1
        (3, 12, 8),  # 4 triples: group 2 of 0..3 ends at slot 3 * 2 + 2
        (3, 84, 62),  # 28 triples: group 20 ends at slot 3 * 20 + 2
        (2, 7, 4),  # not whole groups: the plain scaling, floor(0.75 * 7 + 0.5) - 1
    ],
)
def test_interleaved_spec_ends_the_boundary_with_a_group(group, slots, boundary):
    spec = InterleavedSpec(
        name="triple",
        matches=lambda m: isinstance(m, Triple),
        blocks=interleaved_blocks(*LISTS),
        timestep=timestep_argument("t"),
        group=group,
    )
    assert spec.default_boundary(slots) == boundary


def test_module_list_blocks_binds_a_signature_io_to_each_block():
    holder = nn.Module()
    holder.blocks = nn.ModuleList([nn.Linear(2, 2), nn.Identity()])
    slots = module_list_blocks("blocks", SignatureIO("input"))(holder)
    assert [s.io.block for s in slots] == [nn.Linear, nn.Identity]


def test_imported_class_never_imports():
    matches = imported_class("blockdance_no_such_package.models.Thing", "torch.nn.Linear")
    assert matches(nn.Linear(2, 2))
    assert not matches(nn.Conv1d(2, 2, 1))
    assert "blockdance_no_such_package" not in sys.modules
    assert not imported_class("torch.nn.not_a_class")(nn.Linear(2, 2))
    assert not blockdance.diffusers_class("NoSuchTransformer")(nn.Linear(2, 2))


def test_lazy_example_imports_its_module_on_first_use(tmp_path, monkeypatch):
    (tmp_path / "blockdance_lazy_probe.py").write_text(
        "import torch\n"
        "def tiny():\n    return torch.nn.Linear(2, 2).eval()\n"
        "def one_step(model, t):\n    return model(torch.full((1, 2), float(t)))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "blockdance_lazy_probe", raising=False)
    example = lazy_example("blockdance_lazy_probe", "tiny", "one_step")
    assert "blockdance_lazy_probe" not in sys.modules
    built = example()
    module = sys.modules["blockdance_lazy_probe"]
    assert built.build is module.tiny and built.call is module.one_step
    assert isinstance(built, blockdance.ArchitectureExample)


def test_block_argument_reads_by_position_or_keyword():
    x, y = torch.zeros(1), torch.ones(1)
    assert block_argument((x, y), {}, "context", 1) is y
    assert block_argument((x,), {"context": y}, "context", 1) is y
    with pytest.raises(TypeError, match=r"'context' \(position 1\); got 1 positional .*\['temb'\]"):
        block_argument((x,), {"temb": y}, "context", 1)
