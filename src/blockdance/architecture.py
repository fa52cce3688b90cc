"""Architecture contract: what a plugin declares about a model family.

An :class:`ArchitectureSpec` tells the runtime, for one family of Diffusion
Transformers, which modules are the transformer blocks (in execution order), how to
read the hidden state(s) a block receives, how to rebuild a block's return value from
a cached state, how to read the timestep from the top-level forward call, and the
paper's default structural boundary and reuse window.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

#: The hidden state(s) a block passes on: one tensor per stream (MMDiT blocks carry two).
State = tuple[torch.Tensor, ...]

#: Paper default: the output of block 20 of 28 is cached, so 21 of 28 blocks are structural.
PAPER_BOUNDARY_FRACTION = 21 / 28


class BlockIO(Protocol):
    """How the runtime reads and rebuilds a block's hidden states."""

    def read_input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> State:
        """The state(s) entering the block, taken from its call arguments."""
        ...

    def to_state(self, output: Any) -> State:
        """The state(s) leaving the block, taken from its return value."""
        ...

    def to_output(self, state: State, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The block's return value rebuilt from a state (the cached one, or its input)."""
        ...


@dataclass(frozen=True)
class TensorIO:
    """A block called as ``block(hidden_states, ...)`` that returns one tensor.

    Args:
        name: Keyword name of the hidden-state argument.
        position: Its position when passed positionally.
    """

    name: str = "hidden_states"
    position: int = 0

    def read_input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> State:
        if len(args) > self.position:
            return (args[self.position],)
        try:
            return (kwargs[self.name],)
        except KeyError:
            raise TypeError(
                f"block call has no hidden-state argument {self.name!r} "
                f"(position {self.position}); got {len(args)} positional arguments and "
                f"keywords {sorted(kwargs)}. Fix the plugin's BlockIO for this block."
            ) from None

    def to_state(self, output: Any) -> State:
        return (output,)

    def to_output(self, state: State, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return state[0]


@dataclass(frozen=True)
class BlockSlot:
    """One transformer block, in execution order.

    Args:
        index: Position in execution order (0-based).
        module: The block module whose ``forward`` the runtime wraps.
        io: How to read and rebuild the block's hidden states.
        kind: What the block is (``"block"``, ``"spatial"``, ``"temporal"``, ``"joint"`` …).
        name: Qualified module name, used in messages.
        side_flow: True when the model also keeps this block's output for a consumer other
            than the next block (a long skip list, U-ViT style; a residual list the model's
            own code keeps). When such a block is reused, the runtime returns its output
            from the cache step instead of passing its input through, so every consumer
            gets what a full compute gave at that step.
        form: What the hidden state looks like here (e.g. ``"two-stream"`` for separate
            image and text streams, ``"joined"`` after the model concatenates them). A
            residual reuse run whose first and last blocks differ in form is refused when
            the generation starts; output reuse crosses a change of form freely.
    """

    index: int
    module: nn.Module
    io: BlockIO
    kind: str = "block"
    name: str = ""
    side_flow: bool = False
    form: str = ""


@dataclass(frozen=True)
class ArchitectureExample:
    """A tiny instance of an architecture, for the contract checks of ``blockdance.testing``.

    Args:
        build: Returns a fresh small model of the architecture, in eval mode, whose blocks
            matter (not identities, as adaLN-Zero makes a freshly initialised DiT).
        call: ``call(model, t)`` runs one model call at integer timestep ``t`` on inputs that
            depend only on ``t`` and returns a tensor.
    """

    build: Callable[[], nn.Module]
    call: Callable[[nn.Module, int], torch.Tensor]


TimestepReader = Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], Any]


@dataclass(frozen=True)
class ArchitectureSpec:
    """Everything the runtime needs to know about one model family.

    Args:
        name: Registry name, e.g. ``"dit"``.
        matches: Predicate telling whether a top-level model belongs to this family.
        blocks: Returns the model's block slots in execution order.
        timestep: Reads the timestep from the top-level forward call ``(model, args, kwargs)``.
        boundary_fraction: Share of blocks that are structural; the default boundary
            block is ``floor(boundary_fraction * depth + 0.5) - 1`` (round half up, then
            minus one), kept within ``0 .. depth - 2``: 20 of 28 in the paper, 5 of 8, 4 of 6.
        window: Default reuse window as fractions of the trajectory ``(start, end)``.
        description: One line shown by ``blockdance.list_architectures()``.
        example: Builds a tiny instance and a one-step call for the contract checks
            (:class:`ArchitectureExample`); the test suite runs ``blockdance.testing``'s
            checks on every registered architecture that has one.
    """

    name: str
    matches: Callable[[nn.Module], bool]
    blocks: Callable[[nn.Module], Sequence[BlockSlot]]
    timestep: TimestepReader
    boundary_fraction: float = PAPER_BOUNDARY_FRACTION
    window: tuple[float, float] = (0.25, 0.95)
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    example: Callable[[], ArchitectureExample] | None = None

    def default_boundary(self, num_blocks: int) -> int:
        """Index of the last structural block for a model of ``num_blocks`` blocks."""
        return default_boundary(num_blocks, self.boundary_fraction)


def default_boundary(num_blocks: int, fraction: float = PAPER_BOUNDARY_FRACTION) -> int:
    """Scale the paper's boundary (block 20 of 28) to another depth.

    Args:
        num_blocks: Number of block slots.
        fraction: Share of the blocks that are structural.
    """
    if num_blocks < 2:
        raise ValueError(f"a reuse boundary needs at least 2 blocks, the model has {num_blocks}")
    cut = math.floor(fraction * num_blocks + 0.5)
    return min(max(cut - 1, 0), num_blocks - 2)


def module_list_blocks(
    attr: str, io: BlockIO, kind: str = "block"
) -> Callable[[nn.Module], list[BlockSlot]]:
    """Block slots taken from an ``nn.ModuleList`` attribute, e.g. ``model.blocks``.

    Args:
        attr: Attribute holding the blocks (dotted paths allowed).
        io: How every block reads and returns its hidden state.
        kind: Kind given to every slot.
    """

    def blocks(model: nn.Module) -> list[BlockSlot]:
        modules = model.get_submodule(attr)
        if not isinstance(modules, nn.ModuleList):
            raise TypeError(f"{type(model).__name__}.{attr} is not an nn.ModuleList")
        return [
            BlockSlot(index=i, module=m, io=io, kind=kind, name=f"{attr}.{i}")
            for i, m in enumerate(modules)
        ]

    return blocks


def diffusers_class(class_name: str) -> Callable[[nn.Module], bool]:
    """A ``matches`` predicate: is the model diffusers' ``class_name`` (or a subclass)?

    It never imports diffusers: a model cannot be a diffusers class unless diffusers is
    already imported, so listing plugins stays cheap.

    Args:
        class_name: A class exported by ``diffusers``, e.g. ``"SD3Transformer2DModel"``.
    """

    def matches(model: nn.Module) -> bool:
        if "diffusers" not in sys.modules:
            return False
        cls = getattr(sys.modules["diffusers"], class_name, None)
        return isinstance(cls, type) and isinstance(model, cls)

    return matches


def timestep_argument(name: str) -> TimestepReader:
    """Read the timestep from the top-level forward argument called ``name``.

    The argument's position is looked up once per model class from the signature of
    its ``forward``.

    Args:
        name: Parameter name in the model's ``forward`` (``"t"``, ``"timestep"`` …).
    """
    positions: dict[type, int | None] = {}

    def read(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if name in kwargs:
            return kwargs[name]
        cls = type(model)
        if cls not in positions:
            params = list(inspect.signature(cls.forward).parameters)
            positions[cls] = params.index(name) - 1 if name in params else None
        pos = positions[cls]
        if pos is not None and len(args) > pos:
            return args[pos]
        return None

    return read


def timestep_value(t: Any) -> float | None:
    """The timestep as a Python float (first element of a tensor), or None."""
    if t is None:
        return None
    if isinstance(t, torch.Tensor):
        if t.numel() == 0:
            return None
        return float(t.reshape(-1)[0])
    return float(t)
