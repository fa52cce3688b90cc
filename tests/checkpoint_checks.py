"""What the DiT and STDiT plugins' tests check alike on their official-checkpoint loaders.

Each loader is ``load(model, source, strict=True)`` over blockdance's own, raising
``blockdance.CheckpointMismatchError``; a test gives its model's keys and reads the message
for what is particular to its model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import blockdance

Load = Callable[..., Any]


def mismatch_message(
    load: Load,
    model: nn.Module,
    drop: str,
    add: tuple[str, torch.Tensor],
    reshape: tuple[str, torch.Tensor],
) -> str:
    """The error message for the model's own state dict less key ``drop``, with an extra
    key ``add`` and key ``reshape[0]`` of another shape; it must name the missing and the
    unexpected key, and the error must be a ValueError listing the missing key."""
    state = model.state_dict()
    del state[drop]
    state.update([add, reshape])
    with pytest.raises(blockdance.CheckpointMismatchError) as info:
        load(model, state)
    message = str(info.value)
    assert "missing keys (1)" in message and drop in message
    assert "unexpected keys (1)" in message and add[0] in message
    assert info.value.missing_keys == [drop]
    assert isinstance(info.value, ValueError)
    return message


def official_mismatch_message(load: Load, model: nn.Module, official: dict[str, Any]) -> str:
    """The error message for a full-size official state dict loaded into a tiny model; its
    long listings must be truncated."""
    with pytest.raises(blockdance.CheckpointMismatchError) as info:
        load(model, official)
    message = str(info.value)
    assert "... and" in message
    return message


def check_non_strict_and_missing_file(
    load: Load, build: Callable[..., nn.Module], missing: Path
) -> None:
    """``strict=False`` loads the state dict of ``build(seed=0)`` less
    ``final_layer.linear.bias`` into ``build(seed=1)``: every other weight becomes the
    source's, that one keeps the target's; and a missing file is named in the error."""
    source, target = build(seed=0), build(seed=1)
    before = target.state_dict()["final_layer.linear.bias"].clone()
    state = source.state_dict()
    del state["final_layer.linear.bias"]
    load(target, state, strict=False)
    loaded = target.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    assert torch.equal(loaded["final_layer.linear.bias"], before)
    with pytest.raises(FileNotFoundError, match=re.escape(missing.name)):
        load(target, missing)
