"""Load official facebookresearch/DiT checkpoints into :class:`blockdance_dit.model.DiT`.

The released files (``DiT-XL-2-256x256.pt``, ``DiT-XL-2-512x512.pt``) are a raw EMA state
dict; checkpoints written by the official ``train.py`` are a dict with ``"model"``, ``"ema"``,
``"opt"`` and ``"args"`` entries. Both load here, as do ``.safetensors`` conversions.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import os

    from torch import nn

__all__ = ["CheckpointMismatchError", "load_official_state_dict"]

_MAX_LISTED = 10
# (depth, hidden_size) -> official size name; the heads cannot be read off the weights.
_SIZE_NAMES = {(28, 1152): "XL", (24, 1024): "L", (12, 768): "B", (12, 384): "S"}
# Prefixes that wrappers add to every key: DistributedDataParallel, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class CheckpointMismatchError(ValueError):
    """A state dict whose keys or shapes do not fit the model it is loaded into."""

    def __init__(
        self,
        missing_keys: list[str],
        unexpected_keys: list[str],
        shape_mismatches: dict[str, tuple[torch.Size, torch.Size]],
        hint: str = "",
    ) -> None:
        """
        Args:
            missing_keys: Keys the model has and the checkpoint lacks.
            unexpected_keys: Keys the checkpoint has and the model lacks.
            shape_mismatches: ``key -> (model shape, checkpoint shape)``.
            hint: What the checkpoint looks like and what to do, appended to the message.
        """
        self.missing_keys = missing_keys
        self.unexpected_keys = unexpected_keys
        self.shape_mismatches = shape_mismatches
        lines = ["DiT checkpoint does not match the model."]
        if missing_keys:
            lines.append(f"  missing keys ({len(missing_keys)}):{_bullets(missing_keys)}")
        if unexpected_keys:
            lines.append(f"  unexpected keys ({len(unexpected_keys)}):{_bullets(unexpected_keys)}")
        if shape_mismatches:
            shapes = [
                f"{key}: model {tuple(want)} vs checkpoint {tuple(got)}"
                for key, (want, got) in shape_mismatches.items()
            ]
            lines.append(f"  shape mismatches ({len(shapes)}):{_bullets(shapes)}")
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))


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
        state_dict = _unwrap(path_or_state_dict)
    else:
        state_dict = _unwrap(_read(Path(path_or_state_dict)))

    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = {
        k: (expected[k].shape, state_dict[k].shape)
        for k in expected
        if k in state_dict and expected[k].shape != state_dict[k].shape
    }
    if mismatched or (strict and (missing or unexpected)):
        raise CheckpointMismatchError(
            missing, unexpected, mismatched, hint=_hint(expected, state_dict)
        )
    model.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=strict)


#################################################################################
#                                    Helpers                                    #
#################################################################################


def _read(path: Path) -> Mapping[str, Any]:
    """Read a checkpoint file onto the CPU without running arbitrary pickled code."""
    if not path.is_file():
        raise FileNotFoundError(f"DiT checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    # train.py stores its argparse.Namespace under "args": allow that one harmless class.
    safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    allow = safe_globals([argparse.Namespace]) if safe_globals else contextlib.nullcontext()
    with allow:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path} holds a {type(loaded).__name__}, not a DiT state dict")
    return loaded


def _unwrap(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Pick the weights out of a training checkpoint and drop wrapper key prefixes."""
    for entry in ("ema", "model"):
        if isinstance(checkpoint.get(entry), Mapping):
            checkpoint = checkpoint[entry]
            break
    state_dict = dict(checkpoint)
    for prefix in _WRAPPER_PREFIXES:
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k.removeprefix(prefix): v for k, v in state_dict.items()}
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"not a DiT state dict: entries {_listing(not_tensors)} are not tensors "
            "(expected a state dict or a training checkpoint with 'ema' or 'model')"
        )
    return state_dict


def _listing(items: list[str], sep: str = ", ") -> str:
    """The first few items joined by ``sep``, then a count of the rest."""
    rest = len(items) - _MAX_LISTED
    return sep.join(items[:_MAX_LISTED] + ([f"... and {rest} more"] if rest > 0 else []))


def _bullets(items: list[str]) -> str:
    return "\n    " + _listing(items, sep="\n    ")


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
