"""Shared machinery of the plugins' official-checkpoint loaders and of the small models' weights.

Each plugin knows its own key layout (how to describe a checkpoint and how to build a model
that fits it); reading files safely, unwrapping training checkpoints, comparing keys and
shapes and reporting the differences is the same for all of them, and lives here. So does
:func:`read_weights`, which every loader of the shipped small models (tiny DiT, SD3, STDiT
and the quality probes) reads its fp16 safetensors and JSON sidecar through.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blockdance.errors import WeightsFileError, WeightsFileNotFoundError

_MAX_LISTED = 10
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
        family: str = "",
    ) -> None:
        """
        Args:
            missing_keys: Keys the model has and the checkpoint lacks.
            unexpected_keys: Keys the checkpoint has and the model lacks.
            shape_mismatches: ``key -> (model shape, checkpoint shape)``.
            hint: What the checkpoint looks like and what to do, appended to the message.
            family: Model family named in the message, e.g. ``"DiT"``.
        """
        self.missing_keys = missing_keys
        self.unexpected_keys = unexpected_keys
        self.shape_mismatches = shape_mismatches
        lines = [f"{family} checkpoint does not match the model.".lstrip()]
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


def read_checkpoint(
    path: Path, family: str, safe_globals: Sequence[type] = ()
) -> Mapping[str, Any]:
    """Read a checkpoint file onto the CPU without running arbitrary pickled code.

    Args:
        path: A ``.safetensors`` file or a ``torch.save`` file.
        family: Model family for the messages, e.g. ``"an STDiT"``.
        safe_globals: Harmless classes the pickle may hold besides tensors.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{family.split()[-1]} checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    allow_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    allow = (
        allow_globals(list(safe_globals))
        if safe_globals and allow_globals
        else contextlib.nullcontext()
    )
    with allow:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path} holds a {type(loaded).__name__}, not {family} state dict")
    return loaded


def unwrap_state_dict(
    checkpoint: Mapping[str, Any], entries: Sequence[str], family: str
) -> dict[str, torch.Tensor]:
    """Pick the weights out of a training checkpoint and drop wrapper key prefixes.

    Args:
        checkpoint: A state dict, or a dict holding one under one of ``entries``.
        entries: Entries that may hold the weights, in order of preference.
        family: Model family for the messages, e.g. ``"a DiT"``.
    """
    for entry in entries:
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
            f"not {family} state dict: entries {listing(not_tensors)} are not tensors "
            f"(expected a state dict, or a checkpoint with one of {list(entries)})"
        )
    return state_dict


def load_checked(
    model: nn.Module,
    found: Mapping[str, torch.Tensor],
    *,
    strict: bool,
    hint: Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], str],
    family: str,
    derived: Iterable[str] = (),
) -> None:
    """Load ``found`` into ``model`` after comparing keys and shapes.

    Args:
        model: The module to load into, in place.
        found: The checkpoint's state dict.
        strict: Require the keys to match exactly; shapes must match for shared keys anyway.
        hint: ``hint(model_state, found)`` says what each looks like and how to match them.
        family: Model family named in the error, e.g. ``"DiT"``.
        derived: Keys computed from the configuration, ignored on both sides.

    Raises:
        CheckpointMismatchError: Missing or unexpected keys (when ``strict``) or mismatched
            shapes.
    """
    skip = set(derived)
    state_dict = {k: v for k, v in found.items() if k not in skip}
    expected = {k: v for k, v in model.state_dict().items() if k not in skip}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = {
        k: (expected[k].shape, state_dict[k].shape)
        for k in expected
        if k in state_dict and expected[k].shape != state_dict[k].shape
    }
    if mismatched or (strict and (missing or unexpected)):
        raise CheckpointMismatchError(
            missing, unexpected, mismatched, hint=hint(expected, found), family=family
        )
    shared = {k: v for k, v in state_dict.items() if k in expected}
    model.load_state_dict(shared, strict=strict and not skip)


def read_weights(
    path: str | Path, *, family: str, remedy: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read safetensors weights and their JSON sidecar (``path.with_suffix(".json")``).

    Args:
        path: The ``.safetensors`` file.
        family: What the weights are, for the messages, e.g. ``"tiny DiT"``.
        remedy: What to do about a bad file, e.g. ``"retrain with scripts/train_tiny_dit.py"``.

    Returns:
        The tensors as stored (on the CPU) and the sidecar, a dict with a ``"config"`` dict.

    Raises:
        WeightsFileNotFoundError: The weights or the sidecar do not exist (also a
            ``FileNotFoundError``).
        WeightsFileError: The weights are truncated or not safetensors, or the sidecar is not
            a JSON object with a ``"config"`` object.
    """
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if not path.is_file():
        raise WeightsFileNotFoundError(
            f"expected {family} weights at {path}, but there is no such file; {remedy}"
        )
    if not sidecar.is_file():
        raise WeightsFileNotFoundError(
            f"expected the JSON sidecar of the {family} weights {path} at {sidecar} (it holds "
            f"the model's config), but there is no such file; {remedy}"
        )
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = (
            f"{e.msg} at line {e.lineno}, column {e.colno}"
            if isinstance(e, json.JSONDecodeError)
            else f"not UTF-8 text: {e.reason} at byte {e.start}"
        )
        raise WeightsFileError(
            f"the {family} sidecar {sidecar} is not valid JSON ({where}); {remedy}"
        ) from e
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        found = (
            f"holds a JSON {type(meta).__name__}"
            if not isinstance(meta, dict)
            else "has no 'config' entry"
            if "config" not in meta
            else f"has a 'config' that is a {type(meta['config']).__name__}"
        )
        raise WeightsFileError(
            f"the {family} sidecar {sidecar} {found}; it must be a JSON object whose 'config' "
            f"object gives the model's architecture; {remedy}"
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        raise WeightsFileError(
            f"the {family} weights {path} are truncated or not a safetensors file ({e}); {remedy}"
        ) from e
    return tensors, meta


def listing(items: list[str], sep: str = ", ") -> str:
    """The first few items joined by ``sep``, then a count of the rest."""
    rest = len(items) - _MAX_LISTED
    return sep.join(items[:_MAX_LISTED] + ([f"... and {rest} more"] if rest > 0 else []))


def _bullets(items: list[str]) -> str:
    return "\n    " + listing(items, sep="\n    ")
