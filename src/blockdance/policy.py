"""Policy contract: who decides, per (step, block), whether a block computes or reuses.

A policy is configured by a frozen pydantic model whose ``kind`` field names it, and
registered through :func:`~blockdance.hookspecs.blockdance_register_policies`.

Semantics of :attr:`Decision.REUSE`: a block that is a *reuse boundary* (listed in
:meth:`Policy.boundaries`) returns the state it produced the last time it computed in
this generation and branch; any other reused block is skipped and passes its input
through, which is only valid when a later boundary in the same run of reused blocks
substitutes the cached state. The runtime checks this and raises otherwise.
"""

from __future__ import annotations

import copy
import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from blockdance.errors import NumStepsRequiredError


class Decision(enum.Enum):
    """What a block does at one step."""

    COMPUTE = "compute"
    REUSE = "reuse"


class PolicyConfig(BaseModel):
    """Base of every policy configuration: frozen, unknown fields rejected.

    Subclasses declare ``kind: Literal["name"] = "name"``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str


@dataclass(frozen=True)
class SlotInfo:
    """What a policy may know about one block slot."""

    index: int
    kind: str
    name: str


@dataclass(frozen=True)
class GenerationInfo:
    """What a policy learns when a generation starts.

    Args:
        num_steps: Number of denoising steps, when known.
        slots: The model's block slots in execution order.
        architecture: Name of the matched architecture.
        default_boundary: The architecture's default last structural block.
        default_window: The architecture's default reuse window (fractions).
        step_source: How the runtime knows the steps: ``"pipeline"`` or ``"scheduler"``
            (counted from a diffusers scheduler's ``step()`` calls), ``"explicit"``
            (``handle.generation``, steps read from timestep values) or ``"implicit"`` (no
            announced generation; the stated fallback rules of docs/concepts.md).
        schedule_offset: Where in the scheduler's schedule this generation starts (img2img
            at strength 0.5 of 10 steps: 5). Steps are numbered over the steps that run,
            from 0, and ``num_steps`` counts those; a policy that wants the full schedule's
            positions adds this offset.
    """

    num_steps: int | None
    slots: tuple[SlotInfo, ...]
    architecture: str
    default_boundary: int
    default_window: tuple[float, float]
    step_source: str = "implicit"
    schedule_offset: int = 0

    @property
    def num_blocks(self) -> int:
        return len(self.slots)


@dataclass
class StepContext:
    """Where the runtime is when it asks for a decision.

    Args:
        step: Step index within the generation (0-based).
        num_steps: Number of steps, when known.
        timestep: The timestep value that reached the model, when readable.
        branch: Call index within the step (guidance branches run as separate calls).
    """

    step: int
    num_steps: int | None
    timestep: float | None
    branch: int


C = TypeVar("C", bound=PolicyConfig)


class Policy(ABC, Generic[C]):
    """Decides COMPUTE or REUSE for every (step, block).

    Subclasses set ``config_class`` and implement :meth:`decide`; static schedules
    build a table in :meth:`begin` so deciding is a lookup.

    Args:
        config: The validated configuration.
    """

    config_class: ClassVar[type[PolicyConfig]]
    #: Set when :meth:`observe` should be called after each computed block.
    observes: ClassVar[bool] = False

    def __init__(self, config: C) -> None:
        self.config: C = config
        self.info: GenerationInfo | None = None

    @property
    def name(self) -> str:
        return self.config.kind

    def begin(self, info: GenerationInfo) -> None:
        """Called when a generation starts, before its first block runs."""
        self.info = info

    def end(self) -> None:
        """Called when a generation ends (reset, new generation, removal): free state."""

    @abstractmethod
    def decide(self, ctx: StepContext, slot: int) -> Decision:
        """Decide for block ``slot`` at the step described by ``ctx``."""

    def boundaries(self) -> frozenset[int]:
        """Blocks whose outputs the runtime must keep so that reuse can substitute them."""
        return frozenset()

    def residual_runs(self) -> dict[int, int]:
        """Boundaries reused as a residual: ``{boundary: first block of its run}``.

        For these the runtime keeps ``output(boundary) - input(first)`` from the last
        compute and, on reuse, adds it to the run's current input instead of substituting
        the raw state. Other boundaries use output reuse (what the paper's BlockDance does).
        """
        return {}

    def keep(self, ctx: StepContext, slot: int) -> bool:
        """Whether to keep the output of boundary block ``slot`` computed at ``ctx``.

        Only asked for boundary blocks. The default keeps every computed output (the
        latest replaces the previous one).
        """
        return True

    def observe(self, ctx: StepContext, slot: int, output: Any) -> None:
        """See a computed block's output (only when ``observes`` is true)."""

    def fork(self) -> Policy[C]:
        """An independent instance for a generation that runs beside this one's.

        The runtime decides one generation at a time with the attached instance; a second
        thread (or request) generating on the same model at the same time gets a fork, so
        no per-generation state is shared. The default is a shallow copy, which is right
        when :meth:`begin` builds every piece of per-generation state anew (as the built-in
        policies do); override it when the policy mutates containers created elsewhere.
        """
        return copy.copy(self)

    def require_num_steps(self, info: GenerationInfo) -> int:
        """The step count, or a clear error when this policy cannot work without it."""
        if info.num_steps is None:
            raise NumStepsRequiredError(
                f"policy {self.name!r} needs the number of inference steps, and none is known. "
                "Attach to a diffusers pipeline (the step count comes from its call), or pass "
                "`num_steps=` to blockdance.attach(...), or run inside "
                "`with handle.generation(num_steps=...)`."
            )
        return info.num_steps

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
