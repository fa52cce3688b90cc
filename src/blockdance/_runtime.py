"""The runtime: wraps block ``forward`` methods so a REUSE decision skips the compute.

One :class:`Runtime` is attached to one model. It wraps the top-level ``forward`` (to place
each call in a step and a guidance branch) and every block's ``forward`` (to ask the policy
and skip, pass through or substitute). For a pipeline it also wraps the pipeline's call and,
during each call, its scheduler (:mod:`blockdance._pipeline`). Per-generation state lives in
:class:`~blockdance._generation.Generation` objects kept per thread and per request.

The wrappers are marked for ``torch.compile`` to skip (not recursively): the decisions and
the bookkeeping run in Python, and a block's own ``forward`` is what compiles, so a
generation compiles a constant number of graphs whatever the policy decides.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from blockdance._generation import Generation, Local, Plan
from blockdance._patching import Patch, PickleGuard, guard_pickling
from blockdance._pipeline import ClassSwap, SchedulerTracker
from blockdance._rows import Rows, merge_rows, rows_of, take_rows
from blockdance.architecture import ArchitectureSpec, BlockSlot, State, timestep_value
from blockdance.errors import (
    AlreadyAttachedError,
    GenerationError,
    InvalidInputError,
    ReuseError,
    StaleCacheError,
)
from blockdance.observer import Observer
from blockdance.policy import (
    BlockCall,
    Decision,
    GenerationInfo,
    ModelCall,
    Policy,
    SlotInfo,
    StepContext,
)
from blockdance.stats import GenerationStats

_ATTR = "_blockdance_runtime"
_REUSE = Decision.REUSE
_HISTORY = 64


def _wrapper_frame(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Have ``torch.compile`` run ``fn`` itself in Python but compile what it calls.

    The wrappers call the wrapped ``forward`` (which compiles) and :func:`_python_only`
    helpers (which do not), so nothing the runtime decides is traced or guarded on.
    """
    return torch.compiler.disable(fn, recursive=False)


def _python_only(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Keep ``torch.compile`` out of ``fn`` and everything it calls (the bookkeeping)."""
    return torch.compiler.disable(fn, recursive=True)


_COMPUTE = object()  # a block's pre-call verdict: run the wrapped forward


class _Partial:
    """A block's pre-call verdict for a per-sample decision: run it on some rows only."""

    __slots__ = ("args", "base", "kwargs", "rows")

    def __init__(
        self, rows: Rows, base: State, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.rows = rows
        self.base = base  # full-batch state the reusing rows take: cached, side-flow or input
        self.args = args  # the call's arguments restricted to the computing rows
        self.kwargs = kwargs


def _warn_if_never_stepped(pipeline: Any, gen: Generation) -> None:
    """A pipeline that called the model but never its scheduler's step() reused nothing."""
    steps, calls = gen.num_steps or 0, len(gen.stats.calls)
    if gen.plan is None or gen.step > 0 or steps < 2 or not calls:
        return
    warnings.warn(
        f"{type(pipeline).__name__} called the model {calls} time(s) in a generation of "
        f"{steps} scheduled steps but never called {type(gen.plan.scheduler).__name__}.step(), "
        "so every call counted as a branch of step 0 and nothing was reused. blockdance "
        "counts steps from scheduler.step(); for a pipeline that samples otherwise, attach "
        "to its model and use handle.generation() and handle.end_step().",
        RuntimeWarning,
        stacklevel=4,
    )


def check_num_steps(num_steps: Any, where: str) -> int | None:
    """``num_steps`` as a positive int (or None), or an error naming it.

    Args:
        num_steps: The value given.
        where: Where it was given, for the message (``"attach(num_steps=...)"``).
    """
    if num_steps is None:
        return None
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise InvalidInputError(
            f"{where} must be a positive int (the number of denoising steps), got "
            f"{num_steps!r} ({type(num_steps).__name__})"
        )
    return num_steps


def _copy(state: State) -> State:
    """A state no later computation can change: each tensor cloned (see docs/concepts.md)."""
    return tuple(t.clone() if isinstance(t, torch.Tensor) else t for t in state)


def _state_bytes(state: State) -> int:
    return sum(t.numel() * t.element_size() for t in state if isinstance(t, torch.Tensor))


def _describe(state: State) -> str:
    return ", ".join(
        f"{tuple(t.shape)} {t.dtype} on {t.device}" if isinstance(t, torch.Tensor) else repr(t)
        for t in state
    )


def _fits(cached: State, current: State) -> bool:
    if len(cached) != len(current):
        return False
    for a, b in zip(cached, current):
        if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor):
            return False
        if (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and (a.shape != b.shape or a.dtype != b.dtype or a.device != b.device)
        ):
            return False
    return True


class Runtime:
    """Wrappers and state for one attached model.

    Args:
        model: The top-level denoiser (e.g. a DiT or a diffusers transformer).
        spec: Its architecture.
        policy: The policy that decides (concurrent generations get :meth:`Policy.fork`).
        num_steps: Default step count for generations that do not announce one.
        scheduler: A bare model's diffusers scheduler, followed for steps and generations.
        pipeline: The pipeline whose calls are generations (its ``.scheduler`` is followed
            during each call).
        guidance_batch: Copies of each sample one call stacks (``GenerationInfo``); None:
            read from the pipeline's ``do_classifier_free_guidance`` where there is one.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ArchitectureSpec,
        policy: Policy,
        *,
        num_steps: int | None = None,
        scheduler: Any = None,
        pipeline: Any = None,
        guidance_batch: int | None = None,
    ) -> None:
        if vars(model).get(_ATTR) is not None:
            raise AlreadyAttachedError(
                f"{type(model).__name__} already has a blockdance runtime attached; call "
                ".remove() on its handle (or leave its `with` block) before attaching again"
            )
        self.model = model
        self.spec = spec
        self.policy = policy
        self.default_num_steps = check_num_steps(num_steps, "attach(num_steps=...)")
        self.guidance_batch = check_num_steps(guidance_batch, "attach(guidance_batch=...)")
        self.pipeline = pipeline
        self.slots: Sequence[BlockSlot] = list(spec.blocks(model))
        if not self.slots:
            raise ValueError(
                f"architecture {spec.name!r} found no blocks in {type(model).__name__}"
            )
        self.slot_info = tuple(SlotInfo(s.index, s.kind, s.name, s.io) for s in self.slots)
        self.observers: list[Observer] = []
        self.history: collections.deque[GenerationStats] = collections.deque(maxlen=_HISTORY)
        self._lock = threading.Lock()
        self._policy_busy = False
        self._local_var: contextvars.ContextVar[Local | None] = contextvars.ContextVar(
            f"blockdance_runtime_{id(self):x}", default=None
        )

        self._patches: list[Patch] = []
        self._forward_patches: dict[int, Patch] = {}  # slot index -> its forward's wrapper
        self._guards: list[PickleGuard] = []
        self._tracker: SchedulerTracker | None = None
        self._plan_at_attach: Plan | None = None
        self._swap: ClassSwap | None = None
        try:
            for slot in self.slots:
                patch = Patch(slot.module, "forward", self._make_block(slot))
                self._patches.append(patch)
                self._forward_patches[slot.index] = patch
            self._patches.append(Patch(model, "forward", self._make_model()))
            self._wrap_compiled_blocks()
            owners = {id(p.owner): p.owner for p in self._patches}
            for owner in owners.values():
                drop = (_ATTR,) if owner is model else ()
                self._guards.append(guard_pickling(owner, self._patches, drop))
            if pipeline is not None:
                scheduler = pipeline.scheduler
                self._swap = ClassSwap(pipeline)
            if scheduler is not None:  # followed between pipeline calls too
                self._tracker = SchedulerTracker(self, scheduler)
                if getattr(scheduler, "num_inference_steps", None) is not None:
                    # set_timesteps ran before attach: a loop may run that schedule directly
                    self._plan_at_attach = Plan.of(scheduler, "scheduler")
        except Exception:
            self._undo_patches()
            raise
        setattr(model, _ATTR, self)

    # -- per-thread / per-request state -------------------------------------------------
    def _own(self) -> Local | None:
        """This thread's (and request's) state, if it has any.

        A context copied into another thread (``asyncio.to_thread``) carries the same
        object; it is not that thread's.
        """
        local = self._local_var.get()
        return local if local is not None and local.thread == threading.get_ident() else None

    def _local(self) -> Local:
        """This thread's (and request's) state, made on first use."""
        local = self._own()
        if local is None:
            local = Local()
            self._local_var.set(local)
        return local

    def _current(self) -> Generation | None:
        local = self._own()
        return local.gen if local is not None else None

    @property
    def ctx(self) -> StepContext | None:
        """The step context of this thread's model call in progress."""
        gen = self._current()
        return gen.ctx if gen is not None else None

    @property
    def cache(self) -> dict[tuple[int, int], State]:
        """This thread's cache: ``(branch, block) -> state``."""
        gen = self._current()
        return gen.cache if gen is not None else {}

    @property
    def boundaries(self) -> frozenset[int]:
        gen = self._current()
        return gen.boundaries if gen is not None else frozenset()

    @property
    def residual(self) -> dict[int, int]:
        gen = self._current()
        return gen.residual if gen is not None else {}

    @property
    def stats(self) -> GenerationStats | None:
        """Statistics of this thread's current or last generation."""
        local = self._own()
        if local is not None:
            if local.gen is not None:
                return local.gen.stats
            if local.last_stats is not None:
                return local.last_stats
        with self._lock:
            return self.history[-1] if self.history else None

    @property
    def cache_bytes(self) -> int:
        """Bytes this thread's generation holds: boundary states and side-flow outputs."""
        gen = self._current()
        return gen.stats.cache_bytes if gen is not None else 0  # counted when states are kept

    # -- lifecycle -----------------------------------------------------------------------
    def remove(self) -> None:
        """Take every wrapper off (or switch it off where others layered on it); free state."""
        local = self._local()
        self._undo_patches()
        self._end(local)
        local.plan = local.last_plan = None
        if vars(self.model).get(_ATTR) is self:
            delattr(self.model, _ATTR)

    def _undo_patches(self) -> None:
        if self._swap is not None:
            self._swap.undo()
            self._swap = None
        if self._tracker is not None:
            self._tracker.remove()
            self._tracker = None
        while self._guards:
            self._guards.pop().undo()
        while self._patches:
            self._patches.pop().undo()

    def reset(self) -> None:
        """End this thread's generation and free its cache; history is kept."""
        local = self._local()
        self._end(local)
        local.plan = None

    def begin_generation(self, num_steps: int | None, schedule_offset: int = 0) -> None:
        """Start an explicit generation on a bare model (``handle.generation``)."""
        steps = check_num_steps(num_steps, "handle.generation(num_steps=...)")
        if (
            isinstance(schedule_offset, bool)
            or not isinstance(schedule_offset, int)
            or schedule_offset < 0
        ):
            raise InvalidInputError(
                "handle.generation(schedule_offset=...) must be an int >= 0 (the schedule "
                f"step the run starts at), got {schedule_offset!r}"
            )
        local = self._local()
        local.plan = None
        self._begin(local, num_steps=steps, source="explicit", offset=schedule_offset)

    def end_step(self) -> None:
        """The caller's sampling loop finished a step (``handle.end_step()``)."""
        gen = self._current()
        if gen is None:
            raise GenerationError(
                "handle.end_step() was called with no generation in progress in this thread; "
                "call it after the model calls of each step, inside the sampling loop"
            )
        if gen.plan is not None:
            raise GenerationError(
                f"handle.end_step() was called in a generation whose steps come from "
                f"{type(gen.plan.scheduler).__name__}.step(); the scheduler already ends them"
            )
        gen.end_step()

    def _acquire_policy(self) -> Policy:
        with self._lock:
            if not self._policy_busy:
                self._policy_busy = True
                return self.policy
        return self.policy.fork()

    def _release_policy(self, policy: Policy) -> None:
        if policy is self.policy:
            with self._lock:
                self._policy_busy = False

    def _check_wrappers(self) -> None:
        """Refuse to run a generation that some block would run without blockdance."""
        for patch in self._patches:
            if patch.knocked_out:
                what = "model" if patch.owner is self.model else "block"
                raise GenerationError(
                    f"the forward of {type(patch.owner).__name__} (a {what} blockdance "
                    "wrapped) was reset to the class's own forward since attach, "
                    "so blockdance no longer sees its calls; this happens when a hook "
                    "registered before attach (e.g. a diffusers hook) is removed. Remove the "
                    "handle and attach again after changing hooks."
                )

    def _begin(
        self,
        local: Local,
        *,
        num_steps: int | None,
        source: str,
        plan: Plan | None = None,
        offset: int = 0,
    ) -> Generation:
        """Start a generation in ``local``: empty cache, new statistics, policy told the plan."""
        self._end(local)
        self._check_wrappers()
        self._wrap_compiled_blocks()
        if plan is not None:
            steps: int | None = plan.num_steps
        else:
            steps = num_steps if num_steps is not None else self.default_num_steps
        info = GenerationInfo(
            num_steps=steps,
            slots=self.slot_info,
            architecture=self.spec.name,
            default_boundary=self.spec.default_boundary(len(self.slots)),
            default_window=self.spec.window,
            step_source=source,
            schedule_offset=plan.offset if plan is not None else offset,
            guidance_batch=self._guidance_batch(),
        )
        policy = self._acquire_policy()
        try:
            policy.begin(info)
            boundaries = policy.boundaries()
            self._check_forms(policy, dict(policy.residual_runs()))
            gen = Generation(
                policy,
                info,
                GenerationStats(
                    num_steps=steps,
                    num_blocks=len(self.slots),
                    slot_kinds=tuple(s.kind for s in self.slots),
                    policy=policy.name,
                    step_source=source,
                ),
                source=source,
                plan=plan,
                side_flows=self._side_flows(boundaries),
            )
            if not set(gen.residual) <= gen.boundaries:
                raise ReuseError(
                    f"policy {policy.name!r} lists residual runs ending at blocks "
                    f"{sorted(set(gen.residual) - gen.boundaries)} that are not in boundaries()"
                )
        except BaseException:
            self._release_policy(policy)
            raise
        for observer in self.observers:
            observer.on_generation(info)
        with self._lock:
            self.history.append(gen.stats)
        local.gen = gen
        local.last_stats = gen.stats
        return gen

    def _guidance_batch(self) -> int | None:
        """``attach(guidance_batch=)``, else the pipeline's ``do_classifier_free_guidance``."""
        if self.guidance_batch is not None or self.pipeline is None:
            return self.guidance_batch
        try:
            cfg = self.pipeline.do_classifier_free_guidance
        except Exception:
            return None
        return (2 if cfg else 1) if isinstance(cfg, bool) else None

    def _side_flows(self, boundaries: frozenset[int]) -> dict[int, int]:
        """Side-flow blocks -> the boundary that ends a reused run holding each.

        A reused run passes through until its first boundary, so a side-flow block ``k``
        is served from the step at which the smallest boundary ``>= k`` was kept. A
        side-flow block that is itself a boundary needs nothing more: its cached state is
        its output.
        """
        flows: dict[int, int] = {}
        for slot in self.slots:
            if slot.side_flow and slot.index not in boundaries:
                later = [b for b in boundaries if b > slot.index]
                if later:
                    flows[slot.index] = min(later)
        return flows

    def _check_forms(self, policy: Policy, residual: dict[int, int]) -> None:
        """Refuse a residual run whose hidden state changes form inside it."""
        for boundary, start in residual.items():
            first = self.slots[start]
            for slot in self.slots[start : boundary + 1]:
                if slot.form != first.form:
                    raise ReuseError(
                        f"policy {policy.name!r} reuses blocks {start}..{boundary} as a "
                        f"residual run (cached change added to the run's input), but the "
                        f"hidden state changes form inside it: block {start} ({first.name}) "
                        f"carries {first.form or 'the default form'!r}, block {slot.index} "
                        f"({slot.name}) {slot.form or 'the default form'!r} (e.g. two streams "
                        f"joined into one), so the change cannot be added across. Use output "
                        f"reuse (reuse='output' where the policy offers it) or residual runs "
                        f"that stay within one form."
                    )

    def _end(self, local: Local) -> None:
        gen, local.gen = local.gen, None
        if gen is None:
            return
        gen.cache.clear()
        try:
            gen.policy.end()
        finally:
            self._release_policy(gen.policy)

    # -- pipelines and schedulers -----------------------------------------------------------
    @contextlib.contextmanager
    def pipeline_call(self, pipeline: Any) -> Iterator[None]:
        """One call of the attached pipeline: one generation, its scheduler followed."""
        local = self._local()
        if local.in_pipeline:  # a pipeline calling itself (or another on the same model)
            yield
            return
        scheduler = getattr(pipeline, "scheduler", None)
        if scheduler is None or not hasattr(scheduler, "set_timesteps"):
            raise GenerationError(
                f"{type(pipeline).__name__}.scheduler is {type(scheduler).__name__}, not a "
                "diffusers scheduler with set_timesteps(); blockdance follows it for steps. "
                "Give the pipeline a diffusers scheduler, or attach to its model instead."
            )
        self._end(local)
        local.plan = None
        local.in_pipeline = True
        followed = self._tracker is not None and self._tracker.scheduler is scheduler
        tracker = None if followed else SchedulerTracker(self, scheduler)  # swapped since
        completed = False
        try:
            yield
            completed = True
        finally:
            if tracker is not None:
                tracker.remove()
            local.in_pipeline = False
            local.plan = None
            if completed and local.gen is not None:  # an aborted call raises its own error
                _warn_if_never_stepped(pipeline, local.gen)
            self._end(local)

    def announce(self, scheduler: Any) -> None:
        """``scheduler.set_timesteps`` returned: a new schedule starts a new generation."""
        local = self._local()
        source = "pipeline" if local.in_pipeline else "scheduler"
        gen = local.gen
        if gen is not None and gen.source == "explicit":
            return  # inside handle.generation(): its own rules apply
        self._end(local)
        local.plan = Plan.of(scheduler, source)
        if source == "scheduler":
            local.last_plan = local.plan

    def begin_index(self, scheduler: Any) -> None:
        """``scheduler.set_begin_index`` returned: the run starts part-way (img2img)."""
        local = self._local()
        plan = local.plan
        if plan is None or plan.scheduler is not scheduler:
            gen = local.gen
            if gen is not None and gen.plan is not None and gen.plan.scheduler is scheduler:
                raise GenerationError(
                    f"{type(scheduler).__name__}.set_begin_index() was called after the "
                    "model's first call of this generation; blockdance has already placed "
                    "steps from the start. Call it before the denoising loop, as diffusers' "
                    "pipelines do."
                )
            return
        index = getattr(scheduler, "begin_index", None)
        if not isinstance(index, int) or not 0 <= index <= len(plan.timesteps):
            raise GenerationError(
                f"{type(scheduler).__name__}.begin_index is {index!r}; expected an index into "
                f"its {len(plan.timesteps)} timesteps"
            )
        plan.offset = index

    def scheduler_generation(self, scheduler: Any) -> Generation | None:
        """This thread's generation that ``scheduler`` drives, begun if only announced."""
        local = self._local()
        plan = local.plan
        if plan is not None and plan.scheduler is scheduler:
            local.plan = None
            return self._begin(local, num_steps=None, source=plan.source, plan=plan)
        gen = local.gen
        if gen is not None and gen.plan is not None and gen.plan.scheduler is scheduler:
            return gen
        return None

    def scheduler_stepped(self, gen: Generation) -> None:
        """The scheduler finished a step of ``gen``."""
        gen.advance()
        if gen.schedule_done and gen.source == "scheduler":
            local = self._local()
            if local.gen is gen:
                self._end(local)  # a bare model's generation ends with its schedule

    # -- placing model calls -------------------------------------------------------------
    def _enter_call(self, local: Local, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        t = timestep_value(self.spec.timestep(self.model, args, kwargs))
        gen = local.gen
        if local.plan is not None:  # a scheduler announced a schedule: it starts now
            plan, local.plan = local.plan, None
            gen = self._begin(local, num_steps=None, source=plan.source, plan=plan)
        elif gen is None:
            if local.in_pipeline:
                raise GenerationError(
                    f"the pipeline called {type(self.model).__name__} before its scheduler's "
                    "set_timesteps(), so no schedule is known for this generation. blockdance "
                    "follows diffusers pipelines that call set_timesteps() before denoising; "
                    "for another loop, attach to the model and use handle.generation()."
                )
            last = local.last_plan or self._plan_at_attach
            if last is not None:  # a followed scheduler's schedule, run again
                plan = Plan(last.scheduler, last.timesteps, last.source, last.offset)
                gen = self._begin(local, num_steps=None, source=plan.source, plan=plan)
            else:
                gen = self._begin(local, num_steps=None, source="implicit")
        elif gen.ends_before(t):
            gen = self._begin(local, num_steps=None, source="implicit")
        gen.place(t)
        gen.open_call()

    def _exit_call(self, gen: Generation) -> None:
        if gen.open_run is not None:
            first, gen.open_run = gen.open_run, None
            raise ReuseError(
                f"policy {gen.policy.name!r} skipped blocks {first}.. at step "
                f"{gen.step} without a reuse boundary after them, so no cached state "
                "replaced their output. A run of reused blocks must end at a block listed "
                "in policy.boundaries()."
            )
        if gen.open_rows is not None:
            rows, gen.open_rows = gen.open_rows, None
            raise ReuseError(
                f"policy {gen.policy.name!r} skipped blocks at step {gen.step} for the samples "
                f"in rows {torch.nonzero(rows).reshape(-1).tolist()} without a reuse boundary "
                "after them, so no cached state replaced their output. A sample's run of "
                "reused blocks must end at a block listed in policy.boundaries()."
            )

    # -- wrappers ----------------------------------------------------------------------
    def _make_model(self) -> Callable[[Callable[..., Any], Patch], Callable[..., Any]]:
        def make(original: Callable[..., Any], patch: Patch) -> Callable[..., Any]:
            @functools.wraps(original)
            def forward(*args: Any, **kwargs: Any) -> Any:
                if not patch.active:
                    return original(*args, **kwargs)
                local = self._model_entered(args, kwargs)
                if local is None:  # re-entrant call (e.g. a model calling itself): pass through
                    return original(*args, **kwargs)
                try:
                    out = original(*args, **kwargs)
                except BaseException:
                    self._model_left(local)
                    raise
                self._model_left(local, args, kwargs, out)
                return out

            return _wrapper_frame(forward)

        return make

    @_python_only
    def _model_entered(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Local | None:
        """A top-level call starts: place it; None when it is a re-entrant call."""
        local = self._local()
        if local.in_call:
            return None
        self._enter_call(local, args, kwargs)
        gen = local.gen
        assert gen is not None and gen.ctx is not None
        if gen.policy.sees_calls:
            spec, model = self.spec, self.model
            gen.call = ModelCall(
                model,
                args,
                kwargs,
                latent=spec.latent(model, args, kwargs) if spec.latent else None,
                condition=spec.condition(model, args, kwargs) if spec.condition else None,
                guidance_batch=gen.info.guidance_batch,
            )
            gen.policy.begin_call(gen.ctx, gen.call)
        local.in_call = True
        return local

    @_python_only
    def _model_left(
        self,
        local: Local,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        out: Any = None,
    ) -> None:
        """A top-level call returned (``args`` given) or raised (``args`` None)."""
        local.in_call = False
        gen = local.gen
        if gen is None:
            return
        ctx, gen.ctx = gen.ctx, None
        call, gen.call = gen.call, None
        gen.run_inputs.clear()
        if args is None:
            gen.open_run = gen.open_rows = None
            return
        self._exit_call(gen)
        policy = gen.policy
        if call is not None and ctx is not None:
            policy.end_call(ctx, call, out)
        held = policy.memory_bytes()
        if held or gen.stats.policy_bytes:
            stats = gen.stats
            stats.policy_bytes = held
            stats.peak_policy_bytes = max(stats.peak_policy_bytes, held)
            self._count_cache(gen)
        if self.observers and ctx is not None:
            for observer in self.observers:
                observer.on_model(ctx, args, kwargs or {}, out)

    def _make_block(
        self, slot: BlockSlot
    ) -> Callable[[Callable[..., Any], Patch], Callable[..., Any]]:
        """The deciding wrapper of one block: on its ``forward``, or in front of its
        ``Module.compile()``d call (:meth:`_wrap_compiled_blocks`).

        In front of a compiled call, the compiled call traces the block's own ``forward`` as
        one graph (no graph break at a wrapper), and a reused call never enters it, which a
        block compiled with ``fullgraph=True`` requires (each of its calls must run a
        compiled frame).
        """
        local_var = self._local_var
        before, after, partial = self._block_before, self._block_after, self._block_rows_after

        def make(original: Callable[..., Any], patch: Patch) -> Callable[..., Any]:
            @functools.wraps(original)
            def forward(*args: Any, **kwargs: Any) -> Any:
                local = local_var.get()
                if (
                    not patch.active
                    or local is None
                    or not local.in_call
                    or local.thread != threading.get_ident()
                ):  # outside the top-level forward: behave as unwrapped
                    return original(*args, **kwargs)
                verdict = before(local, slot, args, kwargs)
                if verdict is _COMPUTE:
                    out = original(*args, **kwargs)
                    after(local, slot, out)
                    return out
                if type(verdict) is _Partial:  # some samples compute: only their rows run
                    return partial(local, slot, verdict, original(*verdict.args, **verdict.kwargs))
                return verdict  # reused: the input passed through, or the cached state

            return _wrapper_frame(forward)

        return make

    def _wrap_compiled_blocks(self) -> None:
        """Move the deciding wrapper in front of blocks that are ``Module.compile()``d.

        Checked at attach and at each generation start (blocks compiled since): the
        block's ``forward`` wrapper is taken off (or switched off) so that nothing of
        blockdance is inside the compiled call.
        """
        for slot in self.slots:
            impl = vars(slot.module).get("_compiled_call_impl")
            if impl is not None and getattr(impl, "_blockdance_patch", None) is None:
                self._patches.append(
                    Patch(slot.module, "_compiled_call_impl", self._make_block(slot))
                )
                self._forward_patches[slot.index].undo()

    @_python_only
    def _block_before(
        self, local: Local, slot: BlockSlot, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Decide for one block call: :data:`_COMPUTE`, or the value the reused block returns."""
        gen = local.gen
        assert gen is not None and gen.ctx is not None
        ctx, index, io = gen.ctx, slot.index, slot.io
        policy = gen.policy
        if index in gen.inspected:
            policy.inspect(
                ctx, index, BlockCall(slot.module, args, kwargs, io.read_input(args, kwargs))
            )
        decision = policy.decide(ctx, index)
        current = None
        if type(decision) is not Decision:  # per sample
            if not isinstance(decision, torch.Tensor):
                raise ReuseError(
                    f"policy {policy.name!r} returned {decision!r} from decide() for block "
                    f"{index}; expected a Decision or a 1-D bool tensor (per sample)"
                )
            current = io.read_input(args, kwargs)
            rows = rows_of(decision, current, policy.name)
            if type(rows) is Rows:
                return self._rows_before(gen, slot, args, kwargs, current, rows)
            decision = _REUSE if rows else Decision.COMPUTE
        gen.record.append(decision is _REUSE)
        gen.record_slots.append(index)
        if decision is not _REUSE:
            if gen.open_run is not None or gen.open_rows is not None:
                self._exit_call(gen)
            if index in gen.run_starts:  # copied: the block may change its input in place
                gen.run_inputs[index] = _copy(io.read_input(args, kwargs))
            return _COMPUTE
        gen.open_rows = None  # every row reuses: a run open for some rows is open for all
        if current is None:
            current = io.read_input(args, kwargs)
        if index not in gen.boundaries:
            if gen.open_run is None:
                gen.open_run = index
            if index in gen.side_flows:  # its output also leaves the main flow: serve the
                side = self._side_cached(gen, slot, current)  # cache step's output
                return io.to_output(_copy(side), args, kwargs)
            return io.to_output(current, args, kwargs)  # skipped: pass the input through
        run_start = index if gen.open_run is None else gen.open_run
        gen.open_run = None
        cached = self._cached(gen, slot, current)
        if policy.forecasts:
            cached = self._forecast(gen, slot, cached)
        if index in gen.residual:  # residual reuse: current input + cached change
            if gen.residual[index] != run_start:
                raise ReuseError(
                    f"policy {policy.name!r} reused blocks {run_start}..{index} at "
                    f"step {ctx.step}, but block {index}'s cached change was taken over "
                    f"the run {gen.residual[index]}..{index}: a residual run must be "
                    "reused whole"
                )
            return io.to_output(
                tuple(
                    c + d if isinstance(c, torch.Tensor) and isinstance(d, torch.Tensor) else c
                    for c, d in zip(current, cached, strict=True)
                ),
                args,
                kwargs,
            )
        return io.to_output(_copy(cached), args, kwargs)  # a copy: later blocks may write to it

    def _rows_before(
        self,
        gen: Generation,
        slot: BlockSlot,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        current: State,
        rows: Rows,
    ) -> _Partial:
        """Set up a block call in which some samples compute and the others reuse."""
        assert gen.ctx is not None
        index, policy = slot.index, gen.policy
        if gen.residual or gen.run_starts:
            raise ReuseError(
                f"policy {policy.name!r} decided per sample at block {index}, and it reuses "
                "residual runs (residual_runs()); per-sample decisions support output reuse "
                "only: the reusing samples' rows take the state cached at their last compute"
            )
        open_rows = torch.ones_like(rows.mask) if gen.open_run is not None else gen.open_rows
        if open_rows is not None and bool((open_rows & ~rows.mask).any()):
            gen.open_rows = open_rows
            self._exit_call(gen)  # samples computing here skipped the blocks before it
        gen.open_run = None
        gen.partial[len(gen.record)] = rows.reused
        gen.record.append(False)
        gen.record_slots.append(index)
        if index in gen.boundaries:
            gen.open_rows = None
            base = self._cached(gen, slot, current)
            if policy.forecasts:
                base = self._forecast(gen, slot, base)
        else:
            gen.open_rows = rows.mask if open_rows is None else open_rows | rows.mask
            base = self._side_cached(gen, slot, current) if index in gen.side_flows else current
        take = getattr(slot.io, "take_rows", take_rows)
        batch = rows.mask.shape[0]
        sub_args, sub_kwargs = take(args, kwargs, rows.compute, batch)
        return _Partial(rows, base, sub_args, sub_kwargs)

    @_python_only
    def _block_rows_after(self, local: Local, slot: BlockSlot, verdict: _Partial, out: Any) -> Any:
        """The computing rows ran: merge them with the reusing rows, then as after a compute."""
        where = f"block {slot.index} ({slot.name})"
        state = merge_rows(verdict.base, slot.io.to_state(out), verdict.rows.compute, where)
        merged = slot.io.to_output(state, verdict.args, verdict.kwargs)
        self._block_after(local, slot, merged)
        return merged

    @_python_only
    def _block_after(self, local: Local, slot: BlockSlot, out: Any) -> None:
        """A block computed: keep its state at a boundary, let the policy and observers see."""
        gen = local.gen
        assert gen is not None and gen.ctx is not None
        ctx, index = gen.ctx, slot.index
        policy = gen.policy
        if index in gen.side_flows and policy.keep(ctx, gen.side_flows[index]):
            gen.side_staged[index] = _copy(slot.io.to_state(out))  # kept with its boundary
        if index in gen.boundaries and policy.keep(ctx, index):
            self._keep(gen, index, slot.io.to_state(out))
        if policy.observes:
            policy.observe(ctx, index, out)
        for observer in self.observers:
            observer.on_block(ctx, index, out)

    # -- cache -------------------------------------------------------------------------
    def _keep(self, gen: Generation, index: int, state: State) -> None:
        """Keep a boundary's output, or its residual over the run when reused as one."""
        assert gen.ctx is not None
        start = gen.residual.get(index)
        if start is not None:
            before = gen.run_inputs.get(start)
            if before is None:  # the run's first block did not compute in this call
                return
            state = tuple(
                o - i if isinstance(o, torch.Tensor) and isinstance(i, torch.Tensor) else o
                for o, i in zip(state, before, strict=True)
            )
        else:
            state = _copy(state)  # later blocks may write to the tensor the model passes on
        branch = gen.ctx.branch
        gen.cache[(branch, index)] = state
        for block, boundary in gen.side_flows.items():
            if boundary == index and block in gen.side_staged:
                gen.side_cache[(branch, block)] = gen.side_staged.pop(block)
        self._count_cache(gen)

    @staticmethod
    def _count_cache(gen: Generation) -> None:
        """Bytes held now: cached states, side-flow outputs and the policy's own."""
        stats = gen.stats
        stats.side_flow_bytes = sum(_state_bytes(s) for s in gen.side_cache.values())
        held = sum(_state_bytes(s) for s in gen.cache.values())
        stats.cache_bytes = stats.side_flow_bytes + held + stats.policy_bytes
        stats.peak_cache_bytes = max(stats.peak_cache_bytes, stats.cache_bytes)
        stats.peak_side_flow_bytes = max(stats.peak_side_flow_bytes, stats.side_flow_bytes)

    def _side_cached(self, gen: Generation, slot: BlockSlot, current: State) -> State:
        """The output a reused side-flow block gave at its run's cache step."""
        ctx = gen.ctx
        assert ctx is not None
        cached = gen.side_cache.get((ctx.branch, slot.index))
        if cached is None:
            boundary = gen.side_flows[slot.index]
            raise ReuseError(
                f"policy {gen.policy.name!r} reused block {slot.index} ({slot.name}) at step "
                f"{ctx.step}, branch {ctx.branch}; its output also feeds a side flow (the "
                f"spec marks it side_flow), but it has no output kept with block {boundary}, "
                "the boundary ending its run. The block must compute at the step whose "
                f"boundary state is reused (policy.keep() true for block {boundary} there)."
            )
        return self._fitting(gen, slot, cached, current, "side-flow output")

    def _cached(self, gen: Generation, slot: BlockSlot, current: State) -> State:
        ctx = gen.ctx
        assert ctx is not None
        cached = gen.cache.get((ctx.branch, slot.index))
        if cached is None:
            raise ReuseError(
                f"policy {gen.policy.name!r} reused block {slot.index} ({slot.name}) at step "
                f"{ctx.step}, branch {ctx.branch}, but that block has not computed (and been "
                "kept) earlier in this generation and branch. The policy must compute a "
                "boundary block at an earlier step before reusing it."
            )
        return self._fitting(gen, slot, cached, current, "state")

    @staticmethod
    def _forecast(gen: Generation, slot: BlockSlot, cached: State) -> State:
        """The policy's state for a reused boundary, checked against the cached one."""
        ctx = gen.ctx
        assert ctx is not None
        state = gen.policy.forecast(ctx, slot.index, cached)
        if not isinstance(state, tuple) or not _fits(cached, state):
            found = _describe(state) if isinstance(state, tuple) else repr(type(state))
            raise ReuseError(
                f"policy {gen.policy.name!r} forecast [{found}] for block {slot.index} "
                f"({slot.name}) at step {ctx.step}, which does not fit its cached state "
                f"[{_describe(cached)}]; forecast() must return a tuple with the cached "
                "state's shapes, dtypes and devices"
            )
        return state

    @staticmethod
    def _fitting(
        gen: Generation, slot: BlockSlot, cached: State, current: State, what: str
    ) -> State:
        """``cached``, or a clear error when it does not fit the block's current input."""
        if not _fits(cached, current):
            ctx = gen.ctx
            assert ctx is not None
            raise StaleCacheError(
                f"cached {what} of block {slot.index} ({slot.name}), branch {ctx.branch}, "
                f"does not fit the current call at step {ctx.step}: cached "
                f"[{_describe(cached)}], current input [{_describe(current)}]. The batch "
                "size, resolution, dtype or device changed inside one generation; start a "
                "new generation (handle.reset(), or a new pipeline call) when inputs change."
            )
        return cached
