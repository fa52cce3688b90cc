"""The policy zoo on the toy denoiser: each kind's exact schedule, compute counts and numbers.

Expected schedules are written out by hand from each method's rule; numbers at reuse steps
are checked against :func:`reference`, a plain re-implementation of output and residual
reuse that does not use the runtime.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest
import torch
from pydantic import ValidationError

import blockdance
from blockdance.errors import GenerationError
from toymodel import ToyDenoiser, count_computes, run, timesteps

T = 20
DEPTH = 8
LAST = DEPTH - 1
ALL = range(DEPTH)
DEFAULT_BOUNDARY = 5  # toy: round(21/28 * 8) - 1
ZOO = ("fora", "deepcache", "delta-dit", "first-block-cache", "random")

Run = tuple[int, int]  # (first block, last block) of a reused run


def x0(batch: int = 2, tokens: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, tokens, 16, generator=torch.Generator().manual_seed(seed))


def pairs(steps, blocks) -> set[tuple[int, int]]:
    return {(s, b) for s in steps for b in blocks}


def reference(
    model: ToyDenoiser,
    x: torch.Tensor,
    num_steps: int,
    plan: dict[int, Run],
    mode: str,
    update: Callable | None = None,
) -> list[torch.Tensor]:
    """The toy's sampling loop with reuse done by hand.

    ``plan`` maps a step to the run of blocks it reuses. A run is served from the last step
    at which all its blocks computed: ``mode="output"`` substitutes the run's last output,
    ``"residual"`` adds ``output(last) - input(first)`` of that step to the current input.
    """
    saved: dict[Run, tuple[torch.Tensor, torch.Tensor]] = {}
    outs = []
    with torch.no_grad():
        for step, t in enumerate(timesteps(num_steps)):
            tt = torch.full((x.shape[0],), t)
            c = torch.sigmoid(model.t_proj(tt.reshape(-1, 1).float() / 1000))[:, None, :]
            inputs: dict[int, torch.Tensor] = {}
            outputs: dict[int, torch.Tensor] = {}
            h = x
            b = 0
            while b < len(model.blocks):
                skipped = plan.get(step)
                if skipped is not None and b == skipped[0]:
                    before, after = saved[skipped]
                    h = after if mode == "output" else h + (after - before)
                    b = skipped[1] + 1
                    continue
                inputs[b] = h
                h = model.blocks[b](h, c)
                outputs[b] = h
                b += 1
            for first, last in set(plan.values()):
                if first in inputs and last in outputs:
                    saved[(first, last)] = (inputs[first], outputs[last])
            out = model.head(h)
            outs.append(out)
            x = x - 0.05 * out if update is None else update(x, out)
    return outs


def assert_close(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for step, (a, b) in enumerate(zip(got, want)):
        assert torch.allclose(a, b, atol=1e-6), f"step {step} differs from the hand reference"


def test_zoo_kinds_are_registered(registry):
    kinds = registry.policy_kinds
    assert set(ZOO) <= set(kinds)
    for kind in ZOO:
        config_class, policy_class = kinds[kind]
        assert config_class.__module__ == policy_class.__module__
        assert "arXiv" in (sys.modules[policy_class.__module__].__doc__ or "") or kind == "random"
        config = registry.policy_config({"kind": kind})
        assert type(config).model_validate(config.model_dump()) == config


# -- fora -------------------------------------------------------------------------------------
# N=3 from step 0: steps 0, 3, 6, ..., 18 compute; the other two of each group reuse all.
FORA_N3 = {1, 2, 4, 5, 7, 8, 10, 11, 13, 14, 16, 17, 19}
# N=3, start=0.3: ceil(0.3 * 20) = 6 -> steps 0..5 compute, groups 6-8, 9-11, ... 18-19
FORA_N3_START = {7, 8, 10, 11, 13, 14, 16, 17, 19}
# N=2, start=0.25: first = 5 -> 5 computes, 6 reuses, 7 computes, ...
FORA_N2_START = {6, 8, 10, 12, 14, 16, 18}


@pytest.mark.parametrize(
    ("options", "steps"),
    [
        ({"N": 3}, FORA_N3),
        ({"N": 3, "start": 0.3}, FORA_N3_START),
        ({"N": 2, "start": 0.25}, FORA_N2_START),
        ({"N": 1}, set()),
    ],
)
def test_fora_schedule_and_compute_counts(toy, registry, options, steps):
    counts = count_computes(toy)
    with blockdance.attach(toy, "fora", registry=registry, num_steps=T, **options) as h:
        run(toy, x0(), T)
        assert set(h.runtime.cache) <= {(0, LAST)}  # one state: the last block's
    assert h.stats.reused_pairs() == pairs(steps, ALL)
    assert all(counts[b] == T - len(steps) for b in ALL), counts


@pytest.mark.parametrize("mode", ["output", "residual"])
def test_fora_numbers_match_hand_reuse(toy, registry, mode):
    x = x0()
    with blockdance.attach(toy, "fora", N=3, reuse=mode, registry=registry, num_steps=T):
        got = run(toy, x, T)
    assert_close(got, reference(toy, x, T, dict.fromkeys(FORA_N3, (0, LAST)), mode))


def test_fora_output_reuse_repeats_the_stack_output(toy, registry):
    """Output mode: a reused step's stack output is the last full step's, whatever x is."""
    with blockdance.attach(toy, "fora", N=3, registry=registry, num_steps=T):
        got = run(toy, x0(), T)
    # the head is linear and the stack output is the same on steps 0, 1, 2
    assert torch.equal(got[1], got[0]) and torch.equal(got[2], got[0])
    assert not torch.allclose(got[3], got[0])


def test_fora_warm_up_needs_the_step_count(toy, registry):
    with blockdance.attach(toy, "fora", registry=registry) as h:
        run(toy, x0(), 6)  # start=0: no step count needed
    assert h.stats.reused_pairs() == pairs({1, 2, 4, 5}, ALL)
    with blockdance.attach(toy, "fora", start=0.2, registry=registry):
        with pytest.raises(blockdance.NumStepsRequiredError, match="fora"):
            run(toy, x0(), 2)


# -- deepcache --------------------------------------------------------------------------------
DEEPCACHE_BOUNDARY = DEPTH // 2 - 1  # 3: the first half is blocks 0..3


@pytest.mark.parametrize(
    ("interval", "steps"),
    [
        (2, {1, 3, 5, 7, 9, 11, 13, 15, 17, 19}),
        (3, {1, 2, 4, 5, 7, 8, 10, 11, 13, 14, 16, 17, 19}),
    ],
)
def test_deepcache_schedule_and_compute_counts(toy, registry, interval, steps):
    counts = count_computes(toy)
    with blockdance.attach(
        toy, "deepcache", interval=interval, registry=registry, num_steps=T
    ) as h:
        run(toy, x0(), T)
    assert h.stats.reused_pairs() == pairs(steps, range(DEEPCACHE_BOUNDARY + 1))
    for b in ALL:
        want = T - len(steps) if b <= DEEPCACHE_BOUNDARY else T
        assert counts[b] == want, f"block {b} ran {counts[b]} times, expected {want}"


@pytest.mark.parametrize("mode", ["output", "residual"])
def test_deepcache_numbers_match_hand_reuse(toy, registry, mode):
    x = x0()
    with blockdance.attach(toy, "deepcache", reuse=mode, registry=registry):
        got = run(toy, x, T)
    plan = {s: (0, DEEPCACHE_BOUNDARY) for s in range(1, T, 2)}
    assert_close(got, reference(toy, x, T, plan, mode))


def test_deepcache_needs_two_blocks(registry):
    toy = ToyDenoiser(depth=1).eval()
    with blockdance.attach(toy, "deepcache", registry=registry) as h:
        with pytest.raises(ValueError, match="at least 2"), h.generation(num_steps=T):
            pass


# -- delta-dit ---------------------------------------------------------------------------------
# defaults: interval 2, split 0.5 -> phases 0..9 and 10..19, runs of 8 * 0.5 = 4 blocks
DELTA_REAR = range(4, 8)
DELTA_FRONT = range(4)
DELTA_EARLY = {1, 3, 5, 7, 9}
DELTA_LATE = {11, 13, 15, 17, 19}


def test_delta_dit_default_schedule_and_compute_counts(toy, registry):
    counts = count_computes(toy)
    with blockdance.attach(toy, "delta-dit", registry=registry, num_steps=T) as h:
        run(toy, x0(), T)
        assert h.runtime.residual == {3: 0, 7: 4}
        assert set(h.runtime.cache) == {(0, 3), (0, 7)}
    assert h.stats.reused_pairs() == pairs(DELTA_EARLY, DELTA_REAR) | pairs(DELTA_LATE, DELTA_FRONT)
    assert all(counts[b] == T - 5 for b in ALL), counts  # each block skipped on 5 steps


def test_delta_dit_schedule_with_options(toy, registry):
    # interval 3, split 0.35 -> ceil(7.000000000000001 - 1e-9) = 7; runs of 2 blocks
    # early 0..6: groups 0-2, 3-5, 6 -> reuse 1, 2, 4, 5 (rear blocks 6, 7)
    # late 7..19: groups 7-9, ..., 19 -> reuse 8, 9, 11, 12, 14, 15, 17, 18 (blocks 0, 1)
    with blockdance.attach(
        toy, "delta-dit", interval=3, split=0.35, num_blocks=2, registry=registry, num_steps=T
    ) as h:
        run(toy, x0(), T)
    early = {1, 2, 4, 5}
    late = {8, 9, 11, 12, 14, 15, 17, 18}
    assert h.stats.reused_pairs() == pairs(early, {6, 7}) | pairs(late, {0, 1})


@pytest.mark.parametrize(("split", "rear"), [(0.0, False), (1.0, True)])
def test_delta_dit_single_phase_keeps_one_boundary(toy, registry, split, rear):
    with blockdance.attach(toy, "delta-dit", split=split, registry=registry, num_steps=T) as h:
        run(toy, x0(), T)
    steps = {s for s in range(T) if s % 2}
    want = pairs(steps, DELTA_REAR) if rear else pairs(steps, DELTA_FRONT)
    assert h.stats.reused_pairs() == want
    assert h.policy.boundaries() == ({7} if rear else {3})


@pytest.mark.parametrize("mode", ["residual", "output"])
def test_delta_dit_numbers_match_hand_reuse(toy, registry, mode):
    x = x0()
    with blockdance.attach(toy, "delta-dit", reuse=mode, registry=registry, num_steps=T):
        got = run(toy, x, T)
    plan = dict.fromkeys(DELTA_EARLY, (4, 7)) | dict.fromkeys(DELTA_LATE, (0, 3))
    assert_close(got, reference(toy, x, T, plan, mode))


def test_delta_dit_residual_differs_from_output_on_the_rear_run(toy, registry):
    """Residual keeps what the front blocks computed at a rear-reuse step; output drops it."""
    outs = {}
    for mode in ("residual", "output"):
        with blockdance.attach(toy, "delta-dit", reuse=mode, registry=registry, num_steps=T):
            outs[mode] = run(toy, x0(), T)
    assert torch.equal(outs["residual"][0], outs["output"][0])
    assert not torch.allclose(outs["residual"][1], outs["output"][1])


def test_delta_dit_rejects_overlapping_runs(toy, registry):
    with blockdance.attach(toy, "delta-dit", num_blocks=5, registry=registry) as h:
        with pytest.raises(ValueError, match=r"overlap.*at most 4"), h.generation(num_steps=T):
            pass


def test_delta_dit_needs_the_step_count(toy, registry):
    with blockdance.attach(toy, "delta-dit", registry=registry):
        with pytest.raises(blockdance.NumStepsRequiredError, match="delta-dit"):
            run(toy, x0(), 2)


# -- first-block-cache ---------------------------------------------------------------------------
FBC_RUN = (1, LAST)


def fixed_inputs(xs: list[torch.Tensor]) -> tuple[torch.Tensor, Callable]:
    """An ``update`` for ``run`` that feeds ``xs[s]`` at step ``s``, whatever the output."""
    step = iter(range(1, len(xs) + 1))

    def update(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        s = next(step)
        return xs[s] if s < len(xs) else x

    return xs[0], update


@pytest.fixture
def static_toy(toy) -> ToyDenoiser:
    """The toy with a timestep-independent condition: equal inputs give equal outputs."""
    with torch.no_grad():
        toy.t_proj.weight.zero_()
    return toy


# inputs per step: A B C C C C C C D D E E (12 steps)
FBC_T = 12


def constant_stretches() -> list[torch.Tensor]:
    a, b, c, d, e = (x0(seed=s) for s in range(5))
    return [a, b, c, c, c, c, c, c, d, d, e, e]


@pytest.mark.parametrize(
    ("options", "steps"),
    [
        # 3..7 compare with step 2 (same input); 8 and 10 bring new inputs; 9 and 11 repeat them
        ({}, {3, 4, 5, 6, 7, 9, 11}),
        # at most two in a row: 5 computes and becomes the reference for 6, 7
        ({"max_consecutive": 2}, {3, 4, 6, 7, 9, 11}),
        # warm-up: ceil(0.5 * 12) = 6 -> steps 0..5 compute
        ({"start": 0.5}, {6, 7, 9, 11}),
        ({"threshold": 0.0}, set()),
    ],
)
def test_first_block_cache_reuses_where_block_0_did_not_change(
    static_toy, registry, options, steps
):
    counts = count_computes(static_toy)
    x, update = fixed_inputs(constant_stretches())
    with blockdance.attach(
        static_toy, "first-block-cache", registry=registry, num_steps=FBC_T, **options
    ) as h:
        got = run(static_toy, x, FBC_T, update)
    assert h.stats.reused_pairs() == pairs(steps, range(1, DEPTH))
    assert counts[0] == FBC_T
    assert all(counts[b] == FBC_T - len(steps) for b in range(1, DEPTH)), counts
    x, update = fixed_inputs(constant_stretches())
    want = reference(static_toy, x, FBC_T, dict.fromkeys(steps, FBC_RUN), "residual", update)
    assert_close(got, want)


def test_first_block_cache_threshold_zero_is_the_bare_model(toy, registry):
    x = x0()
    bare = run(toy, x, T)
    with blockdance.attach(toy, "first-block-cache", threshold=0.0, registry=registry) as h:
        got = run(toy, x, T)
    assert h.stats.reused_blocks == 0
    assert all(torch.equal(a, b) for a, b in zip(got, bare))


def test_first_block_cache_compares_with_the_last_computed_step(static_toy, registry):
    """Inputs drift by 1% per step; block 0 is the identity, so its output drifts too.

    Against the last *computed* step: 1%, 2% reuse, 3% computes (threshold 2.5%), and the
    reference moves: 1/1.03, 2/1.03 reuse, 3/1.03 = 2.9% computes, and so on. Comparing
    with the previous step instead would reuse every step after the first.
    """
    with torch.no_grad():
        static_toy.blocks[0].lin.weight.zero_()
        static_toy.blocks[0].lin.bias.zero_()
    base = x0()
    num_steps = 10
    x, update = fixed_inputs([base * (1 + 0.01 * s) for s in range(num_steps)])
    with blockdance.attach(
        static_toy, "first-block-cache", threshold=0.025, registry=registry
    ) as h:
        got = run(static_toy, x, num_steps, update)
    steps = {1, 2, 4, 5, 7, 8}
    assert h.stats.reused_pairs() == pairs(steps, range(1, DEPTH))
    x, update = fixed_inputs([base * (1 + 0.01 * s) for s in range(num_steps)])
    want = reference(static_toy, x, num_steps, dict.fromkeys(steps, FBC_RUN), "residual", update)
    assert_close(got, want)


def test_first_block_cache_keeps_guidance_branches_apart(static_toy, registry):
    """Branch 0 sees a constant input and reuses; branch 1's input changes every step."""
    still = x0(seed=7)
    with blockdance.attach(static_toy, "first-block-cache", registry=registry) as h:
        with torch.no_grad():
            for step, t in enumerate(timesteps(6)):
                tt = torch.full((2,), t)
                static_toy(still, tt)
                static_toy(x0(seed=100 + step), tt)
        assert set(h.policy._previous) == {0, 1}
    assert h.stats.reused_pairs(branch=0) == pairs(range(1, 6), range(1, DEPTH))
    assert h.stats.reused_pairs(branch=1) == set()
    assert h.policy._previous == {}  # freed when the generation ended (removal)


def test_first_block_cache_frees_its_state_when_a_generation_starts(static_toy, registry):
    x, update = fixed_inputs(constant_stretches())
    with blockdance.attach(static_toy, "first-block-cache", registry=registry) as h:
        run(static_toy, x, FBC_T, update)
        assert h.policy._previous
        with h.generation(num_steps=FBC_T):
            assert h.policy._previous == {} and h.policy._reuse_at == {}
            # the first step of a new generation computes, even with the same input
            run(static_toy, constant_stretches()[2], 2, lambda x, out: x)
    assert (0, 1) not in h.stats.reused_pairs() and (1, 1) in h.stats.reused_pairs()


def test_first_block_cache_needs_two_blocks(registry):
    toy = ToyDenoiser(depth=1).eval()
    with blockdance.attach(toy, "first-block-cache", registry=registry) as h:
        with pytest.raises(ValueError, match="at least 2"), h.generation(num_steps=T):
            pass


# -- random ------------------------------------------------------------------------------------
def reused_steps(h: blockdance.Handle) -> set[int]:
    return {s for s, _ in h.stats.reused_pairs()}


@pytest.mark.parametrize(("fraction", "count"), [(0.3, 6), (0.5, 10), (0.0, 0), (1.0, T - 1)])
def test_random_reuses_the_target_fraction_of_steps(toy, registry, fraction, count):
    counts = count_computes(toy)
    with blockdance.attach(
        toy, "random", fraction=fraction, seed=3, registry=registry, num_steps=T
    ) as h:
        run(toy, x0(), T)
    steps = reused_steps(h)
    assert len(steps) == count
    assert steps <= set(range(1, T))  # never step 0
    assert h.stats.reused_pairs() == pairs(steps, range(DEFAULT_BOUNDARY + 1))
    for b in ALL:
        assert counts[b] == (T - count if b <= DEFAULT_BOUNDARY else T)


def test_random_in_a_window_draws_only_the_windows_steps(toy, registry):
    """The control for a late-reusing policy (Ada after ρ): steps 8..19 of 20 only."""
    counts = count_computes(toy)
    with blockdance.attach(
        toy, "random", fraction=0.3, window=(0.4, 1.0), registry=registry, num_steps=T
    ) as h:
        run(toy, x0(), T)
    steps = reused_steps(h)
    assert len(steps) == round(0.3 * T) and steps <= set(range(8, T))
    assert counts[0] == T - len(steps) and counts[DEPTH - 1] == T
    # more steps than the window holds: refused, not clipped
    with blockdance.attach(
        toy, "random", fraction=0.7, window=(0.4, 1.0), registry=registry, num_steps=T
    ) as h:
        with pytest.raises(GenerationError, match=r"asks for 14 of 20 steps.*holds 12"):
            run(toy, x0(), T)


def test_random_is_deterministic_given_seed_and_step_count(toy, registry):
    def draw(seed: int, boundary: int | None = None) -> set[tuple[int, int]]:
        with blockdance.attach(
            toy, "random", seed=seed, boundary=boundary, registry=registry, num_steps=T
        ) as h:
            run(toy, x0(), T)
        return h.stats.reused_pairs()

    first = draw(0)
    assert draw(0) == first
    assert draw(1) != first
    assert {s for s, _ in draw(0, boundary=2)} == {s for s, _ in first}
    assert {b for _, b in draw(0, boundary=2)} == {0, 1, 2}


def test_random_numbers_match_hand_reuse(toy, registry):
    x = x0()
    with blockdance.attach(toy, "random", seed=5, registry=registry, num_steps=T) as h:
        got = run(toy, x, T)
    plan = dict.fromkeys(reused_steps(h), (0, DEFAULT_BOUNDARY))
    assert_close(got, reference(toy, x, T, plan, "output"))


def test_random_rejects_a_boundary_outside_the_model(toy, registry):
    with blockdance.attach(toy, "random", boundary=DEPTH, registry=registry) as h:
        with pytest.raises(ValueError, match="out of range"), h.generation(num_steps=T):
            pass


@pytest.mark.parametrize("kind", ["blockdance", "random"])
def test_a_boundary_at_the_last_block_is_refused(toy, registry, kind):
    """boundary = depth - 1 would leave no deep block: the error says so and names the range."""
    with blockdance.attach(toy, kind, boundary=DEPTH - 1, registry=registry) as h:
        with pytest.raises(ValueError, match=f"no deep block.*at most {DEPTH - 2}"):
            with h.generation(num_steps=T):
                pass
    with blockdance.attach(toy, kind, boundary=DEPTH - 2, registry=registry) as h:
        with h.generation(num_steps=T):
            run(toy, x0(), T)
        assert h.stats is not None and h.stats.reused_blocks > 0


# -- configuration errors name the field ---------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "options", "field"),
    [
        ("fora", {"N": 0}, "N"),
        ("fora", {"reuse": "delta"}, "reuse"),
        ("fora", {"start": 1.0}, "start"),
        ("fora", {"n": 3}, "n"),
        ("deepcache", {"interval": 0}, "interval"),
        ("deepcache", {"reuse": "raw"}, "reuse"),
        ("delta-dit", {"split": 1.5}, "split"),
        ("delta-dit", {"num_blocks": 0.75}, "num_blocks"),
        ("delta-dit", {"num_blocks": 0}, "num_blocks"),
        ("delta-dit", {"num_blocks": True}, "num_blocks"),
        ("delta-dit", {"interval": 0}, "interval"),
        ("first-block-cache", {"threshold": -0.1}, "threshold"),
        ("first-block-cache", {"max_consecutive": 0}, "max_consecutive"),
        ("first-block-cache", {"start": -0.5}, "start"),
        ("random", {"fraction": 1.5}, "fraction"),
        ("random", {"boundary": -1}, "boundary"),
    ],
)
def test_bad_options_name_the_field(registry, kind, options, field):
    with pytest.raises(ValidationError) as info:
        registry.make_policy(kind, **options)
    assert info.value.errors()[0]["loc"][0] == field
    assert field in str(info.value)


def test_delta_dit_fraction_message_says_what_to_do(registry):
    with pytest.raises(ValidationError, match=r"\(0, 0.5\].*integer for a count"):
        registry.make_policy("delta-dit", num_blocks=0.75)
