"""Block IOs: how the runtime reads a block's hidden states from its call and rebuilds them.

:class:`TensorIO` serves a block that takes one tensor (by name or position) and returns
one; :class:`SignatureIO` binds one or more streams by the names of the block's ``forward``
arguments; :func:`block_argument` is the reader both build on, for plugins' own IOs.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from blockdance.architecture import State


def block_argument(args: tuple[Any, ...], kwargs: dict[str, Any], name: str, position: int) -> Any:
    """The argument ``name`` of a block call, passed at ``position`` or by keyword.

    Args:
        args: The call's positional arguments.
        kwargs: The call's keyword arguments.
        name: The argument's keyword name.
        position: Its position when passed positionally.

    Raises:
        TypeError: The call has neither; the message lists what it has.
    """
    if len(args) > position:
        return args[position]
    try:
        return kwargs[name]
    except KeyError:
        raise TypeError(
            f"block call has no hidden-state argument {name!r} (position {position}); got "
            f"{len(args)} positional arguments and keywords {sorted(kwargs)}. Fix the "
            "plugin's BlockIO for this block."
        ) from None


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
        return (block_argument(args, kwargs, self.name, self.position),)

    def to_state(self, output: Any) -> State:
        return (output,)

    def to_output(self, state: State, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return state[0]


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
    the block's class: the helpers of :mod:`blockdance.block_lists` bind it to each block
    through :meth:`for_block`; elsewhere call ``io.for_block(block)`` or pass ``block=``.

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
            "build the slots with module_list_blocks, module_lists_blocks or "
            "interleaved_blocks (they bind each block), or use io.for_block(block) or "
            "SignatureIO(..., block=BlockClass)"
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
