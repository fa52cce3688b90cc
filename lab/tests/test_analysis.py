"""Analysis: the trace recorder's numbers, x̂₀, bounded memory, the CLI and calibration."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)
from torch import nn

import blockdance
from blockdance.cli import main
from blockdance.errors import InvalidInputError
from blockdance.policies.blockdance import window_steps
from blockdance_lab.analysis import (
    CalibrationError,
    Trace,
    TraceRecorder,
    UnsupportedSchedulerError,
    calibrate,
    evaluate_config,
    predicted_x0,
    record_trace,
    settle_step,
)
from blockdance_lab.analysis.validate import plan_validation, read_candidates, validate
from blockdance_lab.workload import GenerateRequest, Workload
from toymodel import TOY_SPEC, ToyDenoiser, registry_of, timesteps


# -- a model whose block outputs are known -------------------------------------------------------
class ConstBlock(nn.Module):
    """Returns the same tensor at every call."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("value", value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value.expand_as(x).clone()


class ScaleBlock(nn.Module):
    """Returns ``base * factor ** k`` at the k-th step (k read from the timestep)."""

    def __init__(self, base: torch.Tensor, factor: float, ts: list[int]) -> None:
        super().__init__()
        self.register_buffer("base", base)
        self.factor = factor
        self.index = {t: k for k, t in enumerate(ts)}
        self.t = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.base * self.factor ** self.index[self.t]).expand_as(x).clone()


class SwapBlock(nn.Module):
    """Alternates between two orthogonal vectors of equal norm: cosine 0, relative L2 √2."""

    def __init__(self, dim: int, ts: list[int]) -> None:
        super().__init__()
        self.register_buffer("eye", torch.eye(dim))
        self.index = {t: k for k, t in enumerate(ts)}
        self.t = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.eye[self.index[self.t] % 2].expand_as(x).clone()


class InputBlock(nn.Module):
    """Returns its input (so each branch's own input shows through)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.0


class KnownModel(nn.Module):
    """Blocks: identity (sees the model input), constant, ×1.5 and ×0.5 per step, swap."""

    def __init__(self, ts: list[int], dim: int = 8) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.blocks = nn.ModuleList(
            [
                InputBlock(),
                ConstBlock(torch.randn(dim, generator=g)),
                ScaleBlock(torch.randn(dim, generator=g), 1.5, ts),
                ScaleBlock(torch.randn(dim, generator=g), 0.5, ts),
                SwapBlock(dim, ts),
            ]
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        step_t = int(t.reshape(-1)[0])
        out = x
        for block in self.blocks:
            block.t = step_t
            out = block(out)
        return out


#: The toy's spec (one block list, ``x`` in and out, timestep ``t``) for the known model.
KNOWN_SPEC = dataclasses.replace(
    TOY_SPEC,
    name="known",
    description="blocks with known outputs (lab/tests/test_analysis.py)",
    matches=lambda m: isinstance(m, KnownModel),
)


@pytest.fixture
def analysis_registry() -> blockdance.Registry:
    return registry_of(TOY_SPEC, KNOWN_SPEC)


def run_known(model: nn.Module, ts: list[int], branches: int = 1) -> None:
    """One call per step and branch; branch b feeds the input ``b + 1``."""
    with torch.no_grad():
        for t in ts:
            for b in range(branches):
                model(torch.full((2, 3, 8), float(b + 1)), torch.full((2,), t))


T = 6


def test_recorder_numbers_on_known_blocks(analysis_registry):
    ts = timesteps(T)
    model = KnownModel(ts)
    recorder = TraceRecorder()
    with blockdance.attach(model, "none", registry=analysis_registry, num_steps=T) as handle:
        handle.add_observer(recorder)
        run_known(model, ts, branches=2)
    trace = recorder.result()
    assert trace.rel_l2.shape == (2, T, 5) and trace.x0_ssim.shape == (2, T)
    assert np.isnan(trace.rel_l2[:, 0]).all() and np.isnan(trace.cosine[:, 0]).all()
    later = slice(1, None)
    # branches are compared with themselves: the identity block sees each branch's fixed input
    np.testing.assert_allclose(trace.rel_l2[:, later, 0], 0.0, atol=1e-7)
    np.testing.assert_allclose(trace.rel_l2[:, later, 1], 0.0, atol=1e-7)  # constant
    np.testing.assert_allclose(trace.cosine[:, later, :2], 1.0, atol=1e-6)
    np.testing.assert_allclose(trace.rel_l2[:, later, 2], 0.5, rtol=1e-5)  # ×1.5 per step
    np.testing.assert_allclose(trace.rel_l2[:, later, 3], 0.5, rtol=1e-5)  # ×0.5 per step
    np.testing.assert_allclose(trace.cosine[:, later, 2:4], 1.0, atol=1e-6)
    np.testing.assert_allclose(trace.rel_l2[:, later, 4], math.sqrt(2), rtol=1e-5)  # swap
    np.testing.assert_allclose(trace.cosine[:, later, 4], 0.0, atol=1e-6)
    assert trace.timesteps.tolist() == [float(t) for t in ts]
    assert trace.block_names == [f"blocks.{i}" for i in range(5)]
    assert trace.architecture == "known"


def test_reused_blocks_leave_gaps_not_wrong_numbers(toy, registry):
    """Under a reuse policy, pairs that are not adjacent computes are NaN."""
    recorder = TraceRecorder()
    with blockdance.attach(toy, "schedule", reuse={3: "0-2"}, registry=registry) as handle:
        handle.add_observer(recorder)
        with handle.generation(num_steps=T):
            from toymodel import run

            run(toy, torch.randn(2, 4, 16), T)
    rel = recorder.result().rel_l2[0]
    assert np.isnan(rel[3, :3]).all() and np.isnan(rel[4, :3]).all()  # reused, then no pair
    assert np.isfinite(rel[3, 3:]).all() and np.isfinite(rel[5, :]).all()


def test_recorder_holds_only_the_previous_step(toy, registry):
    steps, n, d = 12, 2, 16
    recorder = TraceRecorder()
    one_step = len(toy.blocks) * n * 4 * d * 4  # blocks × (2, 4, 16) float32
    seen: list[tuple[set[int], int, int]] = []

    class Probe(blockdance.Observer):
        def on_model(self, ctx, args, kwargs, output):
            held = recorder.held_states
            seen.append((set(held.values()), len(held), recorder.held_bytes))

    with blockdance.attach(toy, "none", registry=registry, num_steps=steps) as handle:
        handle.add_observer(recorder)
        handle.add_observer(Probe())
        from toymodel import run

        run(toy, torch.randn(n, 4, d), steps)
    assert len(seen) == steps
    for step, (held_steps, count, nbytes) in enumerate(seen):
        assert held_steps == {step}  # after a step, only that step's outputs are held
        assert count == len(toy.blocks)
        assert nbytes == one_step
    assert recorder.peak_held_bytes == one_step
    recorder.free()
    assert recorder.held_bytes == 0
    assert np.isfinite(recorder.result().rel_l2[0, 1:]).all()


# -- x̂₀ ------------------------------------------------------------------------------------------
def clean_and_noise(shape=(2, 3, 8, 8)):
    g = torch.Generator().manual_seed(3)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def test_x0_ddim_epsilon_matches_direct_formula_and_scheduler():
    sched = DDIMScheduler(clip_sample=False)
    sched.set_timesteps(10)
    x0, eps = clean_and_noise()
    t = int(sched.timesteps[3])
    a = sched.alphas_cumprod[t]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    got = predicted_x0(sched, x_t, eps, t)
    torch.testing.assert_close(got, (x_t - (1 - a).sqrt() * eps) / a.sqrt())
    torch.testing.assert_close(got, x0, atol=1e-4, rtol=1e-4)
    step = sched.step(eps, sched.timesteps[3], x_t)
    torch.testing.assert_close(got, step.pred_original_sample, atol=1e-5, rtol=1e-5)
    # learned sigma: 2C channels, the first C are the prediction
    both = torch.cat([eps, torch.randn_like(eps)], dim=1)
    torch.testing.assert_close(predicted_x0(sched, x_t, both, torch.tensor([t, t])), got)


def test_x0_v_prediction():
    sched = DDIMScheduler(clip_sample=False, prediction_type="v_prediction")
    sched.set_timesteps(10)
    x0, eps = clean_and_noise()
    t = int(sched.timesteps[5])
    a = sched.alphas_cumprod[t]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = a.sqrt() * eps - (1 - a).sqrt() * x0
    got = predicted_x0(sched, x_t, v, t)
    torch.testing.assert_close(got, x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got, sched.step(v, t, x_t).pred_original_sample)


def test_x0_flow_matching():
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(10)
    x0, eps = clean_and_noise()
    i = 4
    t, sigma = float(sched.timesteps[i]), float(sched.sigmas[i])
    x_t = (1 - sigma) * x0 + sigma * eps
    v = eps - x0
    got = predicted_x0(sched, x_t, v, t)
    torch.testing.assert_close(got, x_t - sigma * v)
    torch.testing.assert_close(got, x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(predicted_x0(sched, x_t, (v,), t / 1000), got)  # Flux passes t/1000
    with pytest.raises(ValueError, match="not one of"):
        predicted_x0(sched, x_t, v, 123.456)


def test_x0_unsupported_schedulers_say_so():
    x, out = clean_and_noise()

    class Plain:
        pass

    with pytest.raises(UnsupportedSchedulerError, match="FlowMatchEulerDiscreteScheduler"):
        predicted_x0(Plain(), x, out, 10)
    sched = DDIMScheduler(prediction_type="epsilon")
    sched.register_to_config(prediction_type="flow")
    with pytest.raises(UnsupportedSchedulerError, match="prediction_type 'flow'"):
        predicted_x0(sched, x, out, 10)
    with pytest.raises(UnsupportedSchedulerError, match="fractional"):
        predicted_x0(DDIMScheduler(), x, out, 10.5)
    with pytest.raises(ValueError, match="does not fit"):
        predicted_x0(DDIMScheduler(), x, out[:, :2], 10)


# -- a tiny pipeline: toy denoiser + DDIM --------------------------------------------------------
@dataclass
class ToyPipe:
    transformer: ToyDenoiser
    scheduler: DDIMScheduler


def toy_generate(pipe: ToyPipe, request: GenerateRequest) -> torch.Tensor:
    pipe.scheduler.set_timesteps(request.num_steps)
    x = torch.stack(
        [torch.randn(4, 16, generator=torch.Generator().manual_seed(s)) for s in request.seeds]
    )
    for t in pipe.scheduler.timesteps:
        eps = pipe.transformer(x, t.repeat(x.shape[0]))
        x = pipe.scheduler.step(eps, t, x).prev_sample
    return x


def toy_pipe() -> ToyPipe:
    torch.manual_seed(0)
    return ToyPipe(ToyDenoiser().eval(), DDIMScheduler(clip_sample=False))


TOY_WORKLOAD = Workload(
    name="toy-ddim", description="toy denoiser with DDIM", build=toy_pipe, generate=toy_generate
)


def test_record_trace_on_a_workload_measures_x0(analysis_registry):
    trace = record_trace(TOY_WORKLOAD, seeds=[0, 1], num_steps=10, registry=analysis_registry)
    assert trace.rel_l2.shape == (1, 10, 8)
    assert np.isfinite(trace.rel_l2[0, 1:]).all() and np.isfinite(trace.cosine[0, 1:]).all()
    curve = trace.x0_curve()
    assert np.isnan(curve[0]) and np.isfinite(curve[1:]).all()
    assert (curve[1:] <= 1.0 + 1e-6).all()
    assert trace.meta["workload"] == "toy-ddim" and trace.meta["seeds"] == [0, 1]
    assert trace.meta["scheduler"] == "DDIMScheduler"
    # x̂₀ numbers agree with a direct computation on the same run
    pipe = toy_pipe()
    x0s: list[torch.Tensor] = []

    class Grab(blockdance.Observer):
        def on_model(self, ctx, args, kwargs, output):
            x0s.append(predicted_x0(pipe.scheduler, args[0], output, ctx.timestep))

    with blockdance.attach(pipe, "none", registry=analysis_registry) as handle:
        handle.add_observer(Grab())
        with torch.no_grad():
            toy_generate(pipe, GenerateRequest((0, 1), 10))
    from blockdance_lab.evaluation.metrics import ssim

    for s in range(1, 10):
        a, b = x0s[s].unsqueeze(1), x0s[s - 1].unsqueeze(1)
        rng = float(torch.maximum(a.max(), b.max()) - torch.minimum(a.min(), b.min()))
        assert curve[s] == pytest.approx(float(ssim(a, b, data_range=rng).mean()), abs=1e-6)


def test_x_input_is_configurable(analysis_registry):
    want = record_trace(TOY_WORKLOAD, num_steps=5, registry=analysis_registry).x0_ssim
    for where in (0, lambda args, kwargs: args[0]):
        got = record_trace(TOY_WORKLOAD, num_steps=5, registry=analysis_registry, x_input=where)
        np.testing.assert_array_equal(got.x0_ssim, want)
    with pytest.raises(ValueError, match="cannot find the model's input sample x_t at 'sample'"):
        record_trace(TOY_WORKLOAD, num_steps=5, registry=analysis_registry, x_input="sample")
    off = record_trace(TOY_WORKLOAD, num_steps=5, registry=analysis_registry, x0=False)
    assert np.isnan(off.x0_ssim).all() and "scheduler" not in off.meta


def test_record_trace_on_a_bare_model_needs_generate(toy, registry):
    with pytest.raises(TypeError, match="generate="):
        record_trace(toy, num_steps=4)
    from toymodel import run

    trace = record_trace(
        toy, num_steps=5, generate=lambda m, r: run(m, torch.randn(1, 4, 16), 5), registry=registry
    )
    assert trace.rel_l2.shape == (1, 5, 8) and np.isnan(trace.x0_ssim).all()


def test_trace_files_round_trip(analysis_registry, tmp_path):
    trace = record_trace(TOY_WORKLOAD, seeds=[0], num_steps=6, registry=analysis_registry)
    back = Trace.from_json(trace.to_json(tmp_path / "t.json"))
    back2 = Trace.from_json(tmp_path / "t.json")
    for t in (back, back2):
        np.testing.assert_array_equal(t.rel_l2, trace.rel_l2)  # NaN == NaN here
        np.testing.assert_array_equal(t.x0_ssim, trace.x0_ssim)
        assert t.block_names == trace.block_names and t.default_window == (0.25, 0.95)
    assert "NaN" not in (tmp_path / "t.json").read_text()
    rows = trace.to_csv(tmp_path / "t.csv").read_text().splitlines()
    assert rows[0].split(",")[:4] == ["step", "timestep", "branch", "block"]
    assert len(rows) == 1 + 6 * 8


# -- calibration ---------------------------------------------------------------------------------
def synthetic_trace(steps=20, blocks=8, x0=True) -> Trace:
    """Distances that fall over the steps and grow with depth; x̂₀ settles at step 6."""
    s = np.arange(steps)[:, None]
    b = np.arange(blocks)[None, :]
    dist = (0.02 + 0.5 * np.exp(-s / 3.0)) * (1 + 0.3 * b)
    dist[0] = np.nan
    curve = np.array([np.nan, 0.3, 0.5, 0.7, 0.92, 0.85] + [0.95] * (steps - 6))
    return Trace(
        rel_l2=dist[None],
        cosine=np.ones_like(dist)[None],
        x0_ssim=(curve if x0 else np.full(steps, np.nan))[None],
        timesteps=np.linspace(999, 0, steps),
        block_names=[f"blocks.{i}" for i in range(blocks)],
        architecture="toy",
        default_boundary=5,
        default_window=(0.25, 0.95),
    )


def all_candidates(trace, n, first, end=0.95):
    """Brute force: every window [start, stop) inside the bounds and every boundary."""
    steps = trace.num_steps
    last = math.ceil(end * steps - 1e-9)
    out = [
        evaluate_config(trace, n, b, (start / steps, stop / steps))
        for start in range(first, last)
        for stop in range(start + 1, last + 1)
        for b in range(trace.num_blocks - 1)
    ]
    return [c for c in out if c.reuse_steps]


def test_settle_step():
    assert settle_step(synthetic_trace(), 0.9) == 6
    assert settle_step(synthetic_trace(), 0.8) == 4
    assert settle_step(synthetic_trace(), 0.99) is None


def test_settle_step_ignores_steps_after_the_latest_window_end():
    """A sharp last step (strong guidance) does not hide a structure settled long before."""
    trace = synthetic_trace()
    trace.x0_ssim[0, -1] = 0.5  # step 19 of 20; the latest window stop at 95% is 19
    assert settle_step(trace, 0.9) is None
    assert settle_step(trace, 0.9, end=0.95) == 6
    assert calibrate(trace, n=2, ssim_threshold=0.9).settle_step == 6
    assert settle_step(synthetic_trace(x0=False)) is None


def test_evaluate_config_matches_the_runtime_schedule():
    trace = synthetic_trace()
    c = evaluate_config(trace, 3, 4, (0.3, 0.95))
    steps = window_steps((0.3, 0.95), 20)
    assert c.reuse_steps == tuple(s for s in steps if (s - steps.start) % 3)
    d = trace.distance()[:, 4]
    want = [d[r] if (r - steps.start) % 3 == 1 else d[r] + d[r - 1] for r in c.reuse_steps]
    assert c.distance == pytest.approx(np.mean(want)) and c.max_distance == pytest.approx(max(want))
    assert c.saving == pytest.approx(len(c.reuse_steps) * 5 / (20 * 8))


@pytest.mark.parametrize("n", [2, 3])
def test_calibrate_for_a_target_similarity(n):
    trace = synthetic_trace()
    tau = 0.05
    result = calibrate(trace, n=n, target_similarity=tau)
    chosen = result.chosen
    assert result.settle_step == 6 and window_steps(chosen.window, 20).start >= 6
    assert window_steps(chosen.window, 20).stop <= 19  # 95% of 20 steps
    assert chosen.distance <= tau
    feasible = [c for c in all_candidates(trace, n, 6) if c.distance <= tau]
    assert chosen.saving == pytest.approx(max(c.saving for c in feasible))
    again = evaluate_config(trace, n, chosen.boundary, chosen.window)
    assert again == chosen
    with pytest.raises(CalibrationError, match="smallest reachable"):
        calibrate(trace, target_similarity=1e-4)


def test_calibrate_for_a_target_saving():
    trace = synthetic_trace()
    result = calibrate(trace, target_saving=0.25)
    chosen = result.chosen
    assert chosen.saving >= 0.25 and window_steps(chosen.window, 20).start >= 6
    assert chosen.window[1] <= 0.95  # a window to the latest end is written with that end
    feasible = [c for c in all_candidates(trace, 2, 6) if c.saving >= 0.25]
    assert chosen.distance == pytest.approx(min(c.distance for c in feasible))
    default = result.default
    assert default is not None and default.boundary == 5 and default.window == (0.25, 0.95)
    # no target: as much saving as the default configuration, with less distance
    same = calibrate(trace)
    assert same.chosen.saving >= default.saving and same.chosen.distance <= default.distance
    # out of reach after the settle step: earlier starts are allowed, and noted
    early = calibrate(trace, target_saving=0.3)
    assert early.chosen.window[0] < 6 / 20 and "earlier starts" in " ".join(early.notes)
    with pytest.raises(CalibrationError, match="the most is"):
        calibrate(trace, target_saving=0.9)


def test_calibrate_stops_the_window_where_the_distance_rises_again():
    trace = synthetic_trace()
    trace.rel_l2[0, 14:] *= 20  # the last steps move a lot: reuse there is expensive
    chosen = calibrate(trace, target_similarity=0.1).chosen
    assert window_steps(chosen.window, 20).stop <= 14
    assert all(r < 14 for r in chosen.reuse_steps)


def test_calibrate_without_x0_starts_at_the_default_window():
    result = calibrate(synthetic_trace(x0=False), target_similarity=0.2)
    assert result.settle_step is None and result.chosen.window[0] >= 0.25
    assert "no x̂₀" in result.notes[0]


def test_calibrate_shortlists_the_best_window_of_each_boundary():
    trace = synthetic_trace()
    result = calibrate(trace, target_saving=0.1, shortlist=4)
    short = result.shortlist
    assert len(short) == 4 and short[0] == result.chosen
    assert len({c.boundary for c in short}) == 4
    assert [c.distance for c in short] == sorted(c.distance for c in short)
    for c in short:  # each is the best window its boundary has
        same_b = [x for x in all_candidates(trace, 2, 6) if x.boundary == c.boundary]
        assert c.saving >= 0.1
        assert c.distance == pytest.approx(min(x.distance for x in same_b if x.saving >= 0.1))
    assert calibrate(trace, target_saving=0.1).shortlist == ()


def toy_images(pipe: ToyPipe, request: GenerateRequest) -> torch.Tensor:
    return toy_generate(pipe, request)[:, None]  # (N, 1, 4, 16): one-channel pictures


def test_validate_chooses_the_configuration_closest_to_the_full_model(analysis_registry):
    workload = dataclasses.replace(TOY_WORKLOAD, generate=toy_images)
    trace = record_trace(workload, seeds=[0, 1], num_steps=20, registry=analysis_registry)
    result = calibrate(trace, target_saving=0.15, ssim_threshold=0.5, shortlist=3)
    checked = validate(result, workload, seeds=[5, 6], registry=analysis_registry)
    measured = dict(checked.measured)
    assert set(result.shortlist) <= set(measured)
    assert result.default is not None and result.default.saving >= 0.15
    assert result.default in measured  # the default competes when it reaches the saving
    assert checked.chosen in measured
    assert measured[checked.chosen] == max(measured.values())
    assert all(c.saving >= 0.15 - 1e-12 for c in measured)
    # the measurement is the SSIM of a real generation under that configuration
    from blockdance_lab.compare import compare_policies
    from blockdance_lab.report import add_consistency_metrics

    runs = compare_policies(
        workload,
        [("none", "none"), ("c", checked.chosen.config)],
        seeds=[5, 6],
        num_steps=20,
        warmup=False,
        registry=analysis_registry,
    )
    add_consistency_metrics(runs)
    assert runs[1].metrics["ssim"] == pytest.approx(measured[checked.chosen])
    assert "validated on 2 seeds" in checked.notes[-1]
    assert "measured SSIM" in checked.summary()
    similar = calibrate(trace, target_similarity=0.5, ssim_threshold=0.5, shortlist=2)
    with pytest.raises(ValueError, match="target saving"):
        validate(similar, workload, registry=analysis_registry)


def _ssim_per_seed(x: torch.Tensor, ref: torch.Tensor) -> list[float]:
    """Mean SSIM of each seed's sample to the reference, data range of the reference."""
    from blockdance_lab.evaluation.metrics import ssim

    data_range = float(ref.max() - ref.min())
    return [float(v) for v in ssim(x.float(), ref.float(), data_range=data_range)]


def _generate(policy: object, seeds: list[int], steps: int, registry):
    """Samples under ``policy`` and the block calls that really ran (counted by wrappers
    installed before the runtime's, on a fresh copy of the toy)."""
    from blockdance.testing import count_block_calls

    pipe = toy_pipe()
    calls = count_block_calls(TOY_SPEC.blocks(pipe.transformer))
    with blockdance.attach(pipe, policy, registry=registry), torch.inference_mode():
        x = toy_images(pipe, GenerateRequest(tuple(seeds), steps))
    return x, sum(calls.values())


def test_validate_measures_any_registered_policy_beside_the_calibration(analysis_registry):
    workload = dataclasses.replace(TOY_WORKLOAD, generate=toy_images)
    trace = record_trace(workload, seeds=[0, 1], num_steps=20, registry=analysis_registry)
    result = calibrate(trace, target_saving=0.15, ssim_threshold=0.5, shortlist=2)
    given = [
        {"kind": "fora", "N": 2},
        {"kind": "deepcache", "interval": 3, "label": "deep"},
        "none",
    ]
    checked = validate(result, workload, seeds=[5, 6], candidates=given, registry=analysis_registry)
    v = checked.validation
    assert v is not None
    labels = [m.label for m in v.measured]
    assert labels[-3:] == ["fora N=2", "deep", "none"]
    assert [m.planned.source for m in v.measured][-3:] == ["given"] * 3
    assert v.measured[-2].planned.policy["kind"] == "deepcache"
    # each number against a generation run here, block calls counted by forward hooks
    base, full_calls = _generate("none", [5, 6], 20, analysis_registry)
    assert full_calls == 20 * 8  # 20 steps x 8 blocks, the seeds in one batch
    for m in v.measured:
        x, calls = _generate(m.planned.policy, [5, 6], 20, analysis_registry)
        assert m.saving == pytest.approx(1 - calls / full_calls), m.label
        per_seed = _ssim_per_seed(x, base)
        assert m.ssim.mean == pytest.approx(sum(per_seed) / 2, abs=1e-6), m.label
        assert m.ssim.low <= m.ssim.mean <= m.ssim.high
        assert m.eligible == (m.saving >= 0.15 - 1e-9)
        if m.planned.candidate is not None:  # the trace's count equals the runtime's
            assert m.saving == pytest.approx(m.planned.candidate.saving)
    none = v.measured[-1]
    assert none.saving == 0 and not none.eligible and "below the target saving" in none.note
    assert none.ssim.mean == pytest.approx(1.0)
    # the choice: highest SSIM among those skipping at least the target, whatever the kind
    eligible = [m for m in v.measured if m.saving >= 0.15 - 1e-9]
    best = max(eligible, key=lambda m: m.ssim.mean)
    assert v.chosen is best and checked.policy_dict() == best.planned.policy
    text = checked.summary()
    assert "validated 6 of 6 configurations asked for" in text
    assert "fora N=2" in text and "deep" in text


def test_validate_says_why_it_measured_fewer_than_asked(analysis_registry):
    workload = dataclasses.replace(TOY_WORKLOAD, generate=toy_images)
    trace = record_trace(workload, seeds=[0, 1], num_steps=20, registry=analysis_registry)
    result = calibrate(trace, target_saving=0.15, ssim_threshold=0.5, shortlist=9)
    # brute force: the boundaries with some window reaching 15% (8 blocks: boundaries 0..6)
    reach = {c.boundary for c in all_candidates(trace, 2, 1) if c.saving >= 0.15 - 1e-12}
    assert len(result.shortlist) == len(reach) < 7
    (why,) = result.shortfall
    assert why.startswith(f"{len(reach)} of the 9 boundaries asked for")
    assert "a model of 8 blocks has 7 boundaries" in why
    missed = sorted(set(range(7)) - reach)
    assert f"no window of boundary {', '.join(map(str, missed))} skips 15.0%" in why
    # the default again under other names, a duplicate, a window that rounds to the
    # default's steps, a boundary the model lacks, a policy below the target
    start, stop = window_steps((0.25, 0.95), 20).start, window_steps((0.25, 0.95), 20).stop
    assert window_steps((0.21, 0.94), 20) == range(start, stop)  # same steps as the default
    given = [
        {"kind": "blockdance", "N": 2},
        {"kind": "blockdance", "N": 2, "boundary": 5, "window": [0.21, 0.94], "label": "near"},
        {"kind": "fora", "N": 2},
        {"kind": "fora", "N": 2, "label": "fora again"},
        {"kind": "blockdance", "N": 2, "boundary": 40, "label": "too deep"},
    ]
    checked = validate(result, workload, seeds=[5], candidates=given, registry=analysis_registry)
    v = checked.validation
    assert v is not None
    assert v.asked == 9 + 1 + 5
    assert [m.label for m in v.measured if m.planned.source == "given"] == ["fora N=2"]
    reasons = dict(v.not_validated)
    assert reasons["shortlist"] == why
    assert "same N, boundary and reuse steps as" in reasons["blockdance N=2"]
    assert "(default)" in reasons["blockdance N=2"] and "(default)" in reasons["near"]
    assert reasons["fora again"] == "same configuration as 'fora N=2', measured once"
    assert (
        "cannot begin on toy-ddim" in reasons["too deep"] and "out of range" in reasons["too deep"]
    )
    assert len(v.measured) + (9 - len(reach)) + 4 == v.asked  # every one accounted for
    text = checked.summary()
    assert "not validated (5):" in text and "too deep: cannot begin" in text
    report = checked.to_dict()["validation"]
    assert report["asked"] == 15 and report["validated"] == len(v.measured)
    assert {r["what"] for r in report["not_validated"]} == set(reasons)
    # a default below the target is left out with its reason; a bad option fails before
    # anything runs
    high = calibrate(trace, target_saving=0.3, ssim_threshold=0.5, shortlist=1)
    assert high.default is not None and high.default.saving < 0.3
    planned, left_out, asked = plan_validation(high, registry=analysis_registry)
    assert [p.source for p in planned] == ["rule"] and asked == 2
    assert "below the target saving 30.0%" in dict(left_out)[_default_label(high)]
    with pytest.raises(InvalidInputError, match="'fora N=0' is not a valid policy"):
        plan_validation(high, candidates=[{"kind": "fora", "N": 0}], registry=analysis_registry)
    with pytest.raises(InvalidInputError, match="unknown policy kind 'nope'"):
        plan_validation(high, candidates=["nope"], registry=analysis_registry)


def _default_label(result) -> str:
    d = result.default
    return f"blockdance N={d.N} boundary {d.boundary}, 25%-95% (default)"


def test_read_candidates_takes_names_objects_policy_files_and_lists(tmp_path):
    policy = tmp_path / "sub" / "mine.json"
    policy.parent.mkdir()
    policy.write_text('{"kind": "fora", "N": 3}')
    listing = tmp_path / "sub" / "list.json"
    listing.write_text('["deepcache", "mine.json", {"kind": "fora", "N": 2, "label": "f2"}]')
    assert read_candidates("fora") == ["fora"]
    assert read_candidates('{"kind": "fora", "N": 2}') == [{"kind": "fora", "N": 2}]
    assert read_candidates(str(policy)) == [str(policy)]
    assert read_candidates(str(listing)) == [
        "deepcache",
        str(policy),  # relative to the list's folder
        {"kind": "fora", "N": 2, "label": "f2"},
    ]
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    with pytest.raises(InvalidInputError, match="item 0 is int"):
        read_candidates(str(bad))


def test_validation_plot_shows_every_measured_configuration_without_overlap(analysis_registry):
    from matplotlib.text import Text

    from blockdance_lab.analysis.plots import label_boxes, validation_figure

    workload = dataclasses.replace(TOY_WORKLOAD, generate=toy_images)
    trace = record_trace(workload, seeds=[0, 1], num_steps=20, registry=analysis_registry)
    result = calibrate(trace, target_saving=0.15, ssim_threshold=0.5, shortlist=5)
    checked = validate(result, workload, seeds=[5], candidates=["fora"], registry=analysis_registry)
    v = checked.validation
    fig, annotations = validation_figure(checked, "toy")
    ax = fig.axes[0]
    assert "ideal saving" in ax.get_xlabel() and "SSIM" in ax.get_ylabel()
    assert len(annotations) == len(v.measured)
    # each label sits at its configuration's (ideal saving, SSIM)
    for ann, m in zip(annotations, v.measured):
        assert ann.xy == pytest.approx((m.saving, m.ssim.mean))
    assert annotations[-1].get_text() == "fora"
    fig.canvas.draw()  # where the labels really are once drawn
    renderer = fig.canvas.get_renderer()
    boxes = [Text.get_window_extent(a, renderer) for a in annotations]
    measured = [b.bounds for b in label_boxes(annotations, renderer)]
    np.testing.assert_allclose([b.bounds for b in boxes], measured)  # as the placer saw them
    for i, a in enumerate(boxes):
        for b in boxes[:i]:
            assert not (a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1)
    assert any(line.get_xdata()[0] == pytest.approx(0.15) for line in ax.get_lines())


# -- command line --------------------------------------------------------------------------------
def test_analyze_cli_writes_pictures_and_numbers(tmp_path, capsys):
    out = tmp_path / "an"
    args = ["analyze", "--workload", "dit-s2", "--seeds", "1", "--steps", "5", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "x̂₀ SSIM" in text and "blocks that change least" in text
    for name in ("distance_surface.png", "distance_heatmap.png", "x0_ssim.png"):
        assert (out / name).stat().st_size > 5000, name
    trace = Trace.from_json(out / "trace.json")
    assert trace.rel_l2.shape == (1, 5, 12) and trace.meta["workload"] == "dit-s2"
    assert np.isfinite(trace.x0_ssim[0, 1:]).all()
    assert len((out / "trace.csv").read_text().splitlines()) == 1 + 5 * 12


def test_calibrate_cli_writes_a_config_attach_takes(analysis_registry, tmp_path, capsys):
    trace = record_trace(TOY_WORKLOAD, seeds=[0, 1], num_steps=20, registry=analysis_registry)
    trace.to_json(tmp_path / "trace.json")
    policy = tmp_path / "policy.json"
    code = main(
        [
            "calibrate",
            "--trace",
            str(tmp_path / "trace.json"),
            "--target-saving",
            "0.2",
            "--ssim-threshold",
            "0.5",
            "--out",
            str(policy),
            "--report",
            str(tmp_path / "report.json"),
        ]
    )
    assert code == 0
    assert "proposed: N=2" in capsys.readouterr().out
    config = json.loads(policy.read_text())
    assert set(config) == {"kind", "N", "boundary", "window"} and config["kind"] == "blockdance"
    report = json.loads((tmp_path / "report.json").read_text())
    chosen = evaluate_config(trace, config["N"], config["boundary"], tuple(config["window"]))
    assert chosen.saving >= 0.2
    assert chosen.distance == pytest.approx(report["chosen"]["distance"])
    # attach takes the file as-is, and the runtime skips what calibration counted
    pipe = toy_pipe()
    with blockdance.attach(pipe, str(policy), registry=analysis_registry) as handle:
        toy_generate(pipe, GenerateRequest((0,), 20))
    assert handle.stats.saved_fraction == pytest.approx(chosen.saving)
    assert {s for s, _ in handle.stats.reused_pairs()} == set(chosen.reuse_steps)

    # the same with a target similarity
    code = main(["calibrate", "--trace", str(tmp_path / "trace.json"), "--target-similarity",
                 "0.5", "--ssim-threshold", "0.5", "--out", str(policy)])  # fmt: skip
    assert code == 0
    config = json.loads(policy.read_text())
    got = evaluate_config(trace, config["N"], config["boundary"], tuple(config["window"]))
    assert got.distance <= 0.5
    assert blockdance.load_policy_config(policy).model_dump(mode="json") == config


def test_calibrate_cli_validates_on_generations(tmp_path, capsys):
    policy, report = tmp_path / "policy.json", tmp_path / "report.json"
    listing = tmp_path / "more.json"
    listing.write_text('["deepcache", {"kind": "fora", "N": 2, "label": "fora twice"}]')
    args = ["calibrate", "--workload", "dit-s2", "--seeds", "1", "--steps", "8", "--quiet"]
    code = main([*args, "--validate", "2", "--validate-seeds", "1", "--ssim-threshold", "0.0",
                 "--candidate", '{"kind": "fora", "N": 2}', "--candidate", str(listing),
                 "--out", str(policy), "--report", str(report)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "validating on dit-s2, 1 seeds, 8 steps: 2 shortlisted (of 2 asked)" in text
    assert "measured SSIM" in text
    assert "fora twice: same configuration as 'fora N=2', measured once" in text
    details = json.loads(report.read_text())["validation"]
    measured = details["measured"]
    sources = [m["source"] for m in measured]
    assert sources[:2] == ["rule", "shortlist"]
    assert [m["label"] for m in measured if m["source"] == "given"] == ["fora N=2", "deepcache"]
    assert details["asked"] == 2 + 1 + 3
    assert len(measured) + len(details["not_validated"]) == details["asked"]
    eligible = [m for m in measured if m["saving"] >= details["target_saving"] - 1e-9]
    best = max(eligible, key=lambda m: (m["ssim"], m["saving"]))
    assert details["chosen"] == best["label"]
    assert json.loads(policy.read_text()) == best["policy"]
    plot = tmp_path / "policy_validation.png"  # beside the policy JSON, named after it
    assert plot.stat().st_size > 5000 and str(plot) in text
    with pytest.raises(SystemExit, match="--target-saving"):
        main([*args, "--validate", "2", "--target-similarity", "0.1"])
    with pytest.raises(SystemExit, match="--target-saving"):
        main([*args, "--candidate", "fora", "--target-similarity", "0.1"])
