"""BlockDance whose reuse steps forecast the structural state instead of repeating it.

BlockDance substitutes the boundary block's output from the last cache step unchanged; the
structure still drifts slowly across the reuse steps. ``blockdance-forecast`` keeps the
boundary's outputs of the last ``order + 1`` steps that computed it and, on a reuse step,
substitutes their Newton extrapolation to the current step (TaylorSeer's finite-difference
forecast, Liu et al. 2025, applied to BlockDance's structural state): order 0 is BlockDance,
order 1 extends the last change linearly, order 2 adds the curvature. Steps that compute
before the window count too, so the first reuse step forecasts from closely spaced states.

``taylorseer`` is the same forecast on FORA's schedule: every block is skipped on the reuse
steps and the last block's output is extrapolated (TaylorSeer's idea on the stack's output,
rather than inside each block), natively on every architecture blockdance hooks.
"""

from __future__ import annotations

from typing import ClassVar, Literal, cast

import torch
from pydantic import Field

from blockdance.policies._common import first_step, require_two_blocks
from blockdance.policies.blockdance import BlockDanceConfig, BlockDancePolicy
from blockdance.policies.fora import ForaPolicy
from blockdance.policy import GenerationInfo, Policy, PolicyConfig, SlotInfo, StepContext

__all__ = [
    "BoundaryHistory",
    "ForecastConfig",
    "ForecastPolicy",
    "TaylorSeerConfig",
    "TaylorSeerPolicy",
    "newton_forecast",
]

State = tuple[torch.Tensor | None, ...]


class ForecastConfig(BlockDanceConfig):
    """Configuration of the ``blockdance-forecast`` policy: BlockDance's options and the order."""

    kind: Literal["blockdance-forecast"] = "blockdance-forecast"  # type: ignore[assignment]
    order: int = Field(
        1,
        ge=0,
        le=2,
        description="Finite-difference order of the forecast from the last cache steps: "
        "0 repeats the cached state (BlockDance), 1 linear, 2 quadratic.",
    )


def newton_forecast(points: list[tuple[int, State]], step: int) -> State:
    """The Newton interpolating polynomial through ``points`` evaluated at ``step``.

    Args:
        points: ``(step, state)`` pairs, oldest first, at distinct steps; states have the same
            structure (None items stay None).
        step: Where to evaluate (usually after the last point).
    """
    xs = [float(s) for s, _ in points]
    out: list[torch.Tensor | None] = []
    for item in range(len(points[-1][1])):
        ys = [state[item] for _, state in points]
        if any(y is None for y in ys):
            out.append(ys[-1])
            continue
        values = [y.float() for y in ys if y is not None]  # the divided differences, in place
        n = len(values)
        for level in range(1, n):
            for i in range(n - 1, level - 1, -1):
                values[i] = (values[i] - values[i - 1]) / (xs[i] - xs[i - level])
        result = values[n - 1]  # Horner on the Newton form: f[x0] + (s - x0)(f[x0,x1] + ...)
        for i in range(n - 2, -1, -1):
            result = values[i] + (step - xs[i]) * result
        last = ys[-1]
        assert last is not None
        out.append(result.to(last.dtype))
    return tuple(out)


class BoundaryHistory:
    """The states one boundary block returned at its last ``order + 1`` computed steps, per
    guidance branch, and their Newton extrapolation to a later step.

    Args:
        order: Finite-difference order of the forecast (0: the last state as it is).
    """

    def __init__(self, order: int) -> None:
        self.order = order
        self.points: dict[
            int, list[tuple[int, State]]
        ] = {}  # branch -> (step, state), oldest first

    def add(self, slot: SlotInfo, ctx: StepContext, output: object) -> None:
        """Keep what block ``slot`` returned at ``ctx`` (read as a state, copied)."""
        if self.order == 0:
            return
        io = slot.io
        state: State = io.to_state(output) if io is not None else (cast(torch.Tensor, output),)
        kept = self.points.setdefault(ctx.branch, [])
        # copies: later blocks may write into the tensor the block passed on
        kept.append((ctx.step, tuple(t.clone() if t is not None else None for t in state)))
        del kept[: -(self.order + 1)]

    def forecast(self, ctx: StepContext, cached: State) -> State:
        """The extrapolation to ``ctx.step``; ``cached`` while fewer than two states are kept."""
        points = self.points.get(ctx.branch, [])
        return newton_forecast(points, ctx.step) if len(points) >= 2 else cached

    def nbytes(self) -> int:
        return sum(
            t.numel() * t.element_size()
            for points in self.points.values()
            for _, state in points
            for t in state
            if t is not None
        )


class _ForecastAtBoundary:
    """What both forecasting policies share: keep the boundary block's states as it computes
    (``observe``), substitute their extrapolation on a reuse (``forecast``), report them."""

    observes: ClassVar[bool] = True
    forecasts: ClassVar[bool] = True
    boundary: int
    info: GenerationInfo | None
    history: BoundaryHistory

    def observe(self, ctx: StepContext, slot: int, output: object) -> None:
        if slot == self.boundary:
            assert self.info is not None
            self.history.add(self.info.slots[slot], ctx, output)

    def forecast(self, ctx: StepContext, slot: int, cached: State) -> State:
        return self.history.forecast(ctx, cached)

    def memory_bytes(self) -> int:
        return self.history.nbytes()

    def end(self) -> None:
        self.history = BoundaryHistory(self.history.order)


class ForecastPolicy(_ForecastAtBoundary, BlockDancePolicy):
    """BlockDance's schedule; a reuse step substitutes the boundary state forecast to it."""

    config_class = ForecastConfig  # type: ignore[assignment]
    config: ForecastConfig

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        self.history = BoundaryHistory(self.config.order)


class TaylorSeerConfig(PolicyConfig):
    """Configuration of the ``taylorseer`` policy."""

    kind: Literal["taylorseer"] = "taylorseer"
    N: int = Field(
        3, ge=1, description="Cache interval: one full step, then N-1 steps forecast the stack."
    )
    order: int = Field(
        1, ge=0, le=2, description="Finite-difference order of the forecast (0: FORA)."
    )
    start: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Share of the trajectory at the start that always computes (warm-up).",
    )


class TaylorSeerPolicy(_ForecastAtBoundary, ForaPolicy):
    """FORA's schedule; a reuse step substitutes the last block's output forecast to it."""

    config_class = TaylorSeerConfig  # type: ignore[assignment]
    config: TaylorSeerConfig  # type: ignore[assignment]

    def begin(self, info: GenerationInfo) -> None:
        cfg = self.config
        require_two_blocks(info, "taylorseer forecasts the last block")
        Policy.begin(self, info)  # not ForaPolicy's: its options are not this config's
        self.boundary = info.num_blocks - 1
        self.first = first_step(cfg.start, self.require_num_steps(info)) if cfg.start else 0
        self.period = cfg.N
        self.stop = info.num_steps
        self.residual = False
        self.history = BoundaryHistory(cfg.order)
