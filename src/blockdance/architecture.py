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
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

#: The hidden state(s) a block passes on, one item per stream (MMDiT blocks carry two). An
#: item is None for a stream the block does not carry (SD3's last block returns no text
#: stream); the runtime keeps such items as placeholders, with no shape check or arithmetic.
State = tuple[torch.Tensor | None, ...]

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


# -- helpers for plugin authors: several block lists, arguments bound by name ----------------

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
    if not lists:
        raise ValueError("module_lists_blocks needs at least one BlockList")
    attrs = [block_list.attr for block_list in lists]
    twice = sorted({a for a in attrs if attrs.count(a) > 1})
    if twice:
        raise ValueError(f"module_lists_blocks: attribute(s) {twice} given more than once")

    def blocks(model: nn.Module) -> list[BlockSlot]:
        found = [(block_list, _block_list(model, block_list.attr)) for block_list in lists]
        count = sum(len(modules) for _, modules in found)
        slots: list[BlockSlot] = []
        for block_list, modules in found:
            for j, module in enumerate(modules):
                index = len(slots)
                io = block_list.io
                side_flow = block_list.side_flow
                slots.append(
                    BlockSlot(
                        index=index,
                        module=module,
                        io=io.for_block(module) if isinstance(io, _PerBlockIO) else io,
                        kind=block_list.kind,
                        name=f"{block_list.attr}.{j}",
                        side_flow=bool(
                            side_flow(index, count) if callable(side_flow) else side_flow
                        ),
                        form=block_list.form,
                    )
                )
        return slots

    return blocks


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


@dataclass(frozen=True)
class _Binding:
    """Where one named argument sits in a block's ``forward``."""

    name: str
    position: int | None  # None: keyword-only (or only through **kwargs)
    keyword: bool  # False: positional-only


_FORWARD_PARAMETERS: weakref.WeakKeyDictionary[type, tuple[inspect.Parameter, ...]] = (
    weakref.WeakKeyDictionary()
)


def _forward_parameters(cls: type[nn.Module]) -> tuple[inspect.Parameter, ...]:
    """The parameters of ``cls.forward`` after ``self``, read once per class."""
    params = _FORWARD_PARAMETERS.get(cls)
    if params is None:
        params = tuple(inspect.signature(cls.forward).parameters.values())[1:]
        _FORWARD_PARAMETERS[cls] = params
    return params


def _bind(cls: type[nn.Module], name: str) -> _Binding:
    params = _forward_parameters(cls)
    for position, param in enumerate(params):
        if param.name != name:
            continue
        if param.kind is param.POSITIONAL_ONLY:
            return _Binding(name, position, keyword=False)
        if param.kind is param.POSITIONAL_OR_KEYWORD:
            return _Binding(name, position, keyword=True)
        if param.kind is param.KEYWORD_ONLY:
            return _Binding(name, None, keyword=True)
        break  # *name or **name: not one tensor
    else:
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return _Binding(name, None, keyword=True)  # only through **kwargs
    shown = ", ".join(str(p) for p in params) or "no arguments"
    raise TypeError(
        f"SignatureIO: {cls.__qualname__}.forward has no argument {name!r} for a hidden "
        f"state; its signature is ({shown}). Name the argument as the block's forward does."
    )


@dataclass(frozen=True, init=False)
class SignatureIO:
    """A block's hidden states bound by name to the arguments of its ``forward``.

    The state is the tensors of the named arguments, in the order named, wherever the
    call passes them (by position or by keyword); the positions come from
    ``inspect.signature(type(block).forward)``, read once per block class. The block
    returns one tensor (one name, no ``returns``) or a tuple whose items are the named
    streams in the order of ``returns``::

        SignatureIO("hidden_states")                                  # DiT, HunyuanDiT
        SignatureIO("hidden_states", "encoder_hidden_states",         # SD3, Flux
                    returns=("encoder_hidden_states", "hidden_states"))
        SignatureIO("hidden_states", "encoder_hidden_states",         # HiDream double-stream
                    returns=("hidden_states", "encoder_hidden_states"))

    A BlockIO's methods see the call's arguments but not the module, so the io must know
    the block's class: :func:`module_lists_blocks` binds it to each block through
    :meth:`for_block`; elsewhere call ``io.for_block(block)`` or pass ``block=``.

    Args:
        *names: The hidden-state arguments, one per stream, in the state's order.
        returns: The order of the streams in the tuple the block returns (a permutation of
            ``names``); None when the block returns one tensor (one name) or a tuple in
            the order of ``names``.
        block: The block class whose ``forward`` the names are looked up in; None until
            bound by :meth:`for_block`.

    Raises:
        ValueError: No name, a name twice, or ``returns`` not a permutation of ``names``.
        TypeError: ``block`` has no ``forward`` argument of one of the names.
    """

    names: tuple[str, ...]
    returns: tuple[str, ...] | None
    block: type[nn.Module] | None
    _bindings: tuple[_Binding, ...] = field(repr=False, compare=False)
    _order: tuple[int, ...] = field(repr=False, compare=False)  # state index per returned item
    _inverse: tuple[int, ...] = field(repr=False, compare=False)  # returned index per stream

    def __init__(
        self,
        *names: str,
        returns: Sequence[str] | None = None,
        block: type[nn.Module] | None = None,
    ) -> None:
        if not names:
            raise ValueError('SignatureIO needs the name of a hidden-state argument, e.g. "x"')
        if len(set(names)) != len(names):
            raise ValueError(f"SignatureIO: a name is given twice in {names}")
        if returns is not None:
            returns = tuple(returns)
            if sorted(returns) != sorted(names):
                raise ValueError(
                    f"SignatureIO: returns={returns} must name each of {names} exactly once "
                    "(the order of the streams in the tuple the block returns)"
                )
        set_ = object.__setattr__
        set_(self, "names", tuple(names))
        set_(self, "returns", returns)
        set_(self, "block", block)
        set_(self, "_bindings", tuple(_bind(block, n) for n in names) if block else ())
        set_(self, "_order", tuple(names.index(n) for n in returns) if returns else ())
        set_(self, "_inverse", tuple(returns.index(n) for n in names) if returns else ())

    def __repr__(self) -> str:
        parts = [repr(n) for n in self.names]
        if self.returns is not None:
            parts.append(f"returns={self.returns}")
        if self.block is not None:
            parts.append(f"block={self.block.__qualname__}")
        return f"SignatureIO({', '.join(parts)})"

    def for_block(self, block: nn.Module) -> SignatureIO:
        """This io bound to the class of ``block`` (its ``forward`` signature)."""
        return SignatureIO(*self.names, returns=self.returns, block=type(block))

    def _unbound(self) -> TypeError:
        return TypeError(
            f"{self!r} is not bound to a block class, so it cannot find its arguments; "
            "build the slots with module_lists_blocks (it binds each block), or use "
            "io.for_block(block) or SignatureIO(..., block=BlockClass)"
        )

    def read_input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> State:
        if not self._bindings:
            raise self._unbound()
        state = []
        for b in self._bindings:
            if b.position is not None and len(args) > b.position:
                state.append(args[b.position])
            elif b.keyword and b.name in kwargs:
                state.append(kwargs[b.name])
            else:
                where = "" if b.position is None else f" (position {b.position})"
                raise TypeError(
                    f"a {self._block_name} block was called without its hidden-state argument "
                    f"{b.name!r}{where}: got {len(args)} positional arguments and keywords "
                    f"{sorted(kwargs)}. Fix the names given to SignatureIO for this block."
                )
        return tuple(state)

    @property
    def _block_name(self) -> str:
        return self.block.__qualname__ if self.block is not None else "(unbound)"

    def to_state(self, output: Any) -> State:
        if self.returns is None and len(self.names) == 1:
            if isinstance(output, (tuple, list)):
                raise TypeError(
                    f"a {self._block_name} block returned a {type(output).__name__} of "
                    f"{len(output)} items, but {self!r} expects one tensor; declare the "
                    "order of the returned streams with returns=(...)"
                )
            return (output,)
        expected = self.returns or self.names
        if not isinstance(output, (tuple, list)) or len(output) != len(expected):
            found = (
                f"a {type(output).__name__} of {len(output)} items"
                if isinstance(output, (tuple, list))
                else f"a {type(output).__name__}"
            )
            raise TypeError(
                f"a {self._block_name} block returned {found}, but {self!r} expects a tuple "
                f"{expected}"
            )
        if not self._order:
            return tuple(output)
        return tuple(output[k] for k in self._inverse)

    def to_output(self, state: State, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.returns is None:
            return state[0] if len(self.names) == 1 else tuple(state)
        return tuple(state[i] for i in self._order)
