"""Per-sample decisions: a batch whose samples reuse at different steps equals each sample run
alone, on the toy model, the reference DiT and the diffusers SD3 transformer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import pytest
import torch
from torch import nn

import blockdance
from blockdance import Decision, GenerationInfo, Policy, PolicyConfig, ReuseError, StepContext
from blockdance.testing import make_registry
from toymodel import ToyDenoiser, ToyPlugin, run_by_hand, timesteps

STEPS = 6
#: The steps at which each of four samples reuses its structural blocks; step 0 computes.
REUSE = ({2, 3, 5}, set(), {1, 2, 3, 4, 5}, {3})


class SampleStepsConfig(PolicyConfig):
    kind: Literal["sample-steps"] = "sample-steps"
    reuse: tuple[frozenset[int], ...]
    boundary: int
    per_batch: bool = False  # one sample: decide with a Decision (the per-batch path)


class SampleSteps(Policy[SampleStepsConfig]):
    """Sample ``i`` reuses blocks ``0..boundary`` at the steps ``reuse[i]``."""

    config_class: ClassVar[type[PolicyConfig]] = SampleStepsConfig

    def boundaries(self) -> frozenset[int]:
        return frozenset({self.config.boundary})

    def decide(self, ctx: StepContext, slot: int) -> Decision | torch.Tensor:
        if slot > self.config.boundary:
            return Decision.COMPUTE
        if self.config.per_batch:
            (steps,) = self.config.reuse
            return Decision.REUSE if ctx.step in steps else Decision.COMPUTE
        return torch.tensor([ctx.step in steps for steps in self.config.reuse])


class PolicyPlugin:
    @blockdance.hookimpl
    def blockdance_register_policies(self, register: Callable[..., None]) -> None:
        register(SampleStepsConfig, SampleSteps)


def registry() -> blockdance.Registry:
    from blockdance_dit import plugin as dit_plugin
    from blockdance_mmdit import plugin as mmdit_plugin

    return make_registry(ToyPlugin(), PolicyPlugin(), dit_plugin, mmdit_plugin)


def policy(reuse: Sequence[set[int]], boundary: int, per_batch: bool = False) -> SampleSteps:
    config = SampleStepsConfig(
        reuse=tuple(frozenset(s) for s in reuse), boundary=boundary, per_batch=per_batch
    )
    return SampleSteps(config)


def count_rows(blocks: Sequence[nn.Module]) -> list[int]:
    """Wrap each block's forward (before attach): rows each block really ran on."""
    rows = [0] * len(blocks)
    for i, block in enumerate(blocks):
        original = block.forward

        def counted(*args: Any, i: int = i, f: Any = original, **kwargs: Any) -> Any:
            hidden = args[0] if args else kwargs["hidden_states"]
            rows[i] += hidden.shape[0]
            return f(*args, **kwargs)

        block.forward = counted
    return rows


# -- models and loops ------------------------------------------------------------------------
Call = Callable[[nn.Module, torch.Tensor, torch.Tensor, Any], torch.Tensor]


def toy_call(model: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
    return model(x, t)


def dit_call(model: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
    return model(x, t, cond)[:, :4]  # the noise half of a learn_sigma output


def sd3_call(model: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
    text, pooled = cond
    out = model(hidden_states=x, encoder_hidden_states=text, pooled_projections=pooled, timestep=t)
    return out.sample


def null_of(cond: Any, name: str) -> Any:
    """The unconditional input of the same batch: DiT's null class, zero text for SD3."""
    if cond is None:
        return None
    if name == "dit":
        return torch.full_like(cond, 10)
    return tuple(torch.zeros_like(c) for c in cond)


def stack(a: Any, b: Any) -> Any:
    if a is None:
        return None
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b])
    return tuple(torch.cat([x, y]) for x, y in zip(a, b, strict=True))


def rows(cond: Any, i: int) -> Any:
    if cond is None:
        return None
    if isinstance(cond, torch.Tensor):
        return cond[i : i + 1]
    return tuple(c[i : i + 1] for c in cond)


def sample(
    model: nn.Module, call: Call, x: torch.Tensor, cond: Any, name: str, guided: bool
) -> torch.Tensor:
    """A sampling loop: one call per step, batched guidance (scale 2) when ``guided``."""
    with torch.no_grad():
        for t in timesteps(STEPS):
            if guided:
                tt = torch.full((2 * x.shape[0],), t)
                out = call(model, torch.cat([x, x]), tt, stack(cond, null_of(cond, name)))
                c, u = out.chunk(2)
                eps = u + 2.0 * (c - u)
            else:
                eps = call(model, x, torch.full((x.shape[0],), t), cond)
            x = x - 0.05 * eps
    return x


def build(name: str) -> tuple[nn.Module, Call, torch.Tensor, Any, Sequence[nn.Module], int]:
    """A model, its call, four samples' latents and conditions, its blocks, a boundary."""
    g = torch.Generator().manual_seed(3)
    if name == "toy":
        model = ToyDenoiser(depth=8, dim=16)
        return model, toy_call, torch.randn(4, 5, 16, generator=g), None, model.blocks, 4
    if name == "dit":
        from blockdance_dit.examples import tiny_reference_dit

        model = tiny_reference_dit()
        x = torch.randn(4, 4, 8, 8, generator=g)  # (N, C, H, W)
        return model, dit_call, x, torch.tensor([1, 7, 3, 1]), model.blocks, 4
    from blockdance_mmdit.examples import tiny_sd3

    model = tiny_sd3()
    x = torch.randn(4, 4, 8, 8, generator=g)
    cond = (torch.randn(4, 6, 12, generator=g), torch.randn(4, 8, generator=g))
    return model, sd3_call, x, cond, model.transformer_blocks, 1


@pytest.mark.parametrize("guided", [False, True], ids=["one-row", "batched-guidance"])
@pytest.mark.parametrize("name", ["toy", "dit", "sd3"])
def test_a_batch_deciding_per_sample_equals_each_sample_alone(name: str, guided: bool) -> None:
    model, call, x, cond, blocks, boundary = build(name)
    model.eval()
    reg = registry()
    alone = []
    for i, steps in enumerate(REUSE):  # each sample alone, decided for the whole (1-sample) call
        with blockdance.attach(
            model, policy([steps], boundary, per_batch=True), registry=reg, num_steps=STEPS
        ) as h:
            alone.append(sample(model, call, x[i : i + 1], rows(cond, i), name, guided))
            assert h.stats is not None
            assert h.stats.reused_blocks == len(steps) * (boundary + 1)
    counted = count_rows(blocks)
    with blockdance.attach(model, policy(REUSE, boundary), registry=reg, num_steps=STEPS) as h:
        together = sample(model, call, x, cond, name, guided)
        stats = h.stats
    torch.testing.assert_close(together, torch.cat(alone), rtol=1e-5, atol=1e-5)
    # compute really skipped: the structural blocks ran only on the computing samples' rows
    copies = 2 if guided else 1
    computing = sum(STEPS - len(s) for s in REUSE)
    assert counted[: boundary + 1] == [copies * computing] * (boundary + 1)
    assert counted[boundary + 1 :] == [copies * 4 * STEPS] * (len(blocks) - boundary - 1)
    # the statistics count a per-sample block call by its reusing rows
    assert stats is not None
    reused_rows = sum(len(s) for s in REUSE) * (boundary + 1) / 4
    assert stats.reused_blocks == pytest.approx(reused_rows)
    assert stats.saved_fraction == pytest.approx(reused_rows / (STEPS * len(blocks)))


def test_toy_per_sample_matches_a_loop_written_by_hand() -> None:
    """Independent of blockdance: the kept state per sample, written out in the test."""
    model, _, x, _, _, boundary = build("toy")
    expected = []
    for i, steps in enumerate(REUSE):
        kept: dict[str, torch.Tensor] = {}

        def front(
            step: int, h: torch.Tensor, compute: Any, steps: set[int] = steps, kept: Any = kept
        ) -> Any:
            if step not in steps:
                kept["state"] = compute(h)
            return kept["state"]

        expected.append(run_by_hand(model, x[i : i + 1], STEPS, boundary, front)[-1])
    reg = registry()
    with blockdance.attach(model, policy(REUSE, boundary), registry=reg, num_steps=STEPS):
        outs = []
        h = x
        with torch.no_grad():
            for t in timesteps(STEPS):
                out = model(h, torch.full((4,), t))
                outs.append(out)
                h = h - 0.05 * out
    torch.testing.assert_close(outs[-1], torch.cat(expected), rtol=1e-5, atol=1e-5)


def test_two_call_guidance_follows_the_same_decision_in_both_branches() -> None:
    model, call, x, cond, blocks, boundary = build("dit")
    reg = registry()
    counted = count_rows(blocks)
    with blockdance.attach(model, policy(REUSE, boundary), registry=reg, num_steps=STEPS):
        with torch.no_grad():
            for t in timesteps(STEPS):
                tt = torch.full((4,), t)
                call(model, x, tt, cond)
                call(model, x, tt, null_of(cond, "dit"))
    computing = sum(STEPS - len(s) for s in REUSE)
    assert counted[: boundary + 1] == [2 * computing] * (boundary + 1)


class Wrong(SampleSteps):
    def decide(self, ctx: StepContext, slot: int) -> Decision | torch.Tensor:
        bad = self.config.reuse[0]
        if ctx.step == 0 or slot > self.config.boundary:
            return Decision.COMPUTE
        if 7 in bad:  # three entries for four samples
            return torch.tensor([True, False, True])
        if 8 in bad:  # not bool
            return torch.tensor([1.0, 0.0, 1.0, 0.0])
        # sample 0 skips block 0 but computes block 1: no boundary ends its run
        mask = torch.tensor([True, False, False, False])
        return mask if slot == 0 else torch.zeros(4, dtype=torch.bool)


@pytest.mark.parametrize(
    ("marker", "message"),
    [(7, "decided for 3 samples"), (8, "1-D bool tensor"), (9, "rows \\[0\\]")],
)
def test_bad_per_sample_decisions_fail_clearly(marker: int, message: str) -> None:
    model, _, x, _, _, boundary = build("toy")
    bad = Wrong(SampleStepsConfig(reuse=(frozenset({marker}),), boundary=boundary))
    with blockdance.attach(model, bad, registry=registry(), num_steps=STEPS):
        with torch.no_grad(), pytest.raises(ReuseError, match=message):
            for t in timesteps(STEPS):
                model(x, torch.full((4,), t))


class ResidualSampleSteps(SampleSteps):
    def residual_runs(self) -> dict[int, int]:
        return {self.config.boundary: 0}


def test_per_sample_with_residual_reuse_is_refused() -> None:
    model, _, x, _, _, boundary = build("toy")
    bad = ResidualSampleSteps(SampleStepsConfig(reuse=tuple(map(frozenset, REUSE)), boundary=4))
    with blockdance.attach(model, bad, registry=registry(), num_steps=STEPS):
        with torch.no_grad(), pytest.raises(ReuseError, match="output reuse only"):
            for t in timesteps(STEPS):
                model(x, torch.full((4,), t))
    assert boundary == 4


def test_per_batch_policies_take_the_old_path() -> None:
    """A policy that returns Decisions never reaches the per-sample code."""
    model, _, x, _, _, boundary = build("toy")
    calls = []
    from blockdance import _runtime

    original = _runtime.Runtime._rows_before

    def spy(self: Any, *args: Any) -> Any:
        calls.append(args)
        return original(self, *args)

    _runtime.Runtime._rows_before = spy  # type: ignore[method-assign]
    try:
        with blockdance.attach(model, "blockdance", registry=registry(), num_steps=STEPS) as h:
            with torch.no_grad():
                for t in timesteps(STEPS):
                    model(x, torch.full((4,), t))
            assert h.stats is not None and h.stats.reused_blocks > 0
    finally:
        _runtime.Runtime._rows_before = original  # type: ignore[method-assign]
    assert calls == [] and boundary == 4


def test_guidance_batch_reaches_the_policy() -> None:
    seen: list[int] = []

    class Counting(SampleSteps):
        sees_calls = True

        def begin_call(self, ctx: StepContext, call: blockdance.ModelCall) -> None:
            seen.append(call.samples)

    model, call, x, cond, _, boundary = build("dit")
    p = Counting(SampleStepsConfig(reuse=tuple(map(frozenset, REUSE)), boundary=boundary))
    with blockdance.attach(model, p, registry=registry(), num_steps=STEPS, guidance_batch=2):
        sample(model, call, x, cond, "dit", guided=True)
    assert seen == [4] * STEPS
    with blockdance.attach(model, p, registry=registry(), num_steps=STEPS):
        with pytest.raises(blockdance.GenerationError, match="guidance_batch="):
            sample(model, call, x, cond, "dit", guided=True)
    info: GenerationInfo | None = p.info
    assert info is not None and info.guidance_batch is None


def test_reuse_map_shows_the_share_of_samples_that_reused() -> None:
    reuse = ({2, 3}, {3}, {3, 4, 5}, {1, 3})  # step 3: every sample reuses
    model, call, x, cond, blocks, boundary = build("toy")
    with blockdance.attach(
        model, policy(reuse, boundary), registry=registry(), num_steps=STEPS
    ) as h:
        sample(model, call, x, cond, "toy", False)
    assert h.stats is not None
    # written out from the sets: at a step, the share of the four samples whose set holds it
    expected = [
        [sum(step in s for s in reuse) / 4 if b <= boundary else 0.0 for b in range(len(blocks))]
        for step in range(STEPS)
    ]
    assert h.stats.reuse_map() == expected
    # a pair counts as reused only where every sample reused it
    assert h.stats.reused_pairs() == {(3, b) for b in range(boundary + 1)}
    marks = {0: "C", 1: "r", 2: "r", 3: "R", 4: "r", 5: "r"}  # step -> structural blocks' mark
    assert [line[11] for line in h.stats.step_table().splitlines()] == [
        marks[s] for s in range(STEPS)
    ]
