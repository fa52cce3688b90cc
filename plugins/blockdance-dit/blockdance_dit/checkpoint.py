"""Load official facebookresearch/DiT checkpoints into :class:`blockdance_dit.model.DiT`.

The released files (``DiT-XL-2-256x256.pt``, ``DiT-XL-2-512x512.pt``) are a raw EMA state
dict; checkpoints written by the official ``train.py`` are a dict with ``"model"``, ``"ema"``,
``"opt"`` and ``"args"`` entries. Both load here, as do ``.safetensors`` conversions.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from blockdance import CheckpointMismatchError
from blockdance.checkpoint import CheckpointSource, OfficialCheckpoints

if TYPE_CHECKING:
    from torch import nn

__all__ = ["DIT_CHECKPOINTS", "CheckpointMismatchError", "load_official_state_dict"]

# (depth, hidden_size) -> official size name; the heads cannot be read off the weights.
_SIZE_NAMES = {(28, 1152): "XL", (24, 1024): "L", (12, 768): "B", (12, 384): "S"}


def load_official_state_dict(
    model: nn.Module, path_or_state_dict: CheckpointSource, *, strict: bool = True
) -> None:
    """Load an official DiT checkpoint into ``model`` in place (:data:`DIT_CHECKPOINTS`).

    Args:
        model: A :class:`~blockdance_dit.model.DiT` (or any module with the official keys).
        path_or_state_dict: A ``.pt``/``.pth`` file (raw state dict or a training checkpoint,
            whose ``"ema"`` weights are preferred over ``"model"``), a ``.safetensors`` file,
            or an in-memory dict of either form.
        strict: Require the checkpoint's keys to match the model's exactly. Shapes must match
            for the shared keys either way.

    It raises what :meth:`blockdance.checkpoint.OfficialCheckpoints.load` raises: a
    ``FileNotFoundError`` for a missing file, a :class:`CheckpointMismatchError` naming the
    keys and the model the checkpoint fits.
    """
    DIT_CHECKPOINTS.load(model, path_or_state_dict, strict=strict)


def _describe(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """Read a DiT's configuration off its official keys and shapes (None if not a DiT)."""
    try:
        hidden, in_channels, patch, _ = state_dict["x_embedder.proj.weight"].shape
        num_tokens = state_dict["pos_embed"].shape[1]
        out_channels = state_dict["final_layer.linear.weight"].shape[0] // (patch * patch)
        label_rows = state_dict["y_embedder.embedding_table.weight"].shape[0]
    except (KeyError, ValueError, IndexError, ZeroDivisionError):
        return None
    depth = len({k.split(".")[1] for k in state_dict if k.startswith("blocks.")})
    size = _SIZE_NAMES.get((depth, hidden))
    return {
        "name": f"DiT-{size}/{patch}" if size else None,
        "depth": depth,
        "hidden_size": hidden,
        "patch_size": patch,
        "input_size": round(num_tokens**0.5) * patch,
        "in_channels": in_channels,
        "learn_sigma": out_channels == 2 * in_channels,
        # The official models train with label dropout, so the table's last row is the null class.
        "num_classes": label_rows - 1,
    }


#: The facebookresearch/DiT releases (``DiT-XL-2-256x256.pt``, ``DiT-XL-2-512x512.pt``).
DIT_CHECKPOINTS = OfficialCheckpoints(
    family="DiT",
    article="a",
    describe=_describe,
    keep=("input_size", "num_classes", "learn_sigma"),
    note="input_size is image_size // 8 (32 for the 256x256 weights, 64 for 512x512).",
    layout="The checkpoint lacks the facebookresearch/DiT key layout (x_embedder, t_embedder, "
    "y_embedder, pos_embed, blocks.N, final_layer); is this a DiT checkpoint?",
    # train.py stores its argparse.Namespace under "args": allow that one harmless class.
    safe_globals=(argparse.Namespace,),
)
