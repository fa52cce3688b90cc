"""Data that flows around blocks: long skips, in-place blocks, changes of form (issue 15).

References are computed here by hand from the documented semantics, or by the unhooked
model with its blocks' outputs replaced through forward hooks; never by the runtime.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import pytest
import torch
from torch import nn

import blockdance
from blockdance import ArchitectureSpec, BlockSlot, TensorIO, timestep_argument
from blockdance.testing import ArchitectureChecks
from toymodel import registry_of, run_by_hand, timesteps

T = 20
DEPTH = 8
BOUNDARY = 5  # 21/28 of 8 blocks
REUSE_STEPS = {6, 8, 10, 12, 14, 16, 18}  # BlockDance N=2, window 25%-95% of 20 steps


class SkipBlock(nn.Module):
    """x + tanh(W x (+ V skip)) * c: a U-ViT/HunyuanDiT-style block with an optional skip."""

    def __init__(self, dim: int, takes_skip: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim)
        self.skip_lin = nn.Linear(dim, dim) if takes_skip else None

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, skip: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.lin(x)
        if skip is not None:
            assert self.skip_lin is not None
            h = h + self.skip_lin(skip)
        return x + torch.tanh(h) * c


class SkipDenoiser(nn.Module):
    """Early blocks push their outputs on a list that the deep blocks pop (HunyuanDiT's rule)."""

    def __init__(self, depth: int = DEPTH, dim: int = 16) -> None:
        super().__init__()
        self.depth = depth
        self.blocks = nn.ModuleList(SkipBlock(dim, i > depth // 2) for i in range(depth))
        self.t_proj = nn.Linear(1, dim)
        self.head = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = torch.sigmoid(self.t_proj(t.reshape(-1, 1).float() / 1000))[:, None, :]  # (N, 1, D)
        skips: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(x, c, skips.pop()) if i > self.depth // 2 else block(x, c)
            if i < self.depth // 2 - 1:
                skips.append(x)
        return self.head(x)


def feeds_skip_list(index: int, depth: int) -> bool:
    return index < depth // 2 - 1


def skip_slots(model: nn.Module, *, declare: bool = True) -> list[BlockSlot]:
    return [
        BlockSlot(
            index=i,
            module=block,
            io=TensorIO(name="x"),
            name=f"blocks.{i}",
            side_flow=declare and feeds_skip_list(i, model.depth),
        )
        for i, block in enumerate(model.blocks)
    ]


def _example() -> blockdance.ArchitectureExample:
    def build() -> SkipDenoiser:
        torch.manual_seed(0)
        return SkipDenoiser().eval()

    def call(model: nn.Module, t: int) -> torch.Tensor:
        x = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(t))
        return model(x, torch.full((2,), t))

    return blockdance.ArchitectureExample(build=build, call=call)


SKIP_SPEC = ArchitectureSpec(
    name="toy-skips",
    description="toy denoiser with long skips (tests/test_side_flows.py)",
    matches=lambda m: isinstance(m, SkipDenoiser),
    blocks=skip_slots,
    timestep=timestep_argument("t"),
    example=_example,
)
UNDECLARED = dataclasses.replace(
    SKIP_SPEC, name="toy-skips-undeclared", blocks=lambda m: skip_slots(m, declare=False)
)


def x0() -> torch.Tensor:
    return torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(1))


def sample(model: nn.Module) -> list[torch.Tensor]:
    x, outs = x0(), []
    with torch.no_grad():
        for t in timesteps(T):
            out = model(x, torch.full((2,), t))
            outs.append(out)
            x = x - 0.05 * out
    return outs


def by_hand(model: SkipDenoiser) -> list[torch.Tensor]:
    """BlockDance N=2 on the skip model, written from the semantics: at a reuse step every
    consumer of blocks 0..BOUNDARY gets their outputs from the last cache step."""
    x, outs = x0(), []
    cached: list[torch.Tensor] = []
    with torch.no_grad():
        for step, t in enumerate(timesteps(T)):
            c = torch.sigmoid(model.t_proj(torch.full((2, 1), t / 1000)))[:, None, :]
            skips: list[torch.Tensor] = []
            h = x
            for i, block in enumerate(model.blocks):
                skip = skips.pop() if i > DEPTH // 2 else None  # the model pops either way
                if step in REUSE_STEPS and i <= BOUNDARY:
                    h = cached[i]
                else:
                    h = block(h, c, skip)
                    if step + 1 in REUSE_STEPS and i <= BOUNDARY:  # a cache step
                        cached = [*cached[:i], h]
                if i < DEPTH // 2 - 1:
                    skips.append(h)
            out = model.head(h)
            outs.append(out)
            x = x - 0.05 * out
    return outs


def test_long_skips_get_the_cache_steps_outputs():
    torch.manual_seed(0)
    model = SkipDenoiser().eval()
    want = by_hand(model)
    registry = registry_of(SKIP_SPEC)
    with blockdance.attach(model, "blockdance", N=2, registry=registry, num_steps=T) as h:
        got = sample(model)
    for step, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, msg=f"step {step}")
    assert {s for s, _ in h.stats.reused_pairs()} == REUSE_STEPS
    # three side-flow outputs (blocks 0, 1, 2) are kept beside the boundary state
    state = x0()
    assert h.stats.peak_side_flow_bytes == 3 * state.numel() * state.element_size()
    assert h.stats.peak_cache_bytes == 4 * state.numel() * state.element_size()


def test_undeclared_long_skips_pass_the_input_and_differ():
    """What a plugin without side flows gave: the deep blocks receive pass-through inputs."""
    torch.manual_seed(0)
    model = SkipDenoiser().eval()
    want = by_hand(model)
    registry = registry_of(UNDECLARED)
    with blockdance.attach(model, "blockdance", N=2, registry=registry, num_steps=T):
        got = sample(model)
    assert torch.equal(got[5], want[5])  # identical until the first reuse step
    assert not torch.allclose(got[6], want[6], atol=1e-4)


def test_the_side_flow_check_catches_undeclared_skips_and_passes_declared_ones():
    registry = registry_of(SKIP_SPEC, UNDECLARED)
    ArchitectureChecks.for_architecture(SKIP_SPEC, registry).run_all()
    undeclared = ArchitectureChecks.for_architecture(UNDECLARED, registry)
    undeclared.check_identity_under_none()  # identity and the schedule cannot see it
    undeclared.check_blockdance_schedule(2)
    with pytest.raises(AssertionError, match="side_flow=True"):
        undeclared.check_reuse_matches_frozen_outputs()


@pytest.mark.parametrize("kind", ["deepcache", "fora", "random", "schedule"])
def test_every_policy_serves_side_flows(kind):
    """Any policy's reuse equals the frozen-outputs reference, with no policy code for it."""
    torch.manual_seed(0)
    model = SkipDenoiser().eval()
    registry = registry_of(SKIP_SPEC)
    options = {"schedule": {"reuse": {1: "0-5"}}}.get(kind, {})
    policy = registry.make_policy(kind, **options)
    t0, t1 = timesteps(T)[9:11]

    def call(t: int) -> torch.Tensor:
        x = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(t))
        return model(x, torch.full((2,), t))

    with blockdance.attach(model, policy, registry=registry) as h:
        with h.generation(num_steps=2), torch.no_grad():
            call(t0)
            got = call(t1)
    reused = sorted(b for s, b in h.stats.reused_pairs() if s == 1)
    assert reused, f"{kind} reused nothing at step 1 of 2: the test would prove nothing"
    outputs: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        hooks = [
            model.blocks[i].register_forward_hook(
                lambda m, a, o, i=i: outputs.__setitem__(i, o.clone())
            )
            for i in reused
        ]
        call(t0)
        for hook in hooks:
            hook.remove()
        hooks = [
            model.blocks[i].register_forward_hook(lambda m, a, o, i=i: outputs[i]) for i in reused
        ]
        want = call(t1)
        for hook in hooks:
            hook.remove()
    torch.testing.assert_close(got, want)


# -- in-place blocks ------------------------------------------------------------------------
class InPlaceBlock(nn.Module):
    """``x += f(x); return x``: writes into the tensor it was given."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x += torch.tanh(self.lin(x)) * c
        return x


class InPlaceDenoiser(nn.Module):
    def __init__(self, depth: int = DEPTH, dim: int = 16) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(InPlaceBlock(dim) for _ in range(depth))
        self.t_proj = nn.Linear(1, dim)
        self.head = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = torch.sigmoid(self.t_proj(t.reshape(-1, 1).float() / 1000))[:, None, :]
        x = x.clone()  # the blocks write into it
        for block in self.blocks:
            x = block(x, c)
        return self.head(x)


IN_PLACE_SPEC = ArchitectureSpec(
    name="toy-in-place",
    matches=lambda m: isinstance(m, InPlaceDenoiser),
    blocks=blockdance.module_list_blocks("blocks", TensorIO(name="x")),
    timestep=timestep_argument("t"),
)


@pytest.mark.parametrize(
    ("kind", "options"),
    [("blockdance", {"N": 3}), ("fora", {"N": 3}), ("fora", {"N": 3, "reuse": "residual"})],
)
def test_in_place_blocks_never_change_a_cached_state(kind, options):
    torch.manual_seed(0)
    model = InPlaceDenoiser().eval()
    registry = registry_of(IN_PLACE_SPEC)
    with blockdance.attach(model, kind, registry=registry, num_steps=T, **options) as h:
        got = sample(model)
    reuse_steps = {s for s, _ in h.stats.reused_pairs()}
    assert reuse_steps
    # by hand: at a reuse step the reused run's output is the one its last block gave at
    # the last step that computed it (output reuse) or that step's change added (residual)
    runs = h.policy.residual_runs()
    kept = None

    def front(step, x, compute):  # the blocks write into what they get: hand them copies
        nonlocal kept
        if step in reuse_steps:
            return x + kept if runs else kept.clone()
        h_ = compute(x.clone())
        kept = h_ - x if runs else h_.clone()
        return h_

    last = max(b for _, b in h.stats.reused_pairs())
    want = run_by_hand(model, x0(), T, last, front)
    for step, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, msg=f"step {step}")


# -- a change of form between blocks ------------------------------------------------------
class MergeDenoiser(nn.Module):
    """Two streams in the first half, joined into one token sequence for the second."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.doubles = nn.ModuleList(nn.Linear(dim, dim) for _ in range(3))
        self.singles = nn.ModuleList(nn.Linear(dim, dim) for _ in range(3))
        self.t_proj = nn.Linear(1, dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = torch.sigmoid(self.t_proj(t.reshape(-1, 1).float() / 1000))[:, None, :]
        image, text = x, x[:, :2] * 0.5
        for block in self.doubles:
            image, text = block(image) * c + image, block(text) + text
        joined = torch.cat([image, text], dim=1)  # (N, 4 + 2, D)
        for block in self.singles:
            joined = block(joined) * c + joined
        return joined[:, : x.shape[1]]


def merge_slots(model: nn.Module) -> list[BlockSlot]:
    # the double-stream "blocks" here are plain Linears called per stream; the test only
    # needs the forms, so wrap the streams' projection as one tensor in, one out
    slots = [
        BlockSlot(i, m, TensorIO(name="input"), "double", f"double.{i}", form="two-stream")
        for i, m in enumerate(model.doubles)
    ]
    slots += [
        BlockSlot(3 + i, m, TensorIO(name="input"), "single", f"single.{i}", form="joined")
        for i, m in enumerate(model.singles)
    ]
    return slots


MERGE_SPEC = ArchitectureSpec(
    name="toy-merge",
    matches=lambda m: isinstance(m, MergeDenoiser),
    blocks=merge_slots,
    timestep=timestep_argument("t"),
)


def test_a_residual_run_across_a_change_of_form_is_refused_when_the_generation_starts():
    model = MergeDenoiser().eval()
    registry = registry_of(MERGE_SPEC)
    with blockdance.attach(model, "fora", N=2, reuse="residual", registry=registry) as h:
        with pytest.raises(blockdance.ReuseError, match=r"blocks 0\.\.5.*'two-stream'.*'joined'"):
            with h.generation(num_steps=T):
                pass  # refused before any model call


# -- per-sample decisions with side flows and in-place blocks (issue 17) --------------------
class RowStepsConfig(blockdance.PolicyConfig):
    kind: Literal["row-steps"] = "row-steps"
    reuse: tuple[frozenset[int], ...]  # per row of the batch: the steps it reuses
    boundary: int = BOUNDARY


class RowSteps(blockdance.Policy[RowStepsConfig]):
    """Row ``i`` reuses blocks ``0..boundary`` at the steps ``reuse[i]``."""

    config_class: ClassVar[type[blockdance.PolicyConfig]] = RowStepsConfig

    def boundaries(self) -> frozenset[int]:
        return frozenset({self.config.boundary})

    def decide(self, ctx: blockdance.StepContext, slot: int) -> blockdance.Decision | torch.Tensor:
        if slot > self.config.boundary:
            return blockdance.Decision.COMPUTE
        return torch.tensor([ctx.step in steps for steps in self.config.reuse])


def test_per_sample_reuse_serves_each_rows_own_side_flows():
    """Row 0 reuses on BlockDance's steps, row 1 never: row 0 must equal the hand-written
    BlockDance run (its long skips from its cache step) and row 1 the unhooked model."""
    torch.manual_seed(0)
    model = SkipDenoiser().eval()
    want_reusing = by_hand(model)
    want_computing = sample(model)  # not attached
    policy = RowSteps(RowStepsConfig(reuse=(frozenset(REUSE_STEPS), frozenset())))
    with blockdance.attach(model, policy, registry=registry_of(SKIP_SPEC), num_steps=T) as h:
        got = sample(model)
    for step, out in enumerate(got):
        torch.testing.assert_close(out[0], want_reusing[step][0], msg=f"row 0, step {step}")
        torch.testing.assert_close(out[1], want_computing[step][1], msg=f"row 1, step {step}")
    assert h.stats is not None
    assert h.stats.reused_blocks == len(REUSE_STEPS) * (BOUNDARY + 1) / 2


def test_per_sample_reuse_with_in_place_blocks_keeps_each_rows_cache():
    """In-place blocks write into what they get; a row's cached state must survive the other
    row's computing. Reference: each row alone, decided for its whole (one-row) batch."""
    torch.manual_seed(0)
    model = InPlaceDenoiser().eval()
    registry = registry_of(IN_PLACE_SPEC)
    rows = (frozenset(REUSE_STEPS), frozenset({7, 8, 9, 13}))

    def run_rows(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            for t in timesteps(T):
                x = x - 0.05 * model(x, torch.full((x.shape[0],), t))
        return x

    alone = []
    for i, steps in enumerate(rows):
        with blockdance.attach(
            model, RowSteps(RowStepsConfig(reuse=(steps,))), registry=registry, num_steps=T
        ):
            alone.append(run_rows(x0()[i : i + 1]))
    with blockdance.attach(
        model, RowSteps(RowStepsConfig(reuse=rows)), registry=registry, num_steps=T
    ) as h:
        together = run_rows(x0())
    torch.testing.assert_close(together, torch.cat(alone), rtol=1e-5, atol=1e-6)
    assert h.stats is not None and h.stats.reused_blocks > 0
