"""Loading weights: official checkpoints into plugins' models, and the small models' files.

Each plugin knows its own key layout: how to describe a checkpoint and how to build a model
that fits it. Reading files safely, unwrapping training checkpoints, comparing keys and
shapes and reporting the differences is the same for all of them and lives here:
:class:`OfficialCheckpoints` does all of it for one family, and :func:`read_checkpoint`,
:func:`unwrap_state_dict` and :func:`load_checked` are its steps. :func:`read_weights` reads
the fp16 safetensors and JSON sidecar of the small models the lab ships (tiny DiT, SD3,
STDiT and the quality probes).

safetensors is imported only when a ``.safetensors`` file is read, so the core needs
nothing beyond torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blockdance.errors import (
    CheckpointMismatchError,
    InvalidInputError,
    WeightsFileError,
    WeightsFileNotFoundError,
    listing,
)

__all__ = [
    "CheckpointSource",
    "OfficialCheckpoints",
    "load_checked",
    "read_checkpoint",
    "read_weights",
    "unwrap_state_dict",
]

#: A checkpoint file, or a state dict (or training checkpoint) already in memory.
CheckpointSource = str | os.PathLike[str] | Mapping[str, Any]

# Prefixes that wrappers add to every key: DistributedDataParallel, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# What torch.load raises on a file that is truncated, not a torch.save file, or that holds
# objects weights_only loading refuses.
_TORCH_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError, OSError)


def read_checkpoint(
    path: Path, family: str, safe_globals: Sequence[type] = ()
) -> Mapping[str, Any]:
    """Read a checkpoint file onto the CPU without running arbitrary pickled code.

    Args:
        path: A ``.safetensors`` file or a ``torch.save`` file.
        family: Model family for the messages, e.g. ``"an STDiT"``.
        safe_globals: Harmless classes the pickle may hold besides tensors.

    Raises:
        WeightsFileNotFoundError: There is no such file (also a ``FileNotFoundError``).
        WeightsFileError: The file is truncated, not of its format, holds objects other
            than tensors (and ``safe_globals``), or holds no dict.
    """
    name = family.split()[-1]
    if not path.is_file():
        raise WeightsFileNotFoundError(f"{name} checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return _load_safetensors(path, f"the {name} checkpoint {path} is", "")
    allow_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    allow = (
        allow_globals(list(safe_globals))
        if safe_globals and allow_globals
        else contextlib.nullcontext()
    )
    try:
        with allow:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except _TORCH_LOAD_ERRORS as e:
        first_line = (str(e).strip().splitlines() or [""])[0]
        raise WeightsFileError(
            f"cannot read the {name} checkpoint {path}: it is truncated, not a torch.save "
            "file, or holds objects other than tensors that torch.load(weights_only=True) "
            f"refuses ({type(e).__name__}: {first_line or 'no message'})"
        ) from e
    if not isinstance(loaded, Mapping):
        raise WeightsFileError(f"{path} holds a {type(loaded).__name__}, not {family} state dict")
    return loaded


def unwrap_state_dict(
    checkpoint: Mapping[str, Any], entries: Sequence[str], family: str
) -> dict[str, torch.Tensor]:
    """Pick the weights out of a training checkpoint and drop wrapper key prefixes.

    Args:
        checkpoint: A state dict, or a dict holding one under one of ``entries``.
        entries: Entries that may hold the weights, in order of preference.
        family: Model family for the messages, e.g. ``"a DiT"``.

    Raises:
        InvalidInputError: Entries that are not tensors (also a ``ValueError``).
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
        raise InvalidInputError(
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


@dataclass(frozen=True)
class OfficialCheckpoints:
    """What a plugin knows about the released checkpoints of one model family.

    :meth:`load` reads a file or takes a dict, unwraps it, and loads it after checking keys
    and shapes; on a mismatch the error says what the checkpoint looks like (``describe``)
    and how to build a model that fits it, e.g. ``DiT_models["DiT-XL/2"](input_size=32, ...)``
    for a released size or ``DiT(depth=..., hidden_size=..., ...)`` for another.

    Args:
        family: The family, as its model class is named, e.g. ``"DiT"``; the plugin's
            table of released sizes is ``<family>_models`` (``DiT_models``).
        article: ``"a"`` or ``"an"``, for messages ("an STDiT").
        describe: Reads a configuration off a state dict's keys and shapes, or returns None
            when the keys are not the family's; its ``"name"`` is the released model's
            name or None, and it has ``depth``, ``hidden_size`` and ``patch_size``.
        keep: Configuration entries to spell out when building a matching model.
        note: What the weights do not tell, appended to the build suggestion.
        layout: The message for a state dict that is not of the family's key layout.
        entries: Entries of a training checkpoint that may hold the weights, in order of
            preference.
        derived: Keys computed from the configuration, ignored in the checkpoint.
        not_in_weights: Arguments of the model that the weights do not fix, shown as ``...``.
        safe_globals: Harmless classes a ``torch.save`` checkpoint may hold besides tensors.
    """

    family: str
    article: str
    describe: Callable[[Mapping[str, torch.Tensor]], dict[str, Any] | None]
    keep: tuple[str, ...]
    note: str
    layout: str
    entries: tuple[str, ...] = ("ema", "model")
    derived: tuple[str, ...] = ()
    not_in_weights: tuple[str, ...] = ()
    safe_globals: tuple[type, ...] = ()

    def load(self, model: nn.Module, source: CheckpointSource, *, strict: bool = True) -> None:
        """Load a checkpoint of the family into ``model`` in place.

        Args:
            model: The model (or any module with the family's official keys).
            source: A ``.pt``/``.pth`` file (raw state dict, or a training checkpoint whose
                :attr:`entries` hold one), a ``.safetensors`` file, or a dict of either form.
            strict: Require the checkpoint's keys to match the model's exactly (the
                :attr:`derived` keys aside). Shapes must match for shared keys either way.

        Raises:
            WeightsFileNotFoundError: The path does not exist (also a ``FileNotFoundError``).
            WeightsFileError: The file cannot be read.
            CheckpointMismatchError: Missing or unexpected keys (when ``strict``) or
                mismatched shapes; the message lists them and says which model the
                checkpoint fits.
        """
        a_family = f"{self.article} {self.family}"
        found = (
            source
            if isinstance(source, Mapping)
            else read_checkpoint(Path(source), a_family, self.safe_globals)
        )
        state_dict = unwrap_state_dict(found, self.entries, a_family)
        load_checked(
            model,
            state_dict,
            strict=strict,
            hint=self.hint,
            family=self.family,
            derived=self.derived,
        )

    def hint(self, expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str:
        """What the checkpoint and the model look like, and how to build a matching model."""
        ckpt, model = self.describe(found), self.describe(expected)
        if ckpt is None:
            return self.layout
        lines = [f"The checkpoint looks like {self._format(ckpt)}."]
        if model is not None:
            lines.append(f"The model is {self._format(model)}.")
        kept = [f"{k}={ckpt[k]}" for k in self.keep] + [f"{k}=..." for k in self.not_in_weights]
        if ckpt["name"]:
            build = f'{self.family}_models["{ckpt["name"]}"]({", ".join(kept)})'
        else:  # not a released size: spell the architecture out (heads are not in the weights)
            shape = [f"{k}={ckpt[k]}" for k in ("depth", "hidden_size", "patch_size")]
            build = f"{self.family}({', '.join([*shape, 'num_heads=...', *kept])})"
        lines.append(f"Build the model to match, e.g. {build}; {self.note}")
        return "\n".join(lines)

    def _format(self, config: dict[str, Any]) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in config.items() if k != "name")
        return f"{config['name'] or f'{self.article} {self.family}'} ({fields})"


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
    return _load_safetensors(path, f"the {family} weights {path} are", f"; {remedy}"), meta


def _load_safetensors(path: Path, subject: str, remedy: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file on the CPU, or a :class:`WeightsFileError`.

    Args:
        path: The file.
        subject: Start of the message, e.g. ``"the tiny DiT weights <path> are"``.
        remedy: End of the message (``""``, or ``"; "`` and what to do).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as e:
        raise WeightsFileError(
            f"{subject} truncated or not a safetensors file ({e}){remedy}"
        ) from e
