"""``blockdance.checkpoint``: reading checkpoint files, unwrapping, checked loading, hints.

Bad files must raise blockdance's own errors naming the file; the expected messages and
state dicts here are written out by hand, not derived from the helpers under test.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import blockdance
from blockdance.checkpoint import (
    OfficialCheckpoints,
    load_checked,
    read_checkpoint,
    unwrap_state_dict,
)
from blockdance.errors import InvalidInputError, WeightsFileError, WeightsFileNotFoundError


class Toy(nn.Module):
    """A patch embedder and ``depth`` linear blocks: keys ``embed.*`` and ``blocks.N.*``."""

    def __init__(self, depth: int = 2, hidden: int = 8, patch: int = 2) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, hidden, patch, patch)
        self.blocks = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))


def toy(seed: int, **kwargs: Any) -> Toy:
    torch.manual_seed(seed)
    return Toy(**kwargs)


def describe(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """The toy's configuration, read off its keys (None without ``embed.weight``)."""
    if "embed.weight" not in state_dict:
        return None
    hidden, in_channels, patch, _ = state_dict["embed.weight"].shape
    depth = len({k.split(".")[1] for k in state_dict if k.startswith("blocks.")})
    name = "Toy-S/2" if (depth, hidden, patch) == (2, 8, 2) else None
    shape = {"depth": depth, "hidden_size": hidden, "patch_size": patch}
    return {"name": name, **shape, "in_channels": in_channels}


TOY_CHECKPOINTS = OfficialCheckpoints(
    family="Toy",
    article="a",
    describe=describe,
    keep=("in_channels",),
    note="the image size is not in the weights.",
    layout="The checkpoint lacks the Toy key layout (embed, blocks.N).",
    not_in_weights=("image_size",),
    safe_globals=(argparse.Namespace,),
)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- read_checkpoint: bad files ------------------------------------------------------------
def truncated() -> bytes:
    """The first half of a ``torch.save`` file."""
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(64)}, buffer)
    data = buffer.getvalue()
    return data[: len(data) // 2]


BAD_FILES = {
    "truncated.pt": truncated(),
    "text.pt": b"not a checkpoint",
    "empty.pth": b"",
    "text.safetensors": b"not a checkpoint either",
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_unreadable_file_raises_weights_file_error_naming_it(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name])
    with pytest.raises(WeightsFileError) as info:
        read_checkpoint(path, "a Toy")
    message = str(info.value)
    assert str(path) in message
    assert "truncated" in message and "Toy checkpoint" in message
    assert isinstance(info.value, blockdance.BlockDanceError)
    assert isinstance(info.value, ValueError)  # an InvalidInputError
    assert info.value.__cause__ is not None  # the reader's own error stays attached


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(WeightsFileNotFoundError, match=r"Toy checkpoint not found: .*nope\.pt"):
        read_checkpoint(tmp_path / "nope.pt", "a Toy")
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "nope.pt", "a Toy")


def test_pickled_objects_are_refused_unless_allowed(tmp_path):
    path = tmp_path / "train.pt"
    torch.save({"model": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(WeightsFileError, match="objects other than tensors") as info:
        read_checkpoint(path, "a Toy")
    assert str(path) in str(info.value)
    loaded = read_checkpoint(path, "a Toy", [argparse.Namespace])
    assert torch.equal(loaded["model"]["w"], torch.ones(2))
    assert loaded["args"].lr == 1.0


def test_a_file_that_holds_no_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(WeightsFileError, match=r"list\.pt holds a list, not a Toy state dict"):
        read_checkpoint(path, "a Toy")


def test_both_formats_read_the_same_tensors(tmp_path):
    state = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4, dtype=torch.float16)}
    torch.save(state, tmp_path / "w.pt")
    save_file(state, str(tmp_path / "w.safetensors"))
    for name in ("w.pt", "w.safetensors"):
        loaded = read_checkpoint(tmp_path / name, "a Toy")
        assert set(loaded) == {"a", "b"}
        assert all(torch.equal(loaded[k], state[k]) for k in state)
        assert all(loaded[k].device.type == "cpu" for k in state)


# -- unwrap_state_dict and load_checked ---------------------------------------------------
def test_unwrap_prefers_the_first_entry_and_drops_wrapper_prefixes():
    ema, raw = torch.ones(2), torch.zeros(2)
    checkpoint = {"model": {"module.w": raw}, "ema": {"_orig_mod.w": ema}, "step": 7}
    assert unwrap_state_dict(checkpoint, ("ema", "model"), "a Toy") == {"w": ema}
    assert unwrap_state_dict(checkpoint, ("model", "ema"), "a Toy") == {"w": raw}
    assert unwrap_state_dict({"w": raw}, ("ema",), "a Toy") == {"w": raw}


def test_unwrap_refuses_entries_that_are_not_tensors():
    checkpoint = {f"k{i:02d}": i for i in range(12)}
    with pytest.raises(InvalidInputError) as info:
        unwrap_state_dict(checkpoint, ("ema",), "a Toy")
    message = str(info.value)
    assert message.startswith("not a Toy state dict: entries k00, k01,")
    assert "k09, ... and 2 more are not tensors" in message
    assert "k10" not in message


def test_load_checked_ignores_derived_keys_and_loads_shared_ones():
    source, target = toy(0), toy(1)
    found = dict(source.state_dict())
    found["embed.bias"] = torch.zeros(99)  # a derived buffer of another resolution
    load_checked(
        target, found, strict=True, hint=lambda e, f: "", family="Toy", derived=["embed.bias"]
    )
    assert torch.equal(target.blocks[1].weight, source.blocks[1].weight)
    assert not torch.equal(target.embed.bias, source.embed.bias)  # kept the model's own


def test_load_checked_non_strict_allows_missing_keys():
    source, target = toy(0), toy(1)
    found = {k: v for k, v in source.state_dict().items() if not k.startswith("blocks.1.")}
    load_checked(target, found, strict=False, hint=lambda e, f: "", family="Toy")
    assert torch.equal(target.blocks[0].weight, source.blocks[0].weight)
    assert not torch.equal(target.blocks[1].weight, source.blocks[1].weight)


# -- OfficialCheckpoints ------------------------------------------------------------------
def test_load_from_files_and_training_checkpoints(tmp_path):
    source = toy(0)
    torch.save(
        {"ema": {f"module.{k}": v for k, v in source.state_dict().items()}, "opt": {}},
        tmp_path / "train.pt",
    )
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    for source_file in (tmp_path / "train.pt", str(tmp_path / "w.safetensors")):
        target = toy(1)
        TOY_CHECKPOINTS.load(target, source_file)
        assert same_weights(target, source)
    target = toy(1)
    TOY_CHECKPOINTS.load(target, {"model": source.state_dict()})
    assert same_weights(target, source)


def test_mismatch_names_keys_and_how_to_build_a_released_size():
    with pytest.raises(blockdance.CheckpointMismatchError) as info:
        TOY_CHECKPOINTS.load(toy(0, depth=3, hidden=4), toy(0).state_dict())
    error = info.value
    assert isinstance(error, blockdance.BlockDanceError) and isinstance(error, ValueError)
    assert error.missing_keys == ["blocks.2.weight", "blocks.2.bias"]
    assert error.unexpected_keys == []
    assert error.shape_mismatches["embed.weight"] == ((4, 3, 2, 2), (8, 3, 2, 2))
    assert str(error) == "\n".join(
        [
            "Toy checkpoint does not match the model.",
            "  missing keys (2):",
            "    blocks.2.weight",
            "    blocks.2.bias",
            "  shape mismatches (6):",
            "    embed.weight: model (4, 3, 2, 2) vs checkpoint (8, 3, 2, 2)",
            "    embed.bias: model (4,) vs checkpoint (8,)",
            "    blocks.0.weight: model (4, 4) vs checkpoint (8, 8)",
            "    blocks.0.bias: model (4,) vs checkpoint (8,)",
            "    blocks.1.weight: model (4, 4) vs checkpoint (8, 8)",
            "    blocks.1.bias: model (4,) vs checkpoint (8,)",
            "The checkpoint looks like Toy-S/2 (depth=2, hidden_size=8, patch_size=2, "
            "in_channels=3).",
            "The model is a Toy (depth=3, hidden_size=4, patch_size=2, in_channels=3).",
            'Build the model to match, e.g. Toy_models["Toy-S/2"](in_channels=3, '
            "image_size=...); the image size is not in the weights.",
        ]
    )


def test_hint_spells_out_an_unreleased_size_and_names_a_foreign_layout():
    other = toy(0, depth=3, hidden=4, patch=1).state_dict()
    hint = TOY_CHECKPOINTS.hint(toy(0).state_dict(), other)
    assert hint.splitlines()[-1] == (
        "Build the model to match, e.g. Toy(depth=3, hidden_size=4, patch_size=1, "
        "num_heads=..., in_channels=3, image_size=...); the image size is not in the weights."
    )
    foreign = {"x.weight": torch.zeros(2, 2)}
    assert TOY_CHECKPOINTS.hint(toy(0).state_dict(), foreign) == TOY_CHECKPOINTS.layout
    with pytest.raises(blockdance.CheckpointMismatchError, match=r"Toy key layout"):
        TOY_CHECKPOINTS.load(toy(0), foreign)


def test_bad_file_through_load_names_the_file(tmp_path):
    path = tmp_path / "toy.pt"
    path.write_bytes(truncated())
    with pytest.raises(WeightsFileError, match=r"toy\.pt"):
        TOY_CHECKPOINTS.load(toy(0), path)


def test_the_checkpoint_module_imports_no_safetensors():
    code = (
        "import sys, blockdance.checkpoint; "
        "assert 'safetensors' not in sys.modules, 'safetensors imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
