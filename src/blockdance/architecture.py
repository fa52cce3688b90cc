"""Architecture contract: what a plugin declares about a model family.

An :class:`ArchitectureSpec` tells the runtime, for one family of Diffusion
Transformers, which modules are the transformer blocks (in execution order), how to
read the hidden state(s) a block receives, how to rebuild a block's return value from
a cached state, how to read the timestep from the top-level forward call, and the
paper's default structural boundary and reuse window. The helpers here match a model
to its family and read its timestep; :mod:`blockdance.block_io` and
:mod:`blockdance.block_lists` hold the ones that describe the blocks.
"""

from __future__ import annotations

import importlib
import inspect
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

#: The hidden state(s) a block passes on, one item per stream (MMDiT blocks carry two). An
#: item is None for a stream the block does not carry (SD3's last block returns no text
#: stream); the runtime keeps such items as placeholders, with no shape check or arithmetic.
State = tuple[torch.Tensor | None, ...]

#: Paper default: the output of block 20 of 28 is cached, so 21 of 28 blocks are structural.
PAPER_BOUNDARY_FRACTION = 21 / 28
#: Paper default reuse window for DiT-XL/2 and Open-Sora: 25%-95% of the steps.
PAPER_WINDOW = (0.25, 0.95)


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


def lazy_example(module: str, build: str, call: str) -> Callable[[], ArchitectureExample]:
    """An ``example`` for an :class:`ArchitectureSpec` whose functions live in ``module``.

    The module (and what it imports: the model code, diffusers …) is imported only when the
    example is asked for, so listing the plugins stays cheap.

    Args:
        module: Dotted module name, e.g. ``"blockdance_dit.examples"``.
        build: Name of its function that builds the tiny model.
        call: Name of its function ``call(model, t)`` that runs one step.
    """

    def example() -> ArchitectureExample:
        functions = importlib.import_module(module)
        return ArchitectureExample(build=getattr(functions, build), call=getattr(functions, call))

    example.__qualname__ = f"lazy_example({module}: {build}, {call})"
    return example


#: Reads one argument of the top-level forward call ``(model, args, kwargs)``.
CallReader = Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], Any]
TimestepReader = CallReader


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
        latent: Reads the noisy latent from the top-level call (:func:`call_argument`); a
            policy that sees model calls gets it as ``ModelCall.latent``. None: not declared.
        condition: Reads the per-sample conditioning (class labels, a pooled text
            embedding) from the top-level call: ``ModelCall.condition``. None: not declared.
    """

    name: str
    matches: Callable[[nn.Module], bool]
    blocks: Callable[[nn.Module], Sequence[BlockSlot]]
    timestep: TimestepReader
    boundary_fraction: float = PAPER_BOUNDARY_FRACTION
    window: tuple[float, float] = PAPER_WINDOW
    description: str = ""
    example: Callable[[], ArchitectureExample] | None = None
    latent: CallReader | None = None
    condition: CallReader | None = None

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


def imported_class(*paths: str) -> Callable[[nn.Module], bool]:
    """A ``matches`` predicate: is the model an instance of one of these classes?

    It never imports anything: a model cannot be an instance of a class whose module is
    not imported yet, so listing plugins stays cheap and a plugin may name classes of
    packages that are not installed.

    Args:
        *paths: Dotted paths ``"package.module.Class"``, e.g. ``"blockdance_dit.model.DiT"``;
            the class may also be an attribute the package exports (``"diffusers.FluxPipeline"``).
    """
    wanted = [path.rpartition(".") for path in paths]

    def matches(model: nn.Module) -> bool:
        for module_name, _, class_name in wanted:
            module = sys.modules.get(module_name)
            cls = getattr(module, class_name, None) if module is not None else None
            if isinstance(cls, type) and isinstance(model, cls):
                return True
        return False

    return matches


def diffusers_class(class_name: str) -> Callable[[nn.Module], bool]:
    """A ``matches`` predicate: is the model diffusers' ``class_name`` (or a subclass)?

    It never imports diffusers (:func:`imported_class`).

    Args:
        class_name: A class exported by ``diffusers``, e.g. ``"SD3Transformer2DModel"``.
    """
    return imported_class(f"diffusers.{class_name}")


def call_argument(name: str) -> CallReader:
    """Read the top-level forward argument called ``name`` (None when the call lacks it).

    The argument's position is looked up once per model class from the signature of
    its ``forward``.

    Args:
        name: Parameter name in the model's ``forward`` (``"t"``, ``"timestep"``, ``"x"`` …).
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


#: Read the timestep from the top-level forward argument called ``name``.
timestep_argument = call_argument


def diffusers_spec(
    name: str,
    class_name: str,
    blocks: Callable[[nn.Module], Sequence[BlockSlot]],
    *,
    description: str,
    example: Callable[[], ArchitectureExample] | None = None,
    window: tuple[float, float] = PAPER_WINDOW,
    timestep: str = "timestep",
    latent: str = "hidden_states",
    condition: str | None = None,
) -> ArchitectureSpec:
    """The :class:`ArchitectureSpec` of a diffusers transformer class.

    It matches the class with :func:`diffusers_class` and reads the timestep from the
    forward argument ``timestep``, as diffusers' pipelines pass it.

    Args:
        name: Registry name, e.g. ``"sd3"``.
        class_name: The class diffusers exports, e.g. ``"SD3Transformer2DModel"``.
        blocks: Returns the model's block slots in execution order.
        description: One line shown by ``blockdance.list_architectures()``.
        example: The tiny instance for the contract checks (:func:`lazy_example`).
        window: Default reuse window (the paper's 25%-95% unless given).
        timestep: Name of the forward argument holding the timestep.
        latent: Name of the forward argument holding the noisy latent.
        condition: Name of the forward argument holding the per-sample conditioning
            (``"class_labels"``, ``"pooled_projections"`` …), if any.
    """
    return ArchitectureSpec(
        name=name,
        matches=diffusers_class(class_name),
        blocks=blocks,
        timestep=timestep_argument(timestep),
        window=window,
        description=description,
        example=example,
        latent=call_argument(latent),
        condition=call_argument(condition) if condition is not None else None,
    )


def timestep_value(t: Any) -> float | None:
    """The timestep as a Python float (first element of a tensor), or None."""
    if t is None:
        return None
    if isinstance(t, torch.Tensor):
        if t.numel() == 0:
            return None
        return float(t.reshape(-1)[0])
    return float(t)
