"""What a policy receives, and in which order: begin, begin_call, inspect, decide, keep,
observe, end_call, memory_bytes, end; the exact objects each gets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import pytest
import torch

import blockdance
from blockdance import (
    BlockCall,
    Decision,
    GenerationInfo,
    ModelCall,
    Policy,
    PolicyConfig,
    StepContext,
)
from blockdance.testing import make_registry
from toymodel import ToyDenoiser, ToyPlugin, timesteps

DEPTH, BOUNDARY, STEPS = 4, 1, 3


class RecorderConfig(PolicyConfig):
    kind: Literal["recorder"] = "recorder"
    held: int = 0


class Recorder(Policy[RecorderConfig]):
    """Reuses blocks 0..1 at step 2; writes down every call it receives."""

    config_class: ClassVar[type[PolicyConfig]] = RecorderConfig
    observes = True
    sees_calls = True

    def __init__(self, config: RecorderConfig) -> None:
        super().__init__(config)
        self.events: list[tuple[Any, ...]] = []
        self.objects: list[tuple[str, Any]] = []

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        self.events.append(("begin",))

    def end(self) -> None:
        self.events.append(("end",))

    def begin_call(self, ctx: StepContext, call: ModelCall) -> None:
        self.events.append(("begin_call", ctx.step, ctx.branch))
        self.objects.append(("call", call))

    def end_call(self, ctx: StepContext, call: ModelCall, output: Any) -> None:
        self.events.append(("end_call", ctx.step, ctx.branch))
        self.objects.append(("output", output))

    def inspects(self) -> frozenset[int]:
        return frozenset({0})

    def inspect(self, ctx: StepContext, slot: int, call: BlockCall) -> None:
        self.events.append(("inspect", ctx.step, slot))
        self.objects.append(("block", call))

    def decide(self, ctx: StepContext, slot: int) -> Decision:
        self.events.append(("decide", ctx.step, slot))
        reuse = ctx.step == 2 and slot <= BOUNDARY
        return Decision.REUSE if reuse else Decision.COMPUTE

    def boundaries(self) -> frozenset[int]:
        return frozenset({BOUNDARY})

    def keep(self, ctx: StepContext, slot: int) -> bool:
        self.events.append(("keep", ctx.step, slot))
        return True

    def observe(self, ctx: StepContext, slot: int, output: Any) -> None:
        self.events.append(("observe", ctx.step, slot))
        self.objects.append(("observed", output))

    def memory_bytes(self) -> int:
        self.events.append(("memory_bytes",))
        return self.config.held


class RecorderPlugin:
    @blockdance.hookimpl
    def blockdance_register_policies(self, register: Callable[..., None]) -> None:
        register(RecorderConfig, Recorder)


def expected_events() -> list[tuple[Any, ...]]:
    """Written out: the documented order for DEPTH blocks, reuse of 0..1 at step 2."""
    events: list[tuple[Any, ...]] = [("begin",)]
    for step in range(STEPS):
        events.append(("begin_call", step, 0))
        for slot in range(DEPTH):
            if slot == 0:
                events.append(("inspect", step, 0))
            events.append(("decide", step, slot))
            if step == 2 and slot <= BOUNDARY:
                continue  # reused: no keep, no observe
            if slot == BOUNDARY:
                events.append(("keep", step, slot))
            events.append(("observe", step, slot))
        events += [("end_call", step, 0), ("memory_bytes",)]
    return [*events, ("end",)]


def test_call_order_and_what_each_call_receives() -> None:
    model = ToyDenoiser(depth=DEPTH, dim=8)
    recorder = Recorder(RecorderConfig())
    registry = make_registry(ToyPlugin(), RecorderPlugin())
    x = torch.randn(2, 3, 8)
    outputs, inputs = [], []
    with blockdance.attach(model, recorder, registry=registry) as h:
        with h.generation(num_steps=STEPS), torch.no_grad():
            for t in timesteps(STEPS):
                tt = torch.full((2,), t)
                inputs.append((x, tt))
                outputs.append(model(x, tt))
                x = x - 0.1 * outputs[-1]
    assert recorder.events == expected_events()
    calls = [o for kind, o in recorder.objects if kind == "call"]
    got = [o for kind, o in recorder.objects if kind == "output"]
    blocks = [o for kind, o in recorder.objects if kind == "block"]
    observed = [o for kind, o in recorder.objects if kind == "observed"]
    seen = zip(calls, got, blocks, inputs, outputs, strict=True)
    for call, out, block, (xin, tt), returned in seen:
        assert type(call) is ModelCall and call.model is model
        assert call.args[0] is xin and call.args[1] is tt and call.kwargs == {}
        assert call.latent is xin  # the toy spec declares x
        assert call.condition is None
        assert out is returned  # the model's return value, as the caller got it
        assert type(block) is BlockCall and block.module is model.blocks[0]
        assert block.state[0].shape == (2, 3, 8) and block.args[0] is block.state[0]
    assert all(type(o) is torch.Tensor for o in observed)  # a toy block returns one tensor


def test_memory_a_policy_reports_is_counted_in_the_cache_column() -> None:
    model = ToyDenoiser(depth=DEPTH, dim=8)
    registry = make_registry(ToyPlugin(), RecorderPlugin())
    x = torch.randn(2, 3, 8)
    with blockdance.attach(model, Recorder(RecorderConfig(held=1000)), registry=registry) as h:
        with h.generation(num_steps=STEPS), torch.no_grad():
            for t in timesteps(STEPS):
                model(x, torch.full((2,), t))
        stats = h.stats
    assert stats is not None
    boundary_state = 2 * 3 * 8 * 4  # one (2, 3, 8) float32 state kept for block 1
    assert stats.peak_policy_bytes == 1000
    assert stats.peak_cache_bytes == boundary_state + 1000
    assert stats.to_dict()["peak_policy_bytes"] == 1000


def test_sd3_calls_carry_latent_condition_and_tuple_outputs() -> None:
    """On diffusers' SD3: the latent and pooled projection the plugin declares, a tuple per
    joint block, the diffusers output object from the model."""
    from blockdance_mmdit import plugin as mmdit
    from blockdance_mmdit.examples import tiny_sd3

    model = tiny_sd3()
    recorder = Recorder(RecorderConfig())
    registry = make_registry(mmdit, RecorderPlugin())
    g = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(2, 4, 8, 8, generator=g),
        "encoder_hidden_states": torch.randn(2, 6, 12, generator=g),
        "pooled_projections": torch.randn(2, 8, generator=g),
    }
    with blockdance.attach(model, recorder, registry=registry) as h:
        with h.generation(num_steps=STEPS), torch.no_grad():
            out = model(**inputs, timestep=torch.full((2,), 999.0))
    (call,) = [o for kind, o in recorder.objects if kind == "call"]
    assert call.latent is inputs["hidden_states"]
    assert call.condition is inputs["pooled_projections"]
    (returned,) = [o for kind, o in recorder.objects if kind == "output"]
    assert returned is out
    observed = [o for kind, o in recorder.objects if kind == "observed"]
    assert all(isinstance(o, tuple) and len(o) == 2 for o in observed)
    (block,) = [o for kind, o in recorder.objects if kind == "block"]
    assert len(block.state) == 2  # (hidden_states, encoder_hidden_states)


def test_a_model_call_without_a_declared_latent_says_so() -> None:
    call = ModelCall(torch.nn.Linear(1, 1), (), {}, latent=None, condition=None)
    with pytest.raises(blockdance.GenerationError, match="latent"):
        call.batch_size  # noqa: B018
