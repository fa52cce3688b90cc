"""The ``dbcache`` policy: cache-dit's DBCache (Dual Block Cache), natively.

cache-dit (vipshop/cache-dit) splits the stack into the first ``Fn`` blocks, a middle run
and the last ``Bn`` blocks:

- The first ``Fn`` blocks always compute. Right after block ``Fn - 1``, their residual
  ``r = output(Fn - 1) - input(0)`` (the first stream: the image tokens on a two-stream
  model) is compared with its value ``p`` at the last step of the same guidance branch that
  computed fully: ``mean|r - p| / mean|p|``.
- Below ``residual_diff_threshold``, from step ``max_warmup_steps`` on and within the caps
  on cached steps, the middle blocks ``Fn..last - Bn`` are reused as one residual run: the
  change they made at the last full step is added to block ``Fn``'s current input. The last
  ``Bn`` blocks compute on the result. Otherwise the step computes fully and ``r`` becomes
  the new reference (a reused step does not move it).
- ``taylorseer``: a reused step adds, instead of the last change of the middle run, the
  Newton extrapolation to the current step of its changes at the last ``taylorseer_order +
  1`` full steps (finite differences in the step index, as cache-dit's TaylorSeer and
  ``blockdance-forecast`` do).

With ``Fn=1, Bn=0`` and no forecast this is ``first-block-cache`` comparing block 0's
residual instead of its output. The decision reads a tensor: one host sync per step and
branch, after block ``Fn - 1``. A residual run cannot span blocks whose hidden state changes
form (Flux's double- and single-stream blocks); the runtime refuses such a split clearly.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from blockdance.policies.forecast import newton_forecast
from blockdance.policy import BlockCall, Decision, GenerationInfo, Policy, PolicyConfig, StepContext

__all__ = ["DBCacheConfig", "DBCachePolicy"]

State = tuple[torch.Tensor | None, ...]


class DBCacheConfig(PolicyConfig):
    """Configuration of the ``dbcache`` policy."""

    kind: Literal["dbcache"] = "dbcache"
    Fn: int = Field(1, ge=1, description="First blocks that always compute (the indicator).")
    Bn: int = Field(0, ge=0, description="Last blocks that always compute (the refiners).")
    residual_diff_threshold: float = Field(
        0.08,
        ge=0.0,
        description="Reuse the middle blocks when the first Fn blocks' residual changed, in "
        "relative L1 mean|r-p| / mean|p| since the last full step, by less than this "
        "(0: never reuse).",
    )
    max_warmup_steps: int = Field(
        8, ge=0, description="The first steps that always compute (cache-dit's default 8)."
    )
    max_cached_steps: int | None = Field(
        None, ge=0, description="At most this many reused steps per branch; None: no limit."
    )
    max_continuous_cached_steps: int | None = Field(
        None, ge=1, description="At most this many reused steps in a row; None: no limit."
    )
    taylorseer: bool = Field(
        False,
        description="Forecast the middle run's change from its changes at the last full "
        "steps instead of repeating the last one.",
    )
    taylorseer_order: int = Field(
        1, ge=1, le=2, description="Finite-difference order of the forecast: 1 linear, 2 quadratic."
    )


def _state(info: GenerationInfo, slot: int, output: Any) -> State:
    io = info.slots[slot].io
    return tuple(io.to_state(output)) if io is not None else (output,)


def _nbytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


class DBCachePolicy(Policy[DBCacheConfig]):
    """Compute the first ``Fn`` and last ``Bn`` blocks; reuse the middle run's change when
    the first blocks' residual barely changed."""

    config_class = DBCacheConfig
    observes = True
    forecasts = True  # without ``taylorseer`` the forecast is the cached change itself

    def __init__(self, config: DBCacheConfig) -> None:
        super().__init__(config)
        self.middle = (config.Fn, -1)  # the reused run: first, last block
        self._start: dict[int, torch.Tensor] = {}  # branch -> input of block 0, this call
        self._reference: dict[int, torch.Tensor] = {}  # branch -> Fn residual, last full step
        self._reuse_at: dict[int, int] = {}  # branch -> the step that reuses the middle run
        self._in_a_row: dict[int, int] = {}
        self._cached: dict[int, int] = {}
        self._run_input: dict[int, State] = {}  # branch -> input of block Fn, this call
        self._history: dict[int, list[tuple[int, State]]] = {}  # branch -> middle changes

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        cfg = self.config
        last = info.num_blocks - 1 - cfg.Bn
        if last < cfg.Fn:
            raise ValueError(
                f"dbcache Fn={cfg.Fn} and Bn={cfg.Bn} leave no middle block to reuse: the model "
                f"has {info.num_blocks} blocks, so Fn + Bn must be at most {info.num_blocks - 1}"
            )
        self.middle = (cfg.Fn, last)
        self.end()

    def end(self) -> None:
        self._start = {}
        self._reference = {}
        self._reuse_at = {}
        self._in_a_row = {}
        self._cached = {}
        self._run_input = {}
        self._history = {}

    def inspects(self) -> frozenset[int]:
        return frozenset({0, self.config.Fn}) if self.config.taylorseer else frozenset({0})

    def inspect(self, ctx: StepContext, slot: int, call: BlockCall) -> None:
        if slot == 0:
            first = call.state[0]
            if first is None:
                raise ValueError("dbcache: block 0 receives no hidden state in stream 0")
            self._start[ctx.branch] = first.detach().clone()
        elif self._reuse_at.get(ctx.branch) != ctx.step:  # block Fn, computing: keep its input
            self._run_input[ctx.branch] = tuple(
                t.detach().clone() if t is not None else None for t in call.state
            )

    def decide(self, ctx: StepContext, slot: int) -> Decision:
        first, last = self.middle
        if first <= slot <= last and self._reuse_at.get(ctx.branch) == ctx.step:
            return Decision.REUSE
        return Decision.COMPUTE

    def observe(self, ctx: StepContext, slot: int, output: Any) -> None:
        assert self.info is not None
        if slot == self.config.Fn - 1:
            self._indicate(ctx, _state(self.info, slot, output))
        if self.config.taylorseer and slot == self.middle[1]:
            before = self._run_input.pop(ctx.branch)
            after = _state(self.info, slot, output)
            change = tuple(
                o - i if isinstance(o, torch.Tensor) and isinstance(i, torch.Tensor) else o
                for o, i in zip(after, before, strict=True)
            )
            kept = self._history.setdefault(ctx.branch, [])
            kept.append((ctx.step, change))
            del kept[: -(self.config.taylorseer_order + 1)]

    def _indicate(self, ctx: StepContext, state: State) -> None:
        """Decide the step from the first Fn blocks' residual; refresh it on a full step."""
        branch, cfg = ctx.branch, self.config
        start = self._start.pop(branch)
        out = state[0]
        assert out is not None
        residual = out.detach() - start
        reference = self._reference.get(branch)
        in_a_row = self._in_a_row.get(branch, 0)
        cached = self._cached.get(branch, 0)
        row_cap = cfg.max_continuous_cached_steps
        if (
            reference is not None
            and ctx.step >= cfg.max_warmup_steps
            and (cfg.max_cached_steps is None or cached < cfg.max_cached_steps)
            and (row_cap is None or in_a_row < row_cap)
            and reference.shape == residual.shape
            and self._similar(residual, reference)
        ):
            self._reuse_at[branch] = ctx.step
            self._in_a_row[branch] = in_a_row + 1
            self._cached[branch] = cached + 1
            return
        self._reuse_at.pop(branch, None)
        self._in_a_row[branch] = 0
        self._reference[branch] = residual

    def _similar(self, current: torch.Tensor, reference: torch.Tensor) -> bool:
        change = (current.float() - reference.float()).abs().sum()
        scale = reference.float().abs().sum()
        # change / scale < threshold without dividing (scale may be 0): one host sync
        return bool((change < self.config.residual_diff_threshold * scale).item())

    def forecast(self, ctx: StepContext, slot: int, cached: State) -> State:
        if not self.config.taylorseer:
            return cached
        points = self._history.get(ctx.branch, [])
        return newton_forecast(points, ctx.step) if len(points) >= 2 else cached

    def boundaries(self) -> frozenset[int]:
        return frozenset({self.middle[1]})

    def residual_runs(self) -> dict[int, int]:
        first, last = self.middle
        return {last: first}

    def memory_bytes(self) -> int:
        """The Fn residual references, and the middle run's changes kept for the forecast."""
        held = _nbytes(self._reference.values()) + _nbytes(self._start.values())
        for points in self._history.values():
            held += sum(_nbytes(state) for _, state in points)
        return held + sum(_nbytes(s) for s in self._run_input.values())
