"""Per-generation state, and how each model call is placed in a step and a branch.

Everything one generation needs — its policy instance, its cache, its statistics, its step
counter — lives in one :class:`Generation`. The runtime keeps one per thread and per request
(a :class:`Local` in a context variable), so two threads driving one attached model never
share a step or a cache.

Steps are *known* where they can be:

- ``source="pipeline"`` / ``"scheduler"``: a diffusers scheduler announced the schedule
  (``set_timesteps``, ``set_begin_index``) and each ``scheduler.step()`` call ends a step; the
  model calls between two ``step()`` calls are the step's guidance branches, in call order.
  The timestep passed to ``step()`` is checked against the schedule.
- ``source="explicit"`` / ``"implicit"`` (bare models, the stated fallback): a call whose
  timestep equals the previous call's is the next branch of the same step, any other timestep
  starts the next step. Inside ``handle.generation()`` a rising timestep, or a step with more
  calls than the first step had, raises :class:`~blockdance.errors.GenerationError` instead of
  being misread; outside one (implicit), a rise starts a new generation.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from blockdance.architecture import State
from blockdance.errors import GenerationError
from blockdance.policy import GenerationInfo, ModelCall, Policy, StepContext
from blockdance.stats import CallRecord, GenerationStats

#: Relative tolerance when a scheduler's timestep is compared with its schedule.
_REL_TOL = 1e-6


@dataclass
class Plan:
    """A schedule announced by a diffusers scheduler.

    Args:
        scheduler: The scheduler that announced it.
        timesteps: Its ``timesteps`` after ``set_timesteps``, as floats (one per model
            evaluation: multi-evaluation schedulers such as Heun repeat values).
        source: ``"pipeline"`` (followed during a pipeline call) or ``"scheduler"`` (a bare
            model's scheduler).
        offset: Index of the first timestep run (``set_begin_index``; img2img starts late).
    """

    scheduler: Any
    timesteps: list[float]
    source: str = "pipeline"
    offset: int = 0

    @property
    def num_steps(self) -> int:
        """Steps the generation runs: the schedule from ``offset`` on."""
        return len(self.timesteps) - self.offset

    @staticmethod
    def of(scheduler: Any, source: str) -> Plan:
        """The plan a scheduler holds: its timesteps, and its begin index where one is set."""
        timesteps = getattr(scheduler, "timesteps", None)
        if timesteps is None:
            raise GenerationError(
                f"{type(scheduler).__name__}.set_timesteps() left no `timesteps`; blockdance "
                "reads the schedule from it. Attach to the model with num_steps= instead."
            )
        values = [float(t) for t in torch.as_tensor(timesteps).reshape(-1).tolist()]
        index = getattr(scheduler, "begin_index", None)  # None: set_timesteps reset it
        return Plan(scheduler, values, source, index if isinstance(index, int) else 0)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _REL_TOL * max(1.0, abs(b))


class Generation:
    """The state of one generation: policy, cache, statistics and where the calls are.

    Args:
        policy: The policy instance deciding this generation (``begin`` already called).
        info: What the policy was told.
        stats: The statistics being recorded.
        source: How steps are known: ``"pipeline"``, ``"scheduler"``, ``"explicit"`` or
            ``"implicit"`` (see the module docstring).
        plan: The scheduler's schedule (``pipeline`` and ``scheduler`` sources).
        side_flows: Side-flow block -> the boundary that ends any reused run holding it.
    """

    def __init__(
        self,
        policy: Policy,
        info: GenerationInfo,
        stats: GenerationStats,
        *,
        source: str,
        plan: Plan | None = None,
        side_flows: dict[int, int] | None = None,
    ) -> None:
        self.policy = policy
        self.info = info
        self.stats = stats
        self.source = source
        self.plan = plan
        self.thread = threading.get_ident()
        self.boundaries: frozenset[int] = policy.boundaries()
        self.residual: dict[int, int] = dict(policy.residual_runs())
        self.run_starts: frozenset[int] = frozenset(self.residual.values())
        self.cache: dict[tuple[int, int], State] = {}
        self.side_flows: dict[int, int] = side_flows or {}
        self.side_cache: dict[tuple[int, int], State] = {}  # (branch, side-flow block) -> output
        self.side_staged: dict[int, State] = {}  # side-flow outputs of this call, to keep
        # where the calls are
        self.counted = plan is not None  # steps end by explicit marks, not timestep values
        self.step = 0 if plan is not None else -1
        self.branch = 0
        self.calls_in_step = 0
        self.last_t: float | None = None
        self.first_step_calls: int | None = None  # calls the first step made (timestep mode)
        self.warned_past_end = False
        # the model call in progress
        self.ctx: StepContext | None = None
        self.record: list[bool] = []
        self.record_slots: list[int] = []
        self.open_run: int | None = None  # first block of a pass-through run awaiting a boundary
        self.run_inputs: dict[int, State] = {}  # inputs of residual-run starts, this call
        self.open_rows: torch.Tensor | None = None  # (B,) rows in a pass-through run, per sample
        self.partial: dict[int, float] = {}  # this call's per-sample block calls (stats)
        self.inspected: frozenset[int] = policy.inspects()
        self.call: ModelCall | None = None  # the model call in progress, for sees_calls

    @property
    def num_steps(self) -> int | None:
        return self.info.num_steps

    # -- placing a model call ------------------------------------------------------------
    def ends_before(self, t: float | None) -> bool:
        """Whether a call at timestep ``t`` starts a new implicit generation."""
        if self.source != "implicit" or self.step < 0:
            return False
        if t is not None and self.last_t is not None and t > self.last_t:
            return True  # timesteps descend along a trajectory: a rise starts a new one
        steps = self.num_steps
        new_step = t is None or t != self.last_t
        return steps is not None and new_step and self.step + 1 >= steps

    def place(self, t: float | None) -> None:
        """Give the model call at timestep ``t`` its step and branch."""
        if self.counted:  # steps end by scheduler.step() / handle.end_step(): calls are branches
            self.branch = self.calls_in_step
            self.calls_in_step += 1
            self.last_t = t
        elif self.step >= 0 and t is not None and t == self.last_t:
            self.branch += 1
            if self.first_step_calls is not None and self.branch >= self.first_step_calls:
                self._unreadable(f"step {self.step} made call {self.branch + 1} at timestep {t:g}")
        else:
            if self.step >= 0 and t is not None and self.last_t is not None and t > self.last_t:
                raise GenerationError(
                    f"the timestep rose from {self.last_t:g} to {t:g} at step {self.step + 1} "
                    "inside one explicit generation: a new trajectory started in the middle "
                    "of it. Wrap each trajectory in its own `with handle.generation(...)`, or "
                    "pass the scheduler to attach() so steps come from scheduler.step()."
                )
            if self.step >= 0:
                calls = self.branch + 1
                if self.first_step_calls is None:
                    self.first_step_calls = calls
                elif calls < self.first_step_calls:
                    self._unreadable(f"step {self.step} made {calls} call(s)")
            self.step += 1
            self.branch = 0
            self.last_t = t
        self._warn_past_end()

    def _unreadable(self, what: str) -> None:
        raise GenerationError(
            f"{what}, but the first step made {self.first_step_calls}. Steps are read from "
            "timestep values here (same value: next guidance branch, new value: next step), "
            "and calls per step that vary mean this reading fails: two steps sharing one "
            "timestep (low-precision timesteps, e.g. bf16), a sampler that evaluates the model "
            "more than once per timestep (Heun), or guidance switched on or off part-way. "
            "blockdance will not guess: pass the diffusers scheduler that drives the loop "
            "(attach(model, ..., scheduler=scheduler)), or call handle.end_step() after each "
            "step, or attach to the pipeline."
        )

    def end_step(self) -> None:
        """The caller marked the end of a step: steps are counted from these marks now."""
        if not self.counted:
            self.counted = True
            self.step = max(self.step, 0)
        self.advance()

    def advance_check(self, t: Any) -> None:
        """``scheduler.step(..., t, ...)`` is called: ``t`` must be this step's timestep."""
        plan = self.plan
        assert plan is not None
        index = plan.offset + self.step
        if t is not None and index < len(plan.timesteps):
            value = float(torch.as_tensor(t).reshape(-1)[0])
            expected = plan.timesteps[index]
            if not _close(value, expected):
                where = [i for i, v in enumerate(plan.timesteps) if _close(value, v)]
                found = f"index {where[0]}" if where else "not in the schedule"
                raise GenerationError(
                    f"{type(plan.scheduler).__name__}.step() was called with timestep "
                    f"{value:g} ({found}) where blockdance counted step {self.step} of this "
                    f"generation, schedule index {index} (timestep {expected:g}). The loop "
                    "does not run the schedule the scheduler announced: it may start part-way "
                    "without scheduler.set_begin_index() (img2img on a scheduler without it, "
                    "e.g. DDIM), or reuse a schedule after an interrupted run. Call "
                    "scheduler.set_timesteps() (and set_begin_index()) for each generation, "
                    "or drive the model inside `with handle.generation(num_steps=...)`."
                )

    def advance(self) -> None:
        """The scheduler finished a step: the next model call starts the next one."""
        self.step += 1
        self.calls_in_step = 0

    @property
    def schedule_done(self) -> bool:
        return self.plan is not None and self.step >= self.plan.num_steps

    def _warn_past_end(self) -> None:
        steps = self.num_steps
        if steps is None or self.step < steps or self.warned_past_end:
            return
        self.warned_past_end = True
        warnings.warn(
            f"the model was called for step {self.step} of a generation announced with "
            f"{steps} steps; policy {self.policy.name!r} schedules only steps 0..{steps - 1} "
            "and computes the rest fully.",
            RuntimeWarning,
            stacklevel=5,
        )

    def open_call(self) -> StepContext:
        """Start recording the model call placed by :meth:`place`."""
        ctx = StepContext(
            step=self.step, num_steps=self.num_steps, timestep=self.last_t, branch=self.branch
        )
        self.ctx = ctx
        self.record, self.record_slots, self.partial = [], [], {}
        self.stats.calls.append(
            CallRecord(
                self.step, self.branch, self.last_t, self.record, self.record_slots, self.partial
            )
        )
        self.open_run = None
        self.open_rows = None
        self.call = None
        self.run_inputs.clear()
        self.side_staged.clear()
        return ctx


@dataclass
class Local:
    """What one thread or request is doing with one attached runtime.

    Args:
        thread: The thread that owns it (a context copied into another thread is not shared).
    """

    thread: int = field(default_factory=threading.get_ident)
    gen: Generation | None = None
    plan: Plan | None = None  # announced by a scheduler, not yet begun
    last_plan: Plan | None = None  # a bare model's scheduler: reused by the next generation
    last_stats: GenerationStats | None = None
    in_call: bool = False
    in_pipeline: bool = False
