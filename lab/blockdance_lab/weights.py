"""The file format of every small model the lab ships: fp16 safetensors and a JSON sidecar.

The tiny DiT, SD3 and STDiT (through :func:`blockdance_lab.training.save_weights` and
``load_weights``) and the quality probes are all written and read here. The sidecar
(``path.with_suffix(".json")``) holds the ``"config"`` that builds the model, and whatever
the writer records beside it (training log, command, accuracy).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import save_file
from torch import nn

from blockdance.checkpoint import load_checked, read_weights
from blockdance.errors import WeightsFileError

__all__ = ["read_model", "write_weights"]

M = TypeVar("M", bound=nn.Module)


def write_weights(
    model: nn.Module,
    path: str | Path,
    sidecar: Mapping[str, Any],
    *,
    metadata: Mapping[str, str] | None = None,
    indent: int = 1,
) -> Path:
    """Write ``model``'s weights as fp16 safetensors and ``sidecar`` as JSON beside them.

    Args:
        model: The model.
        path: The ``.safetensors`` file; the sidecar goes to ``path.with_suffix(".json")``.
        sidecar: A JSON object with the ``"config"`` that builds the model.
        metadata: String metadata stored in the safetensors header.
        indent: JSON indentation of the sidecar.

    Returns:
        The path of the weights.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to(torch.float16).cpu().contiguous() for k, v in model.state_dict().items()
    }
    save_file(state, str(path), metadata=dict(metadata) if metadata is not None else None)
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=indent) + "\n")
    return path


def read_model(
    path: str | Path,
    build: Callable[[dict[str, Any]], M],
    *,
    family: str,
    remedy: str,
    arch: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> M:
    """Build a model from :func:`write_weights` files, checking keys and shapes (eval mode).

    Args:
        path: The ``.safetensors`` file.
        build: The sidecar's ``"config"`` -> the model to load into.
        family: What the weights are, for the messages, e.g. ``"tiny SD3"``.
        remedy: What to do about bad or missing files, ending every message.
        arch: The ``"arch"`` the sidecar must name, if any.
        dtype: Parameter dtype after loading (the weights are stored in fp16).
        device: Where to load the model.

    Raises:
        WeightsFileNotFoundError: No weights or no sidecar (also a ``FileNotFoundError``).
        WeightsFileError: Truncated weights, or a sidecar that is not JSON, names another
            ``arch``, or whose ``"config"`` is missing or does not build the model.
        CheckpointMismatchError: The weights do not fit the sidecar's config.
    """
    tensors, sidecar = read_weights(path, family=family, remedy=remedy)
    where = Path(path).with_suffix(".json")
    if arch is not None and sidecar.get("arch") != arch:
        raise WeightsFileError(
            f"expected a {arch} config in {where}, found arch {sidecar.get('arch')!r}; {remedy}"
        )
    try:
        model = build(sidecar["config"])
    except (KeyError, TypeError) as e:
        raise WeightsFileError(
            f"the 'config' in {where} does not describe a {family} ({e!r}); {remedy}"
        ) from e
    state = {k: v.float() for k, v in tensors.items()}
    load_checked(model, state, strict=True, hint=lambda _m, _f: remedy, family=family)
    return model.to(device=device, dtype=dtype).eval()
