"""StepSetPolicy, the base of BlockDance, random and the tutorial's every-k, and window_steps."""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

import pytest
import torch
from pydantic import Field

import blockdance
import blockdance.policies
import blockdance.policies.blockdance
import blockdance.policies.step_set
from blockdance.testing import make_registry
from toymodel import ToyDenoiser, ToyPlugin, count_computes, run

T = 8
DEPTH = 8
DEFAULT_BOUNDARY = 5  # toy: round(21/28 * 8) - 1


def test_one_base_class_and_one_window_function_everywhere():
    base = blockdance.policies.step_set.StepSetPolicy
    assert blockdance.StepSetPolicy is base and blockdance.policies.StepSetPolicy is base
    assert issubclass(blockdance.policies.BlockDancePolicy, base)
    assert issubclass(blockdance.policies.RandomPolicy, base)
    window_steps = blockdance.policies.window_steps
    assert blockdance.policies.blockdance.window_steps is window_steps  # lab code imports it here
    assert blockdance.policies.step_set.window_steps is window_steps


@pytest.mark.parametrize("num_steps", [1, 3, 7, 10, 20, 28, 50, 60])
def test_window_steps_is_the_window_of_exact_fractions(num_steps):
    """Every window of whole percents, against ``start <= i / num_steps < end`` in fractions."""
    for a in range(0, 100, 3):
        for b in range(a + 1, 101, 7):
            want = [
                i
                for i in range(num_steps)
                if Fraction(a, 100) <= Fraction(i, num_steps) < Fraction(b, 100)
            ]
            got = blockdance.policies.window_steps((a / 100, b / 100), num_steps)
            assert list(got) == want, (a, b, num_steps)


class PlanConfig(blockdance.PolicyConfig):
    kind: Literal["plan"] = "plan"
    boundary: int | None = Field(None, ge=0)
    keep_all: bool = False


class PlanPolicy(blockdance.StepSetPolicy[PlanConfig]):
    """Reuse on steps 2 and 3; keep the boundary output of step 0 only, or of every step."""

    config_class = PlanConfig

    def plan_steps(self, info, num_steps):
        return (None if self.config.keep_all else frozenset({0})), frozenset({2, 3})


class NoBoundaryConfig(blockdance.PolicyConfig):
    kind: Literal["no-boundary-field"] = "no-boundary-field"


class NoBoundaryPolicy(blockdance.StepSetPolicy[NoBoundaryConfig]):
    config_class = NoBoundaryConfig

    def plan_steps(self, info, num_steps):
        return None, frozenset({num_steps - 1})


@pytest.fixture
def registry() -> blockdance.Registry:
    return make_registry(ToyPlugin())


def x0() -> torch.Tensor:
    return torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("keep_all", "source"), [(False, 0), (True, 1)])
def test_reuse_steps_substitute_the_state_of_the_last_cache_step(registry, keep_all, source):
    """Boundary = last block: a reuse step's output is the head of the kept step's state."""
    toy = ToyDenoiser(depth=DEPTH).eval()
    counts = count_computes(toy)
    policy = PlanPolicy(PlanConfig(boundary=DEPTH - 1, keep_all=keep_all))
    with blockdance.attach(toy, policy, registry=registry, num_steps=T) as h:
        got = run(toy, x0(), T)
    assert h.stats.reused_pairs() == {(s, b) for s in (2, 3) for b in range(DEPTH)}
    assert all(counts[b] == T - 2 for b in range(DEPTH)), counts
    assert torch.equal(got[2], got[source]) and torch.equal(got[3], got[source])
    assert not torch.allclose(got[1], got[0])  # the two sources differ
    assert not torch.allclose(got[4], got[source])  # step 4 computes again


def test_boundary_comes_from_the_config_or_the_architecture(registry):
    toy = ToyDenoiser(depth=DEPTH).eval()
    for policy, last in [
        (PlanPolicy(PlanConfig(boundary=2)), 2),
        (PlanPolicy(PlanConfig()), DEFAULT_BOUNDARY),
        (NoBoundaryPolicy(NoBoundaryConfig()), DEFAULT_BOUNDARY),
    ]:
        with blockdance.attach(toy, policy, registry=registry, num_steps=T) as h:
            run(toy, x0(), T)
        assert h.policy.boundaries() == {last}
        reused = {b for _, b in h.stats.reused_pairs()}
        assert reused == set(range(last + 1)), type(policy).__name__


def test_a_boundary_outside_the_model_names_the_range(registry):
    toy = ToyDenoiser(depth=DEPTH).eval()
    policy = PlanPolicy(PlanConfig(boundary=DEPTH))
    with blockdance.attach(toy, policy, registry=registry) as h:
        with pytest.raises(ValueError, match=r"plan boundary=8 is out of range.*0\.\.7"):
            with h.generation(num_steps=T):
                pass


def test_the_step_count_is_required(registry):
    toy = ToyDenoiser(depth=DEPTH).eval()
    with blockdance.attach(toy, PlanPolicy(PlanConfig()), registry=registry):
        with pytest.raises(blockdance.NumStepsRequiredError, match="plan"):
            run(toy, x0(), 2)
