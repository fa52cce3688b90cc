"""Load official facebookresearch/DiT checkpoints into :class:`blockdance_dit.model.DiT`.

The released files (``DiT-XL-2-256x256.pt``, ``DiT-XL-2-512x512.pt``) are a raw EMA state
dict; checkpoints written by the official ``train.py`` are a dict with ``"model"``, ``"ema"``,
``"opt"`` and ``"args"`` entries. Both load here, as do ``.safetensors`` conversions.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from blockdance._checkpoint import (
    CheckpointMismatchError,
    load_checked,
    read_checkpoint,
    unwrap_state_dict,
)

if TYPE_CHECKING:
    import os

    from torch import nn

__all__ = ["CheckpointMismatchError", "load_official_state_dict"]

# (depth, hidden_size) -> official size name; the heads cannot be read off the weights.
_SIZE_NAMES = {(28, 1152): "XL", (24, 1024): "L", (12, 768): "B", (12, 384): "S"}


def load_official_state_dict(
    model: nn.Module,
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any],
    *,
    strict: bool = True,
) -> None:
    """Load an official DiT checkpoint into ``model`` in place.

    Args:
        model: A :class:`~blockdance_dit.model.DiT` (or any module with the official keys).
        path_or_state_dict: A ``.pt``/``.pth`` file (raw state dict or a training checkpoint,
            whose ``"ema"`` weights are preferred over ``"model"``), a ``.safetensors`` file,
            or an in-memory dict of either form.
        strict: Require the checkpoint's keys to match the model's exactly. Shapes must match
            for the shared keys either way.

    Raises:
        FileNotFoundError: The path does not exist.
        CheckpointMismatchError: Missing or unexpected keys (when ``strict``) or mismatched
            shapes; the message lists them and says which model the checkpoint fits.
    """
    if isinstance(path_or_state_dict, Mapping):
        found = path_or_state_dict
    else:
        # train.py stores its argparse.Namespace under "args": allow that one harmless class.
        found = read_checkpoint(Path(path_or_state_dict), "a DiT", [argparse.Namespace])
    state_dict = unwrap_state_dict(found, ("ema", "model"), "a DiT")
    load_checked(model, state_dict, strict=strict, hint=_hint, family="DiT")


#################################################################################
#                                    Helpers                                    #
#################################################################################


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


def _format(config: dict[str, Any]) -> str:
    fields = ", ".join(f"{k}={v}" for k, v in config.items() if k != "name")
    return f"{config['name'] or 'a DiT'} ({fields})"


def _hint(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str:
    """Say what the checkpoint and the model look like and how to build a matching model."""
    ckpt, model = _describe(found), _describe(expected)
    if ckpt is None:
        return (
            "The checkpoint lacks the facebookresearch/DiT key layout (x_embedder, t_embedder, "
            "y_embedder, pos_embed, blocks.N, final_layer); is this a DiT checkpoint?"
        )
    lines = [f"The checkpoint looks like {_format(ckpt)}."]
    if model is not None:
        lines.append(f"The model is {_format(model)}.")
    if ckpt["name"]:
        build = f'DiT_models["{ckpt["name"]}"]('
    else:  # not an official size: spell the architecture out (heads are not in the weights)
        build = (
            f"DiT(depth={ckpt['depth']}, hidden_size={ckpt['hidden_size']}, "
            f"patch_size={ckpt['patch_size']}, num_heads=..., "
        )
    lines.append(
        f"Build the model to match, e.g. {build}input_size={ckpt['input_size']}, "
        f"num_classes={ckpt['num_classes']}, learn_sigma={ckpt['learn_sigma']}); "
        "input_size is image_size // 8 (32 for the 256x256 weights, 64 for 512x512)."
    )
    return "\n".join(lines)
