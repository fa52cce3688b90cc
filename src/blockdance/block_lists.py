"""Block slots taken from a model's ``nn.ModuleList`` attributes.

One list (:func:`module_list_blocks`), several lists run one after another
(:func:`module_lists_blocks`), or several lists whose blocks alternate, like Latte's spatial
and temporal blocks (:func:`interleaved_blocks`, with :class:`InterleavedSpec` for its
default boundary). Every slot is named by its module's qualified name
(``temporal_transformer_blocks.3``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import nn

from blockdance.architecture import ArchitectureSpec, BlockIO, BlockSlot, default_boundary

#: ``side_flow(index, count)``: whether the block at global ``index`` (of ``count``) feeds a
#: consumer other than the next block.
SideFlowPredicate = Callable[[int, int], bool]


@dataclass(frozen=True)
class BlockList:
    """One ``nn.ModuleList`` of blocks, for :func:`module_lists_blocks`.

    Args:
        attr: Attribute of the model holding the blocks (dotted paths allowed).
        io: How its blocks read and return their hidden states. An io with a
            ``for_block(module)`` method (:class:`SignatureIO`) is bound to each block.
        kind: Kind given to its slots (``"double"``, ``"single"`` …).
        form: Form of the hidden state in its blocks (:attr:`BlockSlot.form`).
        side_flow: Whether its blocks' outputs also feed a later consumer
            (:attr:`BlockSlot.side_flow`): one bool for the whole list, or a predicate
            ``side_flow(index, count)`` on a block's global index and the total number of
            blocks over all lists.
    """

    attr: str
    io: BlockIO
    kind: str = "block"
    form: str = ""
    side_flow: bool | SideFlowPredicate = False


@runtime_checkable
class _PerBlockIO(Protocol):
    """An io that is specialised for each block it serves (:meth:`SignatureIO.for_block`)."""

    def for_block(self, block: nn.Module) -> BlockIO: ...


def module_list_blocks(
    attr: str, io: BlockIO, kind: str = "block"
) -> Callable[[nn.Module], list[BlockSlot]]:
    """Block slots taken from an ``nn.ModuleList`` attribute, e.g. ``model.blocks``.

    Args:
        attr: Attribute holding the blocks (dotted paths allowed).
        io: How every block reads and returns its hidden state (bound to each block when
            it has a ``for_block`` method, as for :func:`module_lists_blocks`).
        kind: Kind given to every slot.
    """
    return module_lists_blocks(BlockList(attr, io, kind=kind))


def module_lists_blocks(*lists: BlockList) -> Callable[[nn.Module], list[BlockSlot]]:
    """Block slots over several ``nn.ModuleList`` attributes, called one list after another.

    Slots are numbered globally in the order the lists are given, which must be the order
    the model runs them (Flux: ``transformer_blocks`` then ``single_transformer_blocks``).
    Each slot's ``name`` is its module's qualified name (``single_transformer_blocks.3``).

    Args:
        *lists: The block lists, in execution order.

    Raises:
        ValueError: No list, or an attribute given twice.
    """
    _check_lists("module_lists_blocks", lists)

    def blocks(model: nn.Module) -> list[BlockSlot]:
        found = [_block_list(model, block_list.attr) for block_list in lists]
        order = [(k, j) for k, modules in enumerate(found) for j in range(len(modules))]
        return _slots(lists, found, order)

    return blocks


def interleaved_blocks(*lists: BlockList) -> Callable[[nn.Module], list[BlockSlot]]:
    """Block slots over equally long lists whose blocks the model runs in turn.

    Latte runs ``transformer_blocks[i]`` (spatial) then ``temporal_transformer_blocks[i]``
    for each ``i``; its slots are spatial 0, temporal 0, spatial 1, … Give the lists in the
    order the model runs a group; pair the spec with :class:`InterleavedSpec` so that the
    default boundary ends a group.

    Args:
        *lists: The block lists, one block of each per group, in execution order.

    Raises:
        ValueError: No list, or an attribute given twice; when slots are built, lists of
            different lengths.
    """
    _check_lists("interleaved_blocks", lists)

    def blocks(model: nn.Module) -> list[BlockSlot]:
        found = [_block_list(model, block_list.attr) for block_list in lists]
        lengths = [len(modules) for modules in found]
        if len(set(lengths)) > 1:
            counts = ", ".join(f"{n} {b.attr}" for n, b in zip(lengths, lists))
            raise ValueError(
                f"{type(model).__qualname__} has {counts}; interleaved slots need one block "
                "of each list per group"
            )
        order = [(k, j) for j in range(lengths[0]) for k in range(len(found))]
        return _slots(lists, found, order)

    return blocks


@dataclass(frozen=True)
class InterleavedSpec(ArchitectureSpec):
    """An architecture whose slots come in groups of ``group`` (:func:`interleaved_blocks`).

    The default boundary is the last slot of group ``default_boundary(groups)``, so for
    Latte's (spatial, temporal) pairs the paper's "block 20 of 28" is slot 41 of 56
    (temporal block 20).

    Args:
        group: Slots per group: the number of interleaved lists.
    """

    group: int = 2

    def default_boundary(self, num_blocks: int) -> int:
        """Index of the slot ending the last structural group, for ``num_blocks`` slots."""
        if num_blocks % self.group or num_blocks < 2 * self.group:
            return super().default_boundary(num_blocks)
        groups = num_blocks // self.group
        return self.group * default_boundary(groups, self.boundary_fraction) + self.group - 1


def _check_lists(helper: str, lists: Sequence[BlockList]) -> None:
    """Refuse no list, or one attribute given twice."""
    if not lists:
        raise ValueError(f"{helper} needs at least one BlockList")
    attrs = [block_list.attr for block_list in lists]
    twice = sorted({a for a in attrs if attrs.count(a) > 1})
    if twice:
        raise ValueError(f"{helper}: attribute(s) {twice} given more than once")


def _slots(
    lists: Sequence[BlockList], found: list[nn.ModuleList], order: list[tuple[int, int]]
) -> list[BlockSlot]:
    """One slot per ``(list k, block j)`` of ``order``, numbered in that order."""
    slots: list[BlockSlot] = []
    for index, (k, j) in enumerate(order):
        block_list, module = lists[k], found[k][j]
        io, side_flow = block_list.io, block_list.side_flow
        slots.append(
            BlockSlot(
                index=index,
                module=module,
                io=io.for_block(module) if isinstance(io, _PerBlockIO) else io,
                kind=block_list.kind,
                name=f"{block_list.attr}.{j}",
                side_flow=bool(side_flow(index, len(order)) if callable(side_flow) else side_flow),
                form=block_list.form,
            )
        )
    return slots


def _block_list(model: nn.Module, attr: str) -> nn.ModuleList:
    """``model.<attr>`` as an ``nn.ModuleList``, or an error naming the attribute and the model."""
    cls = type(model).__qualname__
    modules: Any = model
    for part in attr.split("."):
        if not hasattr(modules, part):
            raise AttributeError(
                f"{cls} has no attribute {attr!r}, where a BlockList of its architecture "
                "expects an nn.ModuleList of blocks. Is the model of this architecture (or "
                "of another version of it)?"
            )
        modules = getattr(modules, part)
    if not isinstance(modules, nn.ModuleList):
        raise TypeError(
            f"{cls}.{attr} is a {type(modules).__name__}, not an nn.ModuleList of blocks; "
            "point the BlockList at the ModuleList the model's forward loops over"
        )
    return modules
