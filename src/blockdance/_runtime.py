"""The runtime: wraps block ``forward`` methods so a REUSE decision skips the compute.

One :class:`Runtime` is attached to one model. It wraps the top-level ``forward`` (to
learn the step and guidance branch from the timestep), every block's ``forward`` (to
ask the policy and skip, pass through or substitute), and — for a diffusers
pipeline — the scheduler's ``set_timesteps`` (to learn the step count and the start
of a generation). Everything is restored on :meth:`Runtime.remove`.
"""

from __future__ import annotations

import collections
import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from blockdance.architecture import ArchitectureSpec, BlockSlot, State, timestep_value
from blockdance.errors import AlreadyAttachedError, ReuseError, StaleCacheError
from blockdance.observer import Observer
from blockdance.policy import Decision, GenerationInfo, Policy, SlotInfo, StepContext
from blockdance.stats import CallRecord, GenerationStats

_ATTR = "_blockdance_runtime"
_REUSE = Decision.REUSE
_HISTORY = 64


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
        if isinstance(a, torch.Tensor) and (
            a.shape != b.shape or a.dtype != b.dtype or a.device != b.device
        ):
            return False
    return True


class _Patch:
    """One replaced ``forward`` (or other method) that can be put back exactly."""

    def __init__(self, owner: Any, attr: str, replacement: Callable[..., Any]) -> None:
        self.owner = owner
        self.attr = attr
        self.had_instance_attr = attr in vars(owner)
        self.previous = vars(owner).get(attr)
        setattr(owner, attr, replacement)

    def undo(self) -> None:
        if self.had_instance_attr:
            setattr(self.owner, self.attr, self.previous)
        else:
            delattr(self.owner, self.attr)


class Runtime:
    """State and wrappers for one attached model.

    Args:
        model: The top-level denoiser (e.g. a DiT or a diffusers transformer).
        spec: Its architecture.
        policy: The policy that decides.
        num_steps: Default step count for generations that do not announce one.
        scheduler: A diffusers scheduler whose ``set_timesteps`` starts a generation.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ArchitectureSpec,
        policy: Policy,
        *,
        num_steps: int | None = None,
        scheduler: Any = None,
    ) -> None:
        if getattr(model, _ATTR, None) is not None:
            raise AlreadyAttachedError(
                f"{type(model).__name__} already has a blockdance runtime attached; call "
                ".remove() on its handle (or leave its `with` block) before attaching again"
            )
        self.model = model
        self.spec = spec
        self.policy = policy
        self.default_num_steps = num_steps
        self.slots: Sequence[BlockSlot] = list(spec.blocks(model))
        if not self.slots:
            raise ValueError(
                f"architecture {spec.name!r} found no blocks in {type(model).__name__}"
            )
        self.slot_info = tuple(SlotInfo(s.index, s.kind, s.name) for s in self.slots)
        self.boundaries: frozenset[int] = frozenset()
        self.residual: dict[int, int] = {}  # boundary -> first block of its residual run
        self._run_starts: frozenset[int] = frozenset()
        self._run_inputs: dict[int, State] = {}  # inputs of residual-run starts, this call
        self.observers: list[Observer] = []

        # per-generation state
        self.cache: dict[tuple[int, int], State] = {}
        self.ctx: StepContext | None = None
        self.stats: GenerationStats | None = None
        self.history: collections.deque[GenerationStats] = collections.deque(maxlen=_HISTORY)
        self._active = False  # a generation is running
        self._explicit = False  # its start and end are announced (pipeline / context)
        self._last_t: float | None = None
        self._step = -1
        self._branch = 0
        self._record: list[bool] = []
        self._record_slots: list[int] = []
        self._open_run: int | None = None  # first block of a pass-through run awaiting a boundary
        self._in_call = False

        self._patches: list[_Patch] = []
        try:
            for slot in self.slots:
                self._patches.append(_Patch(slot.module, "forward", self._wrap_block(slot)))
            self._patches.append(_Patch(model, "forward", self._wrap_model(model.forward)))
            if scheduler is not None:
                self._patches.append(
                    _Patch(scheduler, "set_timesteps", self._wrap_set_timesteps(scheduler))
                )
        except Exception:
            self._undo_patches()
            raise
        setattr(model, _ATTR, self)

    # -- lifecycle -----------------------------------------------------------------------
    def remove(self) -> None:
        """Put every wrapped method back and free the cache."""
        self._undo_patches()
        self.reset()
        if getattr(self.model, _ATTR, None) is self:
            delattr(self.model, _ATTR)

    def _undo_patches(self) -> None:
        while self._patches:
            self._patches.pop().undo()

    def reset(self) -> None:
        """End the current generation and free the cache; history is kept."""
        self._end_generation()
        self.cache.clear()

    def begin_generation(self, num_steps: int | None, *, explicit: bool) -> None:
        """Start a generation: empty cache, new statistics, policy told the plan."""
        self._end_generation()
        self.cache.clear()
        steps = num_steps if num_steps is not None else self.default_num_steps
        info = GenerationInfo(
            num_steps=steps,
            slots=self.slot_info,
            architecture=self.spec.name,
            default_boundary=self.spec.default_boundary(len(self.slots)),
            default_window=self.spec.window,
        )
        self.policy.begin(info)
        self.boundaries = self.policy.boundaries()
        self.residual = dict(self.policy.residual_runs())
        if not set(self.residual) <= self.boundaries:
            raise ReuseError(
                f"policy {self.policy.name!r} lists residual runs ending at blocks "
                f"{sorted(set(self.residual) - self.boundaries)} that are not in boundaries()"
            )
        self._run_starts = frozenset(self.residual.values())
        for observer in self.observers:
            observer.on_generation(info)
        self.stats = GenerationStats(
            num_steps=steps,
            num_blocks=len(self.slots),
            slot_kinds=tuple(s.kind for s in self.slots),
            policy=self.policy.name,
        )
        self.history.append(self.stats)
        self._active = True
        self._explicit = explicit
        self._last_t = None
        self._step = -1
        self._branch = 0

    def _end_generation(self) -> None:
        if self._active:
            self.policy.end()
        self._active = False
        self._explicit = False
        self.ctx = None
        self._open_run = None

    # -- step and branch tracking ----------------------------------------------------
    def _starts_new_generation(self, t: float | None) -> bool:
        if not self._active:
            return True
        if self._explicit or self._step < 0:
            return False
        if t is not None and self._last_t is not None and t > self._last_t:
            return True  # timesteps descend along a trajectory: a rise starts a new one
        steps = self.stats.num_steps if self.stats is not None else None
        new_step = t is None or t != self._last_t
        return steps is not None and new_step and self._step + 1 >= steps

    def _enter_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        t = timestep_value(self.spec.timestep(self.model, args, kwargs))
        if self._starts_new_generation(t):
            self.begin_generation(None, explicit=False)
        if self._step >= 0 and t is not None and t == self._last_t:
            self._branch += 1
        else:
            self._step += 1
            self._branch = 0
            self._last_t = t
        assert self.stats is not None
        steps = self.stats.num_steps
        if steps is not None and self._step == steps and self._branch == 0:
            warnings.warn(
                f"the model was called for step {self._step} of a generation announced with "
                f"{steps} steps; policy {self.policy.name!r} schedules only steps 0..{steps - 1} "
                "and computes the rest fully. Schedulers that evaluate the model more than "
                "once per step (e.g. Heun) are not supported by step-based policies.",
                RuntimeWarning,
                stacklevel=3,
            )
        self.ctx = StepContext(
            step=self._step, num_steps=self.stats.num_steps, timestep=t, branch=self._branch
        )
        self._record, self._record_slots = [], []
        self.stats.calls.append(
            CallRecord(self._step, self._branch, t, self._record, self._record_slots)
        )
        self._open_run = None
        self._run_inputs.clear()

    def _exit_call(self) -> None:
        if self._open_run is not None:
            first, self._open_run = self._open_run, None
            raise ReuseError(
                f"policy {self.policy.name!r} skipped blocks {first}.. at step "
                f"{self._step} without a reuse boundary after them, so no cached state "
                "replaced their output. A run of reused blocks must end at a block listed "
                "in policy.boundaries()."
            )

    # -- wrappers ----------------------------------------------------------------------
    def _wrap_model(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def forward(*args: Any, **kwargs: Any) -> Any:
            if self._in_call:  # re-entrant call (e.g. a model calling itself): pass through
                return original(*args, **kwargs)
            self._enter_call(args, kwargs)
            ctx = self.ctx
            self._in_call = True
            try:
                out = original(*args, **kwargs)
            finally:
                self._in_call = False
                self.ctx = None
                self._run_inputs.clear()
            self._exit_call()
            if self.observers and ctx is not None:
                for observer in self.observers:
                    observer.on_model(ctx, args, kwargs, out)
            return out

        return forward

    def _wrap_set_timesteps(self, scheduler: Any) -> Callable[..., Any]:
        original = scheduler.set_timesteps

        @functools.wraps(original)
        def set_timesteps(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            self.begin_generation(len(scheduler.timesteps), explicit=True)
            return out

        return set_timesteps

    def _wrap_block(self, slot: BlockSlot) -> Callable[..., Any]:
        original = slot.module.forward
        index = slot.index
        io = slot.io
        policy = self.policy
        observes = policy.observes

        @functools.wraps(original)
        def forward(*args: Any, **kwargs: Any) -> Any:
            ctx = self.ctx
            if ctx is None:  # called outside the top-level forward: behave as unwrapped
                return original(*args, **kwargs)
            decision = policy.decide(ctx, index)
            self._record.append(decision is _REUSE)
            self._record_slots.append(index)
            if decision is not _REUSE:
                if self._open_run is not None:
                    self._exit_call()
                if index in self._run_starts:
                    self._run_inputs[index] = io.read_input(args, kwargs)
                out = original(*args, **kwargs)
                if index in self.boundaries and policy.keep(ctx, index):
                    self._keep(ctx.branch, index, io.to_state(out))
                if observes:
                    policy.observe(ctx, index, out)
                if self.observers:
                    for observer in self.observers:
                        observer.on_block(ctx, index, out)
                return out
            current = io.read_input(args, kwargs)
            if index not in self.boundaries:
                if self._open_run is None:
                    self._open_run = index
                return io.to_output(current, args, kwargs)  # skipped: pass the input through
            run_start = index if self._open_run is None else self._open_run
            self._open_run = None
            cached = self._cached(ctx, slot, current)
            if index in self.residual:  # residual reuse: current input + cached change
                if self.residual[index] != run_start:
                    raise ReuseError(
                        f"policy {self.policy.name!r} reused blocks {run_start}..{index} at "
                        f"step {ctx.step}, but block {index}'s cached change was taken over "
                        f"the run {self.residual[index]}..{index}: a residual run must be "
                        "reused whole"
                    )
                cached = tuple(
                    c + d if isinstance(c, torch.Tensor) else c
                    for c, d in zip(current, cached, strict=True)
                )
            return io.to_output(cached, args, kwargs)

        return forward

    # -- cache -------------------------------------------------------------------------
    def _keep(self, branch: int, index: int, state: State) -> None:
        """Keep a boundary's output, or its residual over the run when reused as one."""
        start = self.residual.get(index)
        if start is not None:
            before = self._run_inputs.get(start)
            if before is None:  # the run's first block did not compute in this call
                return
            state = tuple(
                o - i if isinstance(o, torch.Tensor) else o
                for o, i in zip(state, before, strict=True)
            )
        self._store(branch, index, state)

    def _store(self, branch: int, index: int, state: State) -> None:
        self.cache[(branch, index)] = state
        stats = self.stats
        if stats is not None:
            stats.cache_bytes = sum(_state_bytes(s) for s in self.cache.values())
            stats.peak_cache_bytes = max(stats.peak_cache_bytes, stats.cache_bytes)

    def _cached(self, ctx: StepContext, slot: BlockSlot, current: State) -> State:
        cached = self.cache.get((ctx.branch, slot.index))
        if cached is None:
            raise ReuseError(
                f"policy {self.policy.name!r} reused block {slot.index} ({slot.name}) at step "
                f"{ctx.step}, branch {ctx.branch}, but that block has not computed (and been "
                "kept) earlier in this generation and branch. The policy must compute a "
                "boundary block at an earlier step before reusing it."
            )
        if not _fits(cached, current):
            raise StaleCacheError(
                f"cached state of block {slot.index} ({slot.name}), branch {ctx.branch}, "
                f"does not fit the current call at step {ctx.step}: cached "
                f"[{_describe(cached)}], current input [{_describe(current)}]. The batch "
                "size, resolution, dtype or device changed inside one generation; start a "
                "new generation (handle.reset(), or a new pipeline call) when inputs change."
            )
        return cached

    @property
    def cache_bytes(self) -> int:
        return sum(_state_bytes(s) for s in self.cache.values())
