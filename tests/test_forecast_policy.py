"""blockdance-forecast: BlockDance whose reuse steps substitute the boundary state forecast from
the last computed steps, checked against Lagrange extrapolation and a loop written by hand."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

import blockdance
from blockdance.policies.blockdance import window_steps
from blockdance.policies.forecast import newton_forecast
from blockdance.testing import make_registry
from forecast_reference import lagrange
from toymodel import ToyDenoiser, ToyPlugin, count_computes, run, run_by_hand

T, DEPTH, BOUNDARY = 20, 8, 5


@pytest.mark.parametrize("order", [0, 1, 2])
def test_newton_forecast_is_the_interpolating_polynomial(order: int) -> None:
    g = torch.Generator().manual_seed(0)
    steps = [3, 5, 8][2 - order :]
    points = [(s, torch.randn(2, 3, generator=g)) for s in steps]
    (got, none) = newton_forecast([(s, (y, None)) for s, y in points], 11)
    torch.testing.assert_close(got, lagrange(points, 11.0))
    assert none is None


def test_a_polynomial_of_the_order_is_forecast_exactly() -> None:
    f = lambda s: torch.tensor([1.0 + 2.0 * s - 0.5 * s * s])  # noqa: E731
    got = newton_forecast([(s, (f(s),)) for s in (2, 4, 7)], 10)[0]
    torch.testing.assert_close(got, f(10))


@pytest.mark.parametrize(("n", "order"), [(2, 1), (3, 1), (3, 2), (4, 2)])
def test_forecast_policy_matches_a_loop_written_by_hand(n: int, order: int) -> None:
    """What enters the deep blocks on a reuse step is the extrapolation of the boundary's
    outputs at the last ``order + 1`` computed steps; computed steps run the whole model."""
    model = ToyDenoiser(depth=DEPTH, dim=16)
    x = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(1))
    window = window_steps((0.25, 0.95), T)
    reuse = {s for s in window if (s - window.start) % n}
    computed: list[tuple[int, torch.Tensor]] = []

    def front(step: int, h: torch.Tensor, compute) -> torch.Tensor:
        if step in reuse:
            return lagrange(computed[-(order + 1) :], float(step))
        out = compute(h)
        computed.append((step, out))
        return out

    expected = run_by_hand(model, x, T, BOUNDARY, front)
    registry = make_registry(ToyPlugin())
    counts = count_computes(model)
    options = {"N": n, "order": order, "boundary": BOUNDARY, "window": (0.25, 0.95)}
    with blockdance.attach(model, "blockdance-forecast", registry=registry, **options) as h:
        with h.generation(num_steps=T):
            got = run(model, x, T)
        stats = h.stats
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert stats is not None and {s for s, _ in stats.reused_pairs()} == reuse
    assert counts[0] == T - len(reuse) and counts[DEPTH - 1] == T
    state = 2 * 4 * 16 * 4  # one (2, 4, 16) float32 boundary state
    assert stats.peak_policy_bytes == (order + 1) * state


def test_order_zero_is_blockdance() -> None:
    model = ToyDenoiser(depth=DEPTH, dim=16)
    x = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(2))
    registry = make_registry(ToyPlugin())
    outs = {}
    for kind, extra in (("blockdance", {}), ("blockdance-forecast", {"order": 0})):
        with blockdance.attach(model, kind, registry=registry, N=3, **extra) as h:
            with h.generation(num_steps=T):
                outs[kind] = run(model, x, T)
    for a, b in zip(outs["blockdance"], outs["blockdance-forecast"], strict=True):
        assert torch.equal(a, b)


def test_forecast_order_is_validated() -> None:
    with pytest.raises(ValidationError, match="order"):
        blockdance.default_registry().make_policy({"kind": "blockdance-forecast", "order": 3})


@pytest.mark.parametrize(("n", "order"), [(2, 1), (3, 2)])
def test_taylorseer_forecasts_the_stack_output_on_foras_schedule(n: int, order: int) -> None:
    model = ToyDenoiser(depth=DEPTH, dim=16)
    x = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(3))
    computed: list[tuple[int, torch.Tensor]] = []

    def front(step: int, h: torch.Tensor, compute) -> torch.Tensor:
        if step % n:
            return lagrange(computed[-(order + 1) :], float(step))
        out = compute(h)
        computed.append((step, out))
        return out

    expected = run_by_hand(model, x, T, DEPTH - 1, front)
    registry = make_registry(ToyPlugin())
    counts = count_computes(model)
    with blockdance.attach(model, "taylorseer", N=n, order=order, registry=registry) as h:
        with h.generation(num_steps=T):
            got = run(model, x, T)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert counts[0] == counts[DEPTH - 1] == len(range(0, T, n))
