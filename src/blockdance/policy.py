"""Policy contract: who decides, per (step, block), whether a block computes or reuses.

A policy is configured by a frozen pydantic model whose ``kind`` field names it, and
registered through :func:`~blockdance.hookspecs.blockdance_register_policies`.

Semantics of :attr:`Decision.REUSE`: a block that is a *reuse boundary* (listed in
:meth:`Policy.boundaries`) returns the state it produced the last time it computed in
this generation and branch; any other reused block is skipped and passes its input
through, which is only valid when a later boundary in the same run of reused blocks
substitutes the cached state. The runtime checks this and raises otherwise.

A decision may also be per sample: :meth:`Policy.decide` returns a 1-D bool tensor, True
for the samples that reuse (:data:`SampleDecision`). The runtime runs the block on the
computing samples' rows only and substitutes the reused samples' rows (docs/concepts.md).

The order of the calls a policy receives is fixed (docs/policy-tutorial.md): ``begin`` once
per generation; per model call ``begin_call`` (when ``sees_calls``), then for each block in
execution order ``inspect`` (its slot in ``inspects()``), ``decide``, and when it computed
``keep`` (boundaries) and ``observe`` (when ``observes``), or when it reused at a boundary
``forecast`` (when ``forecasts``); then ``end_call`` (when
``sees_calls``) and ``memory_bytes``; ``end`` once when the generation ends. So ``observe``
of block ``k`` always comes before ``decide`` of block ``k + 1`` in the same call.
"""

from __future__ import annotations

import copy
import enum
import types
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeAlias, TypeVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from blockdance.errors import GenerationError, NumStepsRequiredError


class Decision(enum.Enum):
    """What a block does at one step."""

    COMPUTE = "compute"
    REUSE = "reuse"


#: A per-sample decision: a 1-D bool tensor with one entry per sample, True where the
#: sample reuses. Its length ``n`` must divide the call's batch ``B``; row ``r`` of the batch
#: follows entry ``r % n``, so the copies of a sample that batched guidance stacks
#: (``torch.cat([x, x])``) share a decision.
SampleDecision: TypeAlias = torch.Tensor


class PolicyConfig(BaseModel):
    """Base of every policy configuration: frozen, unknown fields rejected.

    Subclasses declare ``kind: Literal["name"] = "name"``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str


#: Give a config field ``json_schema_extra=FILE_OPTION`` when it may name a file but is not
#: typed ``Path`` (e.g. ``list[float] | str``): tools that read policies from a file
#: (``blockdance bench``) then read a relative path from that file's folder.
FILE_OPTION: dict[str, Any] = {"blockdance_file": True}


def file_options(config_class: type[PolicyConfig]) -> tuple[str, ...]:
    """The options of ``config_class`` that name a file: typed ``Path`` (or ``Path | None``)
    or marked with :data:`FILE_OPTION`."""
    names = []
    for name, info in config_class.model_fields.items():
        ann = info.annotation
        union = typing.get_origin(ann) in (typing.Union, types.UnionType)
        args = typing.get_args(ann) if union else ()
        extra = info.json_schema_extra
        marked = isinstance(extra, dict) and extra.get("blockdance_file") is True
        if marked or ann is Path or Path in args:
            names.append(name)
    return tuple(names)


@dataclass(frozen=True)
class SlotInfo:
    """What a policy may know about one block slot.

    Args:
        index: Position in execution order.
        kind: The slot's kind (``"block"``, ``"spatial"`` …).
        name: Qualified module name.
        io: The plugin's ``BlockIO`` for the block: ``io.to_state(output)`` reads what
            :meth:`Policy.observe` receives as a state (one tensor per stream, in the
            state's order). None where the runtime did not give one.
    """

    index: int
    kind: str
    name: str
    io: Any = field(default=None, compare=False, repr=False)


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
        guidance_batch: How many copies of each sample one model call stacks in its batch
            (2 with batched classifier-free guidance, 1 with none or one call per branch),
            when known: ``attach(guidance_batch=...)``, or a diffusers pipeline's
            ``do_classifier_free_guidance``. :attr:`ModelCall.samples` is built on it.
    """

    num_steps: int | None
    slots: tuple[SlotInfo, ...]
    architecture: str
    default_boundary: int
    default_window: tuple[float, float]
    step_source: str = "implicit"
    schedule_offset: int = 0
    guidance_batch: int | None = None

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


@dataclass(frozen=True)
class ModelCall:
    """The top-level model call a policy sees in :meth:`Policy.begin_call` / ``end_call``.

    Args:
        model: The attached top-level model (e.g. a DiT or a diffusers transformer).
        args: The call's positional arguments, as passed.
        kwargs: The call's keyword arguments, as passed.
        latent: The noisy latent entering the model (``(B, C, H, W)`` images, the
            architecture's layout for video), read from the argument the architecture
            declares (``ArchitectureSpec.latent``); None when it declares none.
        condition: The per-sample conditioning as passed (class labels ``(B,)``, a pooled
            text embedding ``(B, D)`` …; ``ArchitectureSpec.condition``), or None.
        guidance_batch: ``GenerationInfo.guidance_batch``.
    """

    model: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    latent: torch.Tensor | None
    condition: Any
    guidance_batch: int | None = None

    @property
    def batch_size(self) -> int:
        """Rows in the call's batch (the latent's first dimension)."""
        if self.latent is None:
            raise GenerationError(
                f"the architecture of {type(self.model).__name__} declares no latent argument, "
                "so the batch size of a call is unknown; the plugin's ArchitectureSpec must "
                "name it (latent=...)"
            )
        return int(self.latent.shape[0])

    @property
    def samples(self) -> int:
        """Distinct samples in the call: rows divided by :attr:`guidance_batch`.

        Raises:
            GenerationError: The guidance batching is unknown, or does not divide the rows.
        """
        rows, copies = self.batch_size, self.guidance_batch
        if copies is None:
            raise GenerationError(
                f"a call of {rows} rows: blockdance does not know how many copies of each "
                "sample it holds. Pass guidance_batch= to blockdance.attach (2 when "
                "classifier-free guidance stacks the conditional and unconditional inputs in "
                "one call, 1 when it does not)."
            )
        if rows % copies:
            raise GenerationError(
                f"a call of {rows} rows cannot hold {copies} copies of each sample "
                f"(guidance_batch={copies}); the batch changed form inside the generation"
            )
        return rows // copies


@dataclass(frozen=True)
class BlockCall:
    """A block call a policy sees in :meth:`Policy.inspect`, before it decides.

    Args:
        module: The block module.
        args: The call's positional arguments, as passed.
        kwargs: The call's keyword arguments, as passed.
        state: The hidden state(s) entering the block (the plugin's ``BlockIO``): one
            tensor per stream, e.g. ``(x,)`` on a DiT, ``(hidden, encoder_hidden)`` on SD3.
    """

    module: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: tuple[torch.Tensor | None, ...]


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
    #: Set when :meth:`begin_call` / :meth:`end_call` should be called around each model call.
    sees_calls: ClassVar[bool] = False
    #: Set when :meth:`forecast` should give the state a reused boundary substitutes.
    forecasts: ClassVar[bool] = False

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
    def decide(self, ctx: StepContext, slot: int) -> Decision | SampleDecision:
        """Decide for block ``slot`` at the step described by ``ctx``.

        Returns a :class:`Decision` for the whole call, or a :data:`SampleDecision` (a 1-D
        bool tensor, True where a sample reuses) when samples decide differently.
        """

    def begin_call(self, ctx: StepContext, call: ModelCall) -> None:
        """A model call starts, before its first block decides (only when ``sees_calls``)."""

    def end_call(self, ctx: StepContext, call: ModelCall, output: Any) -> None:
        """The model call returned ``output``, as the model returns it (only when
        ``sees_calls``): a tensor for the reference DiT, a diffusers output object or tuple
        for diffusers models."""

    def inspects(self) -> frozenset[int]:
        """Blocks whose call :meth:`inspect` sees before :meth:`decide` (asked at ``begin``)."""
        return frozenset()

    def inspect(self, ctx: StepContext, slot: int, call: BlockCall) -> None:
        """See the call of block ``slot`` before deciding for it (``slot`` in ``inspects()``).

        A TeaCache-style policy reads the block's modulated input here (its adaLN layers
        applied to ``call.state`` and the conditioning in ``call.args``) without running it.
        """

    def forecast(
        self, ctx: StepContext, slot: int, cached: tuple[torch.Tensor | None, ...]
    ) -> tuple[torch.Tensor | None, ...]:
        """The state boundary ``slot`` substitutes at a reuse (only when ``forecasts``).

        ``cached`` is what the runtime kept (the output, or the run's change for a residual
        run); return it, or an estimate for this step made from states the policy kept
        itself (e.g. extrapolated from the last cache steps, TaylorSeer-style). It must
        have the cached state's shapes, dtypes and devices.
        """
        return cached

    def memory_bytes(self) -> int:
        """Bytes of tensors this policy holds (features, forecasts); counted in the stats'
        cache column. Read after each model call."""
        return 0

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
        """See a computed block's output (only when ``observes`` is true).

        ``output`` is the block's return value as the block returns it: a tensor on a DiT
        block, a tuple ``(encoder_hidden, hidden)`` on a diffusers SD3 block; the slot's
        ``BlockIO.to_state`` reads it as a state. After a per-sample decision, the rows of
        the samples that reused hold their reused value.
        """

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
