"""Load official Open-Sora v1 checkpoints into :class:`blockdance_stdit.model.STDiT`.

The released files (``OpenSora-v1-16x256x256.pth``, ``OpenSora-v1-HQ-16x256x256.pth``,
``OpenSora-v1-HQ-16x512x512.pth``) are a raw state dict; training checkpoints may wrap it
under ``"ema"``, ``"model"`` or ``"state_dict"``. ``.safetensors`` conversions load too.

The sin-cos position buffers ``pos_embed`` and ``pos_embed_temporal`` follow from the
model's configuration (``input_size``, ``space_scale``, ``time_scale``): like Open-Sora's
own loader, this one ignores them in the checkpoint and keeps the model's, so they may be
absent or of another resolution.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from blockdance import CheckpointMismatchError
from blockdance.checkpoint import CheckpointSource, OfficialCheckpoints

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "DERIVED_BUFFERS",
    "STDIT_CHECKPOINTS",
    "CheckpointMismatchError",
    "load_official_state_dict",
]

#: Buffers computed from the configuration; never read from a checkpoint.
DERIVED_BUFFERS = ("pos_embed", "pos_embed_temporal")

# (depth, hidden_size, patch_size) -> official model name; heads are not in the weights.
_MODEL_NAMES: dict[tuple[int, int, tuple[int, ...]], str] = {(28, 1152, (1, 2, 2)): "STDiT-XL/2"}


def load_official_state_dict(
    model: nn.Module, path_or_state_dict: CheckpointSource, *, strict: bool = True
) -> None:
    """Load an official STDiT checkpoint into ``model`` in place (:data:`STDIT_CHECKPOINTS`).

    Args:
        model: A :class:`~blockdance_stdit.model.STDiT` (or any module with the official keys).
        path_or_state_dict: A ``.pt``/``.pth`` file (raw state dict, or a checkpoint whose
            ``"ema"``, ``"model"`` or ``"state_dict"`` entry holds one, in that preference),
            a ``.safetensors`` file, or an in-memory dict of either form.
        strict: Require the checkpoint's keys to match the model's exactly, the derived
            buffers :data:`DERIVED_BUFFERS` aside (shapes must match for the shared keys).

    Raises, as :meth:`blockdance.checkpoint.OfficialCheckpoints.load` does, a
    ``FileNotFoundError`` for a missing file, a ``WeightsFileError`` for a bad one and a
    :class:`CheckpointMismatchError` that names the keys and the STDiT the weights fit.
    """
    STDIT_CHECKPOINTS.load(model, path_or_state_dict, strict=strict)


def _describe(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """Read an STDiT's configuration off its official keys and shapes (None if not one)."""
    try:
        hidden, in_channels, *patch = state_dict["x_embedder.proj.weight"].shape
        out_features = state_dict["final_layer.linear.weight"].shape[0]
        caption_channels = state_dict["y_embedder.y_proj.fc1.weight"].shape[1]
        max_length = state_dict["y_embedder.y_embedding"].shape[0]
    except (KeyError, ValueError, IndexError):
        return None
    if len(patch) != 3:  # a 4-D Conv2d kernel: an image model (PixArt, DiT)
        return None
    out_channels = out_features // max(patch[0] * patch[1] * patch[2], 1)
    depth = len({k.split(".")[1] for k in state_dict if k.startswith("blocks.")})
    return {
        "name": _MODEL_NAMES.get((depth, hidden, tuple(patch))),
        "depth": depth,
        "hidden_size": hidden,
        "patch_size": tuple(patch),
        "in_channels": in_channels,
        "pred_sigma": out_channels == 2 * in_channels,
        "caption_channels": caption_channels,
        "model_max_length": max_length,
    }


#: The Open-Sora v1 releases; training checkpoints wrap them under "ema", "model" or
#: "state_dict" (in that preference).
STDIT_CHECKPOINTS = OfficialCheckpoints(
    family="STDiT",
    article="an",
    describe=_describe,
    keep=("in_channels", "pred_sigma", "caption_channels", "model_max_length"),
    not_in_weights=("input_size",),
    note="input_size (frames, height // 8, width // 8) and space_scale are not in the "
    "weights: (16, 32, 32) with space_scale=0.5 for the 16x256x256 weights, (16, 64, 64) "
    "with 1.0 for 16x512x512.",
    layout="The checkpoint lacks the Open-Sora v1 STDiT key layout (x_embedder.proj with a "
    "3-D kernel, t_embedder, t_block, y_embedder, blocks.N.attn_temp, final_layer); is this "
    "an STDiT checkpoint? (A PixArt/DiT image checkpoint has a 4-D x_embedder.proj.weight; "
    "Open-Sora initialises STDiT from one by unsqueezing it at dim 2 and loading with "
    "strict=False.)",
    entries=("ema", "model", "state_dict"),
    derived=DERIVED_BUFFERS,
)
