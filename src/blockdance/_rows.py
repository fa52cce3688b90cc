"""Per-sample decisions: which rows of a block call compute, and running a block on them.

A policy may return a :data:`~blockdance.policy.SampleDecision` (a bool tensor, True where a
sample reuses). :func:`rows_of` turns it into the rows of the call's batch that compute;
:func:`take_rows` gathers those rows from every per-sample argument of the block call, and
:func:`merge_rows` scatters the block's output rows back into a full-batch state.

What is per sample: every tensor argument (at any depth of tuples, lists and dicts) whose
first dimension is the batch size of the block's hidden state. Other arguments (a rotary
embedding ``(S, D)``, a position table ``(1, T, D)``, flags) pass unchanged. A plugin whose
blocks take a per-sample argument in another layout gives its ``BlockIO`` a ``take_rows``
method with the signature of :func:`take_rows`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from blockdance.architecture import State
from blockdance.errors import ReuseError


@dataclass(frozen=True)
class Rows:
    """The rows of one block call that compute, the others reusing.

    Args:
        compute: Indices of the computing rows, ``(k,)`` int64 on the state's device.
        reused: Share of the batch's rows that reuse (for the statistics).
        mask: ``(B,)`` bool on the state's device, True for reusing rows.
    """

    compute: torch.Tensor
    reused: float
    mask: torch.Tensor


def rows_of(decision: torch.Tensor, state: State, policy: str) -> Rows | bool:
    """The rows a per-sample ``decision`` computes, or a bool when all rows agree.

    Args:
        decision: 1-D bool tensor, one entry per sample, True where the sample reuses.
        state: The block's input state (its first tensor gives the batch and device).
        policy: The policy's name, for messages.

    Returns:
        True when every sample reuses, False when every sample computes, else the rows.

    Raises:
        ReuseError: Not a 1-D bool tensor, or its length does not divide the batch.
    """
    hidden = next((t for t in state if isinstance(t, torch.Tensor)), None)
    if decision.dtype != torch.bool or decision.dim() != 1 or hidden is None:
        raise ReuseError(
            f"policy {policy!r} returned a tensor of dtype {decision.dtype} and shape "
            f"{tuple(decision.shape)} from decide(); a per-sample decision is a 1-D bool tensor "
            "(one entry per sample, True where the sample reuses)"
        )
    rows, n = hidden.shape[0], decision.shape[0]
    if n == 0 or rows % n:
        raise ReuseError(
            f"policy {policy!r} decided for {n} samples, but the block's batch has {rows} rows; "
            "the number of samples must divide the rows (a batch stacking k copies of each "
            "sample, as batched guidance does, has k * samples rows)"
        )
    reuse = decision.to(hidden.device)
    if rows != n:
        reuse = reuse.repeat(rows // n)  # (B,): row r follows sample r % n
    count = int(reuse.sum())
    if count == rows:
        return True
    if count == 0:
        return False
    compute = torch.nonzero(~reuse).reshape(-1)  # (B - count,)
    return Rows(compute, count / rows, reuse)


def _take(value: Any, index: torch.Tensor, rows: int) -> Any:
    if isinstance(value, torch.Tensor):
        if value.dim() >= 1 and value.shape[0] == rows:
            return value.index_select(0, index.to(value.device))
        return value
    if isinstance(value, tuple):
        return tuple(_take(v, index, rows) for v in value)
    if isinstance(value, list):
        return [_take(v, index, rows) for v in value]
    if isinstance(value, dict):
        return {k: _take(v, index, rows) for k, v in value.items()}
    return value


def take_rows(
    args: tuple[Any, ...], kwargs: dict[str, Any], compute: torch.Tensor, rows: int
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The block call's arguments restricted to the rows ``compute`` of a ``rows``-row batch.

    Args:
        args: The call's positional arguments.
        kwargs: The call's keyword arguments.
        compute: Row indices to keep, ``(k,)``.
        rows: The batch size of the block's hidden state.
    """
    return _take(args, compute, rows), _take(kwargs, compute, rows)


def merge_rows(base: State, computed: State, compute: torch.Tensor, where: str) -> State:
    """``base`` with the rows ``compute`` replaced by ``computed`` (new tensors).

    Args:
        base: Full-batch state for the reusing rows (the cached state, or the input).
        computed: The block's output state for the computing rows only.
        compute: Their row indices, ``(k,)``.
        where: The block, for messages.
    """
    merged: list[torch.Tensor | None] = []
    for b, c in zip(base, computed, strict=True):
        if not isinstance(c, torch.Tensor):
            merged.append(c)  # a stream the block does not carry on (SD3's last block)
            continue
        if not isinstance(b, torch.Tensor) or b.shape[1:] != c.shape[1:]:
            found = tuple(b.shape) if isinstance(b, torch.Tensor) else repr(b)
            raise ReuseError(
                f"{where}: a per-sample decision needs the reused rows in the shape of the "
                f"block's output {tuple(c.shape[1:])} per row, but they are {found}; the "
                "block changes the state's form, so its reusing rows cannot pass through it"
            )
        merged.append(b.index_copy(0, compute, c.to(b.dtype)))  # (B, ...)
    return tuple(merged)
