"""Steps, branches and generations are known, never guessed wrong (issue 14).

Each test builds its expectation independently of the runtime: by hand from the schedule,
from a fresh attach on a fresh model, or from a single-threaded run.
"""

from __future__ import annotations

import copy
import io
import math
import threading
import warnings
from collections.abc import Iterator
from typing import ClassVar, Literal

import numpy as np
import pytest
import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    StableDiffusion3Img2ImgPipeline,
)
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.pipelines.flux.pipeline_flux import calculate_shift

import blockdance
from blockdance.policies.ada import StepMaskConfig, StepMaskPolicy
from blockdance.policy import PolicyConfig, StepContext
from tiny_diffusers import DEPTH, TXT, flux_pipe, prompt_embeds, run_flux, run_sd3, sd3_pipe
from toymodel import ToyDenoiser, run, timesteps

T = 20
TOY_BOUNDARY = 5  # 8 toy blocks
SD3_BOUNDARY = blockdance.default_boundary(DEPTH)


def x0(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 4, 16, generator=torch.Generator().manual_seed(seed))


def window_reuse_steps(num_steps: int, n: int = 2, window: tuple[float, float] = (0.25, 0.95)):
    """BlockDance's reuse steps, written out here from the paper's rule (not the policy's)."""
    first = math.ceil(window[0] * num_steps - 1e-9)
    last = min(math.ceil(window[1] * num_steps - 1e-9), num_steps)
    return {s for s in range(first, last) if (s - first) % n}


def reused_steps(stats: blockdance.GenerationStats, branch: int = 0) -> set[int]:
    return {step for step, _ in stats.reused_pairs(branch)}


# -- 1. img2img: the window is placed over the steps that run --------------------------
@pytest.mark.parametrize(("strength", "executed"), [(0.5, 5), (0.3, 3)])
def test_img2img_window_over_the_executed_steps(strength, executed):
    pipe = StableDiffusion3Img2ImgPipeline.from_pipe(sd3_pipe())
    image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with blockdance.attach(pipe, "blockdance", N=2) as handle:
        run_sd3(pipe, 10, image=image, strength=strength, output_type="latent")
    stats = handle.stats
    schedule = [float(t) for t in pipe.scheduler.timesteps]
    assert stats.num_steps == executed == stats.steps_seen
    assert stats.step_source == "pipeline"
    # step 0 is the first step that ran, at the timestep img2img starts from
    assert [c.timestep for c in stats.calls] == schedule[10 - executed :]
    assert reused_steps(stats) == window_reuse_steps(executed) != set()
    assert 0 not in reused_steps(stats)


def test_img2img_from_a_shared_pipeline_follows_the_shared_scheduler():
    """``from_pipe`` shares the attached transformer and scheduler: its steps are counted."""
    pipe = sd3_pipe()
    with blockdance.attach(pipe, "blockdance", N=2) as handle:
        i2i = StableDiffusion3Img2ImgPipeline.from_pipe(pipe)
        image = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        i2i(image=image, strength=0.5, **prompt_embeds(), num_inference_steps=10, height=8, width=8)
        assert handle.runtime.cache == {}  # the generation ended with its schedule
    assert handle.stats.step_source == "scheduler"
    assert handle.stats.num_steps == handle.stats.steps_seen == 5
    assert reused_steps(handle.stats) == window_reuse_steps(5)


# -- 2. bf16 timesteps that collide: steps come from the scheduler -----------------------
def flux_bf16_at_2048():
    """A tiny Flux pipeline in bf16 whose schedule is FluxPipeline's at 2048x2048, 28 steps.

    FluxPipeline shifts the schedule by mu = calculate_shift(16384 tokens); a static shift of
    exp(mu) gives the same timesteps at the tiny model's 8x8.
    """
    pipe = flux_pipe()
    mu = calculate_shift(16384, 256, 4096, 0.5, 1.15)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=math.exp(mu))
    return pipe.to(torch.bfloat16)


def flux_bf16_model_at_2048():
    """The transformer and scheduler of :func:`flux_bf16_at_2048`, set to its 28 steps."""
    pipe = flux_bf16_at_2048()
    pipe.scheduler.set_timesteps(28)
    return pipe.transformer, pipe.scheduler


def test_bf16_flux_timesteps_collide_yet_every_step_is_seen():
    pipe = flux_bf16_at_2048()
    pipe.scheduler.set_timesteps(28)
    as_passed = {float(t.to(torch.bfloat16) / 1000) for t in pipe.scheduler.timesteps}
    assert len(as_passed) < 28  # the premise: FluxPipeline's bf16 timesteps merge steps
    with blockdance.attach(pipe, "blockdance", N=2) as handle:
        # true CFG: two transformer calls per step
        run_flux(pipe, 28, dtype=torch.bfloat16, output_type="latent")
    stats = handle.stats
    assert stats.steps_seen == stats.num_steps == 28
    assert stats.branches == 2
    assert all(c.branch == i % 2 and c.step == i // 2 for i, c in enumerate(stats.calls))
    for branch in (0, 1):
        assert reused_steps(stats, branch) == window_reuse_steps(28)
    assert 27 not in reused_steps(stats)


def test_colliding_timesteps_without_a_scheduler_raise_instead_of_merging_steps():
    model, scheduler = flux_bf16_model_at_2048()
    with blockdance.attach(model, "blockdance", N=2) as handle:
        with handle.generation(num_steps=28):
            with pytest.raises(blockdance.GenerationError, match="scheduler=scheduler"):
                drive_flux(model, scheduler)


def test_colliding_timesteps_with_end_step_marks_are_counted_exactly():
    model, scheduler = flux_bf16_model_at_2048()
    with blockdance.attach(model, "blockdance", N=2) as handle:
        with handle.generation(num_steps=28):
            drive_flux(model, scheduler, end_step=handle.end_step)
            stats = handle.stats
    assert (stats.steps_seen, stats.branches) == (28, 2)
    assert reused_steps(stats, 0) == reused_steps(stats, 1) == window_reuse_steps(28)


def drive_flux(model, scheduler, end_step=None) -> None:
    """FluxPipeline's loop, reduced: bf16 latents, timestep ``t.to(bf16) / 1000``, true CFG."""
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 4, generator=g).to(torch.bfloat16)  # (N, tokens, C)
    text = torch.randn(2, 1, TXT, 12, generator=g).to(torch.bfloat16)
    pooled = torch.randn(2, 1, 8, generator=g).to(torch.bfloat16)
    img_ids = torch.zeros(16, 3)
    txt_ids = torch.zeros(TXT, 3)
    with torch.no_grad():
        for t in scheduler.timesteps:
            timestep = t.expand(1).to(latents.dtype) / 1000
            outs = [
                model(
                    hidden_states=latents,
                    timestep=timestep,
                    encoder_hidden_states=text[i],
                    pooled_projections=pooled[i],
                    txt_ids=txt_ids,
                    img_ids=img_ids,
                ).sample
                for i in (0, 1)
            ]
            noise = outs[1] + 2.0 * (outs[0] - outs[1])
            latents = scheduler.step(noise, t, latents, return_dict=False)[0]
            if end_step is not None:
                end_step()


def test_bare_model_with_its_scheduler_counts_bf16_steps_exactly():
    model, scheduler = flux_bf16_model_at_2048()
    with blockdance.attach(model, "blockdance", N=2, scheduler=scheduler) as handle:
        scheduler.set_timesteps(28)
        drive_flux(model, scheduler)
    stats = handle.stats
    assert stats.step_source == "scheduler"
    assert (stats.steps_seen, stats.branches) == (28, 2)
    assert reused_steps(stats, 1) == window_reuse_steps(28)


# -- 3. a generation ends when its pipeline call returns ----------------------------------
def test_pipeline_generation_ends_with_the_call_and_a_later_loop_starts_fresh():
    pipe = sd3_pipe()
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))

    def own_loop(model, steps=10):
        enc = torch.randn(2, TXT, 12, generator=torch.Generator().manual_seed(4))
        pooled = torch.randn(2, 8, generator=torch.Generator().manual_seed(5))
        h, outs = x, []
        with torch.no_grad():
            for t in torch.linspace(1000, 100, steps):
                out = model(h, enc, pooled, t.expand(2)).sample
                outs.append(out)
                h = h - 0.05 * out
        return outs

    with blockdance.attach(pipe, "blockdance", N=2, num_steps=10) as handle:
        run_sd3(pipe)
        assert handle.runtime.cache == {}  # the call returned: its generation is over
        got = own_loop(pipe.transformer)  # before: counted as steps 10.. of the pipeline's run
        assert handle.stats.step_source == "implicit"
    fresh = sd3_pipe()
    with blockdance.attach(fresh.transformer, "blockdance", N=2, num_steps=10):
        want = own_loop(fresh.transformer)
    assert len(handle.history) == 2
    for step, (a, b) in enumerate(zip(got, want)):
        assert torch.equal(a, b), f"step {step} of the later loop used the pipeline's state"


def test_interrupted_pipeline_call_leaves_nothing_behind():
    pipe = sd3_pipe()

    def interrupt_at_5(p, i, t, kwargs):
        if i == 5:
            p._interrupt = True
        return kwargs

    with blockdance.attach(pipe, "blockdance", N=2) as handle:
        pipe(
            **prompt_embeds(),
            num_inference_steps=10,
            height=8,
            width=8,
            callback_on_step_end=interrupt_at_5,
        )
        assert handle.stats.steps_seen == 6 and handle.runtime.cache == {}
        after = run_sd3(pipe)
    with blockdance.attach(fresh := sd3_pipe(), "blockdance", N=2):
        want = run_sd3(fresh)
    np.testing.assert_array_equal(after, want)


def test_rising_timestep_inside_an_explicit_generation_raises(toy, registry):
    with blockdance.attach(toy, "blockdance", N=2, registry=registry) as handle:
        with handle.generation(num_steps=T):
            run(toy, x0(), T, stop=8)
            with pytest.raises(blockdance.GenerationError, match="rose from"):
                run(toy, x0(), T, stop=1)  # a second trajectory starts at 999


# -- 4. a scheduler swapped after attach is the one followed -----------------------------
def test_scheduler_swapped_after_attach():
    pipe = sd3_pipe()
    with blockdance.attach(pipe, "blockdance", N=2) as handle:
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
        run_sd3(pipe)  # before: NumStepsRequiredError
        first = handle.stats
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(
            pipe.scheduler.config, shift=3.0
        )
        run_sd3(pipe)  # before: counted as steps 10, 11, ... and nothing reused
        second = handle.stats
    for stats in (first, second):
        assert stats.num_steps == stats.steps_seen == 10
        assert reused_steps(stats) == window_reuse_steps(10) != set()
    assert first is not second


# -- 5. multi-evaluation schedulers --------------------------------------------------------
def test_heun_counts_each_model_evaluation_as_a_step():
    pipe = sd3_pipe()
    pipe.scheduler = FlowMatchHeunDiscreteScheduler.from_config(pipe.scheduler.config)
    counts = count_block_calls(pipe.transformer)
    with blockdance.attach(pipe, "blockdance", N=2) as handle:
        run_sd3(pipe, steps=6)
    evaluations = len(pipe.scheduler.timesteps)
    assert evaluations == 11  # Heun: 2 * 6 - 1 evaluations, timesteps repeated
    stats = handle.stats
    assert stats.num_steps == stats.steps_seen == evaluations
    reuse = window_reuse_steps(evaluations)
    assert reused_steps(stats) == reuse
    assert counts[0] == evaluations - len(reuse)  # reused evaluations really skipped block 0


def test_repeated_timesteps_without_a_scheduler_raise(toy, registry):
    heun_like = [999, 800, 800, 600, 600, 400, 400]
    with blockdance.attach(toy, "blockdance", N=2, registry=registry) as handle:
        with handle.generation(num_steps=4):
            with pytest.raises(blockdance.GenerationError, match="more than once per timestep"):
                for t in heun_like:
                    toy(x0(), torch.full((2,), t))


def count_block_calls(model) -> dict[int, int]:
    counts = dict.fromkeys(range(len(model.transformer_blocks)), 0)
    for i, block in enumerate(model.transformer_blocks):
        original = block.forward

        def counted(*args, _i=i, _f=original, **kwargs):
            counts[_i] += 1
            return _f(*args, **kwargs)

        block.forward = counted
    return counts


# -- 6. threads sharing one attached model -----------------------------------------------
def test_two_threads_on_one_model_keep_their_own_steps_and_caches(toy, registry):
    inputs = [x0(seed=1), x0(seed=2) * 2 + 1]
    wants = []
    for x in inputs:
        model = copy.deepcopy(toy)
        with blockdance.attach(model, "blockdance", N=2, registry=registry, num_steps=T):
            wants.append(run(model, x, T))
    barrier = threading.Barrier(2)
    gots: list[list[torch.Tensor]] = [[], []]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with handle.generation(num_steps=T):
                x = inputs[i]
                with torch.no_grad():
                    for t in timesteps(T):
                        barrier.wait()  # the two threads' calls interleave step by step
                        out = toy(x, torch.full((2,), t))
                        gots[i].append(out)
                        x = x - 0.05 * out
        except BaseException as e:
            errors.append(e)
            barrier.abort()

    with blockdance.attach(toy, "blockdance", N=2, registry=registry) as handle:
        threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert not errors, errors
    for i in (0, 1):
        for step, (a, b) in enumerate(zip(gots[i], wants[i])):
            assert torch.equal(a, b), f"thread {i} step {step} mixed with the other thread"
    assert len(handle.history) == 2
    for stats in handle.history:
        assert stats.steps_seen == T and reused_steps(stats) == window_reuse_steps(T)


def test_per_request_pipelines_in_threads_share_one_transformer():
    """diffusers' serving pattern: one pipeline per request, made with from_pipe."""
    pipe = sd3_pipe()
    with blockdance.attach(pipe, "blockdance", N=2):
        want = run_sd3(pipe)  # one request alone
        requests = [
            pipe.from_pipe(pipe, scheduler=FlowMatchEulerDiscreteScheduler()) for _ in range(2)
        ]
        results: list[object] = [None, None]
        barrier = threading.Barrier(2)

        def worker(i: int) -> None:
            try:
                barrier.wait()
                results[i] = run_sd3(requests[i])
            except BaseException as e:
                results[i] = e

        threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    for result in results:
        assert isinstance(result, np.ndarray), result
        np.testing.assert_array_equal(result, want)


# -- 7. deep copies and pickles come out unattached ----------------------------------------
def test_deepcopy_of_an_attached_model_is_unattached_and_computes_with_its_own_weights(
    toy, registry
):
    reference = copy.deepcopy(toy)
    with blockdance.attach(toy, "blockdance", N=2, registry=registry, num_steps=T):
        clone = copy.deepcopy(toy)
    for module in [clone, *clone.blocks]:
        assert "forward" not in vars(module) and "__getstate__" not in vars(module)
    assert not hasattr(clone, "_blockdance_runtime")
    with torch.no_grad():
        clone.head.weight.mul_(2)
        reference.head.weight.mul_(2)
    assert all(torch.equal(a, b) for a, b in zip(run(clone, x0(), 3), run(reference, x0(), 3)))
    with blockdance.attach(clone, "none", registry=registry):  # attachable on its own
        pass


def test_torch_save_of_an_attached_model_saves_it_unattached(toy, registry):
    want = run(copy.deepcopy(toy), x0(), 3)
    buffer = io.BytesIO()
    with blockdance.attach(toy, "blockdance", N=2, registry=registry, num_steps=T):
        torch.save(toy, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert isinstance(loaded, ToyDenoiser) and "forward" not in vars(loaded.blocks[0])
    assert all(torch.equal(a, b) for a, b in zip(run(loaded, x0(), 3), want))


def test_pickled_pipeline_names_its_own_class():
    pipe = sd3_pipe()
    cls = type(pipe)
    with blockdance.attach(pipe, "none"):
        assert type(pipe) is not cls and isinstance(pipe, cls)
        clone = copy.deepcopy(pipe)
    assert type(clone) is cls and type(pipe) is cls


# -- 8. removal undoes only blockdance's own wrappers ----------------------------------------
class CountingHook(ModelHook):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def pre_forward(self, module, *args, **kwargs):
        self.calls += 1
        return args, kwargs


def test_a_diffusers_hook_registered_after_attach_keeps_running_after_remove(toy, registry):
    block = toy.blocks[0]
    handle = blockdance.attach(toy, "blockdance", N=2, registry=registry, num_steps=T)
    hook = CountingHook()
    HookRegistry.check_if_exists_or_initialize(block).register_hook(hook, "count")
    run(toy, x0(), T)
    assert hook.calls == T  # the hook wraps blockdance's wrapper: it sees every call
    assert handle.stats.reused_pairs()
    handle.remove()
    run(toy, x0(), 2)
    assert hook.calls == T + 2  # before: removal took the later hook off too


def test_a_hook_removed_while_attached_does_not_come_back(toy, registry):
    block = toy.blocks[0]
    hook = CountingHook()
    HookRegistry.check_if_exists_or_initialize(block).register_hook(hook, "count")
    handle = blockdance.attach(toy, "none", registry=registry)
    HookRegistry.check_if_exists_or_initialize(block).remove_hook("count")
    with pytest.raises(blockdance.GenerationError, match="attach again"):
        run(toy, x0(), 1)  # block 0 lost blockdance's wrapper: refused, not run unseen
    handle.remove()
    run(toy, x0(), 2)
    assert hook.calls == 0  # before: remove() restored the removed hook


def test_two_handles_on_one_scheduler_remove_independently(registry):
    scheduler = FlowMatchEulerDiscreteScheduler()
    torch.manual_seed(0)
    a, b = ToyDenoiser().eval(), ToyDenoiser().eval()
    ha = blockdance.attach(a, "blockdance", N=2, registry=registry, scheduler=scheduler)
    hb = blockdance.attach(b, "blockdance", N=2, registry=registry, scheduler=scheduler)
    ha.remove()  # before: this disabled b's tracking of the shared scheduler
    scheduler.set_timesteps(T)
    x = x0()
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(b(x, t.expand(2)), t, x).prev_sample
    assert hb.stats.step_source == "scheduler"
    assert hb.stats.steps_seen == T and reused_steps(hb.stats) == window_reuse_steps(T)
    hb.remove()
    assert "step" not in vars(scheduler) and "set_timesteps" not in vars(scheduler)


# -- 9. torch.compile: decisions stay outside the compiled graphs --------------------------
class GraphCounter:
    """A torch.compile backend that counts graphs and runs of graphs holding a block."""

    def __init__(self) -> None:
        self.graphs = 0
        self.block_runs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.graphs += 1
        has_block = any("tanh" in str(node.target) for node in gm.graph.nodes)

        def run_graph(*args):
            self.block_runs += has_block
            return gm.forward(*args)

        return run_graph


@pytest.fixture
def eager_want(toy, registry) -> Iterator[list[torch.Tensor]]:
    """The reference for a compiled toy: an eager copy's outputs under BlockDance N=2.

    dynamo is reset before the test and after it, whatever its outcome.
    """
    torch._dynamo.reset()
    eager = copy.deepcopy(toy)
    with blockdance.attach(eager, "blockdance", N=2, registry=registry, num_steps=T):
        want = run(eager, x0(), T)
    yield want
    torch._dynamo.reset()


@pytest.mark.parametrize("how", ["blocks", "model", "model compiled before attach"])
def test_compiled_blocks_run_compiled_at_every_computed_call(toy, registry, how, eager_want):
    backend = GraphCounter()
    target: torch.nn.Module = toy
    if how == "model compiled before attach":
        target = torch.compile(toy, backend=backend)
        run(target, x0(), 2)
        backend.block_runs = 0
    with blockdance.attach(target, "blockdance", N=2, registry=registry, num_steps=T) as h:
        if how == "blocks":
            for block in toy.blocks:
                block.compile(backend=backend)
        elif how == "model":
            target = torch.compile(toy, backend=backend)
        got = run(target, x0(), T)
    for a, b in zip(got, eager_want):
        torch.testing.assert_close(a, b)
    assert h.stats.reused_blocks > 0
    # before: dynamo guarded on the runtime's step and recompiled until it fell back to eager
    assert backend.block_runs == h.stats.computed_blocks
    assert backend.graphs <= 3


# -- 10. bad step counts -------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "10"])
def test_bad_num_steps_are_refused_where_given(toy, registry, bad):
    with pytest.raises(blockdance.InvalidInputError, match=r"num_steps=\.\.\.\) must be"):
        blockdance.attach(toy, "blockdance", registry=registry, num_steps=bad)
    with blockdance.attach(toy, "blockdance", registry=registry) as handle:
        with pytest.raises(blockdance.InvalidInputError, match=repr(bad).replace(".", r"\.")):
            with handle.generation(num_steps=bad):
                pass


@pytest.mark.parametrize("when", ["before attach", "after attach"])
def test_blocks_compiled_with_fullgraph_skip_their_compiled_call_when_reused(
    toy, registry, when, eager_want
):
    """diffusers' compile_repeated_blocks(fullgraph=True): every call must run compiled code."""
    backend = GraphCounter()

    def compile_blocks() -> None:
        for block in toy.blocks:
            block.compile(backend=backend, fullgraph=True)

    if when == "before attach":
        compile_blocks()
    with blockdance.attach(toy, "blockdance", N=2, registry=registry, num_steps=T) as h:
        if when == "after attach":
            compile_blocks()
        got = run(toy, x0(), T)  # before: "fullgraph=True found no compiled frames"
    for a, b in zip(got, eager_want):
        torch.testing.assert_close(a, b)
    assert backend.block_runs == h.stats.computed_blocks and h.stats.reused_blocks > 0
    assert backend.graphs == 1
    assert not any(
        hasattr(block._compiled_call_impl, "_blockdance_patch") for block in toy.blocks
    )  # removal put the compiled calls back


# -- the pipeline's scheduler, as followed ---------------------------------------------------
def test_a_schedule_set_before_attach_counts_for_a_bare_loop(registry):
    scheduler = FlowMatchEulerDiscreteScheduler()
    scheduler.set_timesteps(T)  # before attach
    torch.manual_seed(0)
    model = ToyDenoiser().eval()
    with blockdance.attach(model, "blockdance", N=2, registry=registry, scheduler=scheduler) as h:
        x = x0()
        with torch.no_grad():
            for t in scheduler.timesteps:
                x = scheduler.step(model(x, t.expand(2)), t, x).prev_sample
    assert h.stats.step_source == "scheduler" and h.stats.steps_seen == T
    assert reused_steps(h.stats) == window_reuse_steps(T)


def test_a_pipeline_that_never_steps_its_scheduler_is_warned_about(toy, registry):
    class NoStepPipeline:
        def __init__(self, transformer) -> None:
            self.transformer = transformer
            self.scheduler = FlowMatchEulerDiscreteScheduler()

        def __call__(self) -> None:
            self.scheduler.set_timesteps(4)
            with torch.no_grad():
                for t in self.scheduler.timesteps:
                    self.transformer(x0(), t.expand(2))  # a sampler of its own: no step()

    pipe = NoStepPipeline(toy)
    with blockdance.attach(pipe, "none", registry=registry):
        with pytest.warns(RuntimeWarning, match="never called FlowMatchEulerDiscreteScheduler"):
            pipe()


def test_a_pipeline_call_that_raises_gives_its_own_error_and_no_warning(toy, registry):
    """An aborted call (e.g. a peer's hook failing on the first model call) is not a pipeline
    that never steps: the caller sees the error, not a RuntimeWarning in front of it."""

    class FailingPipeline:
        def __init__(self, transformer) -> None:
            self.transformer = transformer
            self.scheduler = FlowMatchEulerDiscreteScheduler()

        def __call__(self) -> None:
            self.scheduler.set_timesteps(4)
            with torch.no_grad():
                self.transformer(x0(), self.scheduler.timesteps[0].expand(2))
            raise KeyError("the sampler's own error")

    pipe = FailingPipeline(toy)
    with blockdance.attach(pipe, "none", registry=registry), warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(KeyError, match="own error"):
            pipe()


# -- 11. a trajectory resumed part-way knows where it is in the schedule -------------------------
class _MaskConfig(StepMaskConfig):
    kind: Literal["test-mask"] = "test-mask"


class _Mask(StepMaskPolicy[_MaskConfig]):
    """From step ρ on, sample i caches every (i + 2)-th step (a per-sample schedule)."""

    config_class: ClassVar[type[PolicyConfig]] = _MaskConfig

    def choose(
        self, latent: torch.Tensor, conditions: torch.Tensor | None, ctx: StepContext
    ) -> tuple[torch.Tensor, None]:
        assert self.info is not None and self.info.num_steps is not None
        remaining = self.info.num_steps + self.offset - self.first_step
        cols = torch.arange(remaining)
        return torch.stack([cols % (i + 2) == 0 for i in range(latent.shape[0])]), None


def test_a_resumed_trajectory_equals_the_tail_of_the_whole_one(toy, registry):
    """Reference: the whole 20-step trajectory; resumed from its state at step k with
    ``generation(num_steps=20 - k, schedule_offset=k)``, the tail is the same."""
    k = 8  # = round(0.4 * 20): the policy decides at the first resumed call
    x = x0(batch=3)
    policy = _Mask(_MaskConfig(boundary=TOY_BOUNDARY))
    with blockdance.attach(toy, policy, registry=registry, num_steps=T, guidance_batch=1) as h:
        with h.generation(num_steps=T):
            states = [x]
            for out in run(toy, x, T):
                states.append(states[-1] - 0.05 * out)
    whole = [list(s) for s in policy.reuse_steps_per_sample]
    resumed = _Mask(_MaskConfig(boundary=TOY_BOUNDARY))
    with blockdance.attach(toy, resumed, registry=registry, guidance_batch=1) as h:
        with h.generation(num_steps=T - k, schedule_offset=k):
            y = states[k]
            with torch.no_grad():
                for t in timesteps(T)[k:]:
                    y = y - 0.05 * toy(y, torch.full((3,), t))
        info = resumed.info
    assert info is not None and (info.num_steps, info.schedule_offset) == (T - k, k)
    torch.testing.assert_close(y, states[-1], rtol=1e-5, atol=1e-6)
    assert resumed.reuse_steps_per_sample == whole
    assert whole[0] == [s for s in range(k, T) if (s - k) % 2]  # written out from the rule


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_a_bad_schedule_offset_is_refused(toy, registry, bad):
    with blockdance.attach(toy, "blockdance", registry=registry) as handle:
        with pytest.raises(blockdance.InvalidInputError, match=r"schedule_offset=\.\.\.\) must"):
            with handle.generation(num_steps=5, schedule_offset=bad):
                pass


def test_compiled_blocks_run_compiled_when_samples_decide_apart(toy, registry):
    """Per-sample decisions run the structural blocks on the computing rows only: batches of
    1..4 rows. Each such run must still be a compiled one, and the outputs the eager ones."""
    rows = ({2, 3, 5, 9}, set(), {1, 2, 3, 4, 5, 11}, {3, 12})
    policy = _RowSteps(_RowStepsConfig(reuse=tuple(frozenset(r) for r in rows)))
    torch._dynamo.reset()
    try:
        eager = copy.deepcopy(toy)
        with blockdance.attach(eager, policy, registry=registry, num_steps=T):
            want = run(eager, x0(batch=4), T)
        backend = GraphCounter()
        for block in toy.blocks:
            block.compile(backend=backend)
        with blockdance.attach(toy, policy, registry=registry, num_steps=T):
            got = run(toy, x0(batch=4), T)
    finally:
        torch._dynamo.reset()
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    # a block run happens wherever at least one row computes (written out from the sets)
    runs = sum(TOY_BOUNDARY + 1 if not all(s in r for r in rows) else 0 for s in range(T)) + T * (
        len(toy.blocks) - TOY_BOUNDARY - 1
    )
    assert backend.block_runs == runs
    # four batch sizes occur (1..4 rows); dynamo marks the batch dynamic rather than compiling
    # one graph per size (measured: 3 graphs with torch 2.14)
    assert backend.graphs <= 3


class _RowStepsConfig(PolicyConfig):
    kind: Literal["test-row-steps"] = "test-row-steps"
    reuse: tuple[frozenset[int], ...]


class _RowSteps(blockdance.Policy[_RowStepsConfig]):
    """Row ``i`` reuses blocks ``0..TOY_BOUNDARY`` at the steps ``reuse[i]``."""

    config_class: ClassVar[type[PolicyConfig]] = _RowStepsConfig

    def boundaries(self) -> frozenset[int]:
        return frozenset({TOY_BOUNDARY})

    def decide(self, ctx: StepContext, slot: int) -> blockdance.Decision | torch.Tensor:
        if slot > TOY_BOUNDARY:
            return blockdance.Decision.COMPUTE
        return torch.tensor([ctx.step in steps for steps in self.config.reuse])
