"""Sweeps in a bench file: policy options (``sweep:``) and step counts (``steps: [...]``),
checked against what is computed here independently of the bench's own code."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from matplotlib.text import Text
from pydantic import ValidationError

import blockdance
from blockdance import Decision, attach, default_registry
from blockdance.cli import main
from blockdance.errors import InvalidInputError
from blockdance.testing import make_registry
from blockdance_lab.bench import (
    BenchResult,
    BenchSpec,
    SweptRun,
    expand_policy_sweeps,
    format_bench_table,
    load_bench_spec,
    result_rows,
    run_bench,
    sweep_figure,
)
from blockdance_lab.compare import PolicyRun
from blockdance_lab.evaluation.metrics import ssim
from blockdance_lab.workload import GenerateRequest, get_workload

STEPS = [3, 5]  # the step sweep of the end-to-end tests
SEEDS = 2
POLICIES = [{"kind": "blockdance", "N": 2}, {"kind": "fora", "N": 2}]


def labels(spec: BenchSpec) -> list[str]:
    return [label for label, _ in spec.labelled()]


# -- policy-option sweeps ---------------------------------------------------------------------


def test_a_policy_sweep_expands_into_one_validated_row_per_value():
    spec = BenchSpec(
        policies=(
            {"kind": "blockdance", "sweep": {"N": [2, 3, 4]}},
            {"kind": "blockdance", "window": [0.25, 0.95]},  # a list-typed option: one row
        )
    )
    assert labels(spec) == [
        "baseline",
        "blockdance N=2",
        "blockdance N=3",
        "blockdance N=4",
        "blockdance window=[0.25, 0.95]",
    ]
    registry = default_registry()
    configs = [registry.make_policy(p).config for _, p in spec.labelled()[1:]]
    assert [c.N for c in configs] == [2, 3, 4, 2]  # type: ignore[attr-defined]
    assert configs[3].window == (0.25, 0.95)  # type: ignore[attr-defined]
    assert all(c.window is None for c in configs[:3])  # type: ignore[attr-defined]


def test_several_swept_options_give_every_combination_and_keep_a_given_label():
    windows = [[0.25, 0.95], [0.4, 0.9]]
    entry = {"kind": "blockdance", "label": "BD", "sweep": {"N": [2, 3], "window": windows}}
    spec = BenchSpec(policies=(entry,))
    want = [(n, tuple(w)) for n, w in itertools.product([2, 3], windows)]
    assert labels(spec)[1:] == [f"BD N={n}, window=[{w[0]}, {w[1]}]" for n, w in want]
    registry = default_registry()
    got = [registry.make_policy(p).config for _, p in spec.labelled()[1:]]
    assert [(c.N, c.window) for c in got] == want  # type: ignore[attr-defined]
    # the swept options take the place of 'sweep' in the entry, so labels keep its order
    spec = BenchSpec(policies=({"kind": "blockdance", "sweep": {"N": [2]}, "boundary": 5},))
    assert labels(spec)[1:] == ["blockdance N=2, boundary=5"]
    # entries without a sweep are left as they are
    assert expand_policy_sweeps(["deepcache", {"kind": "fora"}]) == ["deepcache", {"kind": "fora"}]


def test_sweeps_read_from_a_yaml_file(tmp_path):
    (tmp_path / "b.yaml").write_text(
        "workload: dit-s2\nseeds: 2\nsteps: [20, 30, 50]\npolicies:\n"
        "  - {kind: blockdance, sweep: {N: [2, 3]}}\n"
        "  - {kind: first-block-cache, sweep: {threshold: [0.05, 0.1]}}\n"
    )
    spec = load_bench_spec(tmp_path / "b.yaml")
    assert spec.steps == (20, 30, 50) and spec.swept_steps
    assert spec.step_counts(default=99) == [20, 30, 50]
    assert labels(spec)[1:] == [
        "blockdance N=2",
        "blockdance N=3",
        "first-block-cache threshold=0.05",
        "first-block-cache threshold=0.1",
    ]
    # --steps on the command line replaces the sweep with one step count
    one = load_bench_spec(tmp_path / "b.yaml", steps=10)
    assert one.steps == 10 and not one.swept_steps and one.step_counts(default=99) == [10]
    assert BenchSpec(policies=("none",)).step_counts(default=99) == [99]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"kind": "blockdance", "sweep": [2, 3]}, "maps option names to lists"),
        ({"kind": "blockdance", "sweep": {}}, "maps option names to lists"),
        ({"kind": "blockdance", "sweep": {"N": 3}}, "'N' takes a non-empty list"),
        ({"kind": "blockdance", "sweep": {"N": []}}, "'N' takes a non-empty list"),
        ({"kind": "blockdance", "N": 2, "sweep": {"N": [3, 4]}}, "'N' is both set and swept"),
        ({"kind": "blockdance", "sweep": {"kind": ["fora"]}}, "'kind' cannot be swept"),
        ({"kind": "blockdance", "sweep": {"N": [2, 2]}}, "duplicate policy labels"),
    ],
)
def test_a_malformed_sweep_names_the_problem(entry, message):
    with pytest.raises(ValueError, match=message):
        BenchSpec(policies=(entry,)).labelled()


@pytest.mark.parametrize(
    ("steps", "message"),
    [([], "at least one step count"), ([20, 0], "at least 1"), ([20, 20], "repeat")],
)
def test_a_malformed_step_sweep_names_the_problem(steps, message):
    with pytest.raises(ValidationError, match=message):
        BenchSpec(steps=steps, policies=("none",))


# -- invalid values fail before any generation ---------------------------------------------------


class NeedsStepsConfig(blockdance.PolicyConfig):
    kind: Literal["needs-steps"] = "needs-steps"
    at_least: int = 4


class NeedsSteps(blockdance.Policy[NeedsStepsConfig]):
    """Computes everything; refuses to begin a generation of fewer than ``at_least`` steps."""

    config_class = NeedsStepsConfig

    def begin(self, info):
        if info.num_steps is not None and info.num_steps < self.config.at_least:
            raise ValueError(f"needs {self.config.at_least} steps, got {info.num_steps}")

    def decide(self, ctx, slot):
        return Decision.COMPUTE


class SweepTestPolicies:
    @blockdance.hookimpl
    def blockdance_register_policies(self, register):
        register(NeedsStepsConfig, NeedsSteps)


@pytest.fixture
def no_generation(monkeypatch):
    """Any generation (or model build, for the config checks) fails the test."""
    import blockdance_lab.bench as bench

    def never(*args, **kwargs):
        raise AssertionError("a generation ran before every row was checked")

    monkeypatch.setattr(bench, "compare_policies", never)
    return monkeypatch


def test_an_invalid_swept_value_fails_before_any_generation_naming_its_row(no_generation):
    spec = BenchSpec(
        workload="dit-s2",
        seeds=1,
        steps=4,
        policies=({"kind": "blockdance", "sweep": {"N": [2, 0]}},),
    )
    with pytest.raises(ValidationError, match="greater than or equal to 1") as info:
        run_bench(spec, progress=False)
    assert "bench row 'blockdance N=0'" in str(info.value)
    assert [e["loc"] for e in info.value.errors()] == [("N",)]  # pydantic's field error
    windows = {"window": [[0.25, 0.95], [0.9, 0.2]]}
    spec = BenchSpec(
        workload="dit-s2", seeds=1, steps=4, policies=({"kind": "blockdance", "sweep": windows},)
    )
    with pytest.raises(ValidationError, match=r"bench row 'blockdance window=\[0.9, 0.2\]'"):
        run_bench(spec, progress=False)


def test_a_list_for_an_option_that_takes_none_is_not_a_sweep(no_generation):
    """A plain list is the option's value: pydantic refuses it, and the error says how to
    sweep instead."""
    spec = BenchSpec(
        workload="dit-s2", seeds=1, steps=4, policies=({"kind": "blockdance", "N": [2, 3]},)
    )
    assert labels(spec)[1:] == ["blockdance N=[2, 3]"]
    with pytest.raises(ValidationError, match=r"sweep: \{N: \[2, 3\]\}") as info:
        run_bench(spec, progress=False)
    assert info.value.errors()[0]["type"] == "int_type"
    # a list-typed option given a bad list gets pydantic's error and no sweep hint
    spec = BenchSpec(
        workload="dit-s2",
        seeds=1,
        steps=4,
        policies=({"kind": "blockdance", "window": [0.9, 0.2]},),
    )
    with pytest.raises(ValidationError, match="window must satisfy") as info:
        run_bench(spec, progress=False)
    assert "sweep" not in str(info.value)


def test_every_step_count_is_begin_checked_before_any_generation(no_generation):
    registry = make_registry(("sweep-test-policies", SweepTestPolicies()), autoload=True)
    spec = BenchSpec(workload="dit-s2", seeds=1, steps=(5, 3), policies=("needs-steps",))
    with pytest.raises(InvalidInputError, match=r"'needs-steps' cannot begin.*\(3 steps\)"):
        run_bench(spec, registry=registry, progress=False)


# -- a step sweep, end to end through the command line ------------------------------------------


@pytest.fixture(scope="module")
def sweep_out(tmp_path_factory):
    """``blockdance bench`` on a step sweep, with every generation's step count and the
    :class:`BenchResult` the command got recorded."""
    import blockdance_lab.bench as bench

    out = tmp_path_factory.mktemp("sweep")
    spec = {"workload": "dit-s2", "seeds": SEEDS, "steps": STEPS, "policies": POLICIES}
    (out / "bench.json").write_text(json.dumps(spec))
    real = get_workload("dit-s2")
    calls: list[int] = []
    results: list[BenchResult] = []

    def generate(target, request):
        calls.append(request.num_steps)
        return real.generate(target, request)

    real_run_bench = bench.run_bench

    def recording_run_bench(*args, **kwargs):
        results.append(real_run_bench(*args, **kwargs))
        return results[-1]

    recording = dataclasses.replace(real, generate=generate)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench, "get_workload", lambda name, registry=None: recording)
        mp.setattr(bench, "run_bench", recording_run_bench)  # the command imports it on call
        args = ["bench", str(out / "bench.json"), "--out", str(out / "res"), "--quiet"]
        assert main([*args, "--threads", "1"]) == 0
    return out / "res", calls, results[0]


def test_each_step_count_runs_the_whole_bench(sweep_out):
    res, calls, _ = sweep_out
    rows = json.loads((res / "bench.json").read_text())["rows"]
    per_count = 1 + 1 + len(POLICIES)  # warm-up, baseline, the rows
    assert calls == [s for s in STEPS for _ in range(per_count)]
    want = [(s, p) for s in STEPS for p in ("baseline", "blockdance N=2", "fora N=2")]
    assert [(r["steps"], r["policy"]) for r in rows] == want
    meta = json.loads((res / "bench.json").read_text())["meta"]
    assert meta["steps"] == STEPS


def test_each_row_is_compared_with_its_own_step_counts_baseline(sweep_out):
    """Each seed generated alone at each step count, baseline and BlockDance N=2."""
    res, _, _ = sweep_out
    rows = json.loads((res / "bench.json").read_text())["rows"]
    workload = get_workload("dit-s2")
    target = workload.build()

    def alone(policy, steps):
        out = []
        for seed in range(SEEDS):
            with attach(target, policy, num_steps=steps), torch.inference_mode():
                out.append(workload.generate(target, GenerateRequest((seed,), steps)))
        return torch.cat(out).float()

    base = {s: alone("none", s) for s in STEPS}
    for steps in STEPS:
        row = next(r for r in rows if r["steps"] == steps and r["policy"] == "blockdance N=2")
        sample = alone({"kind": "blockdance", "N": 2}, steps)
        data_range = float(base[steps].max() - base[steps].min())
        want = ssim(sample, base[steps], data_range=data_range).tolist()
        assert row["per_seed"]["ssim"] == pytest.approx(want, abs=1e-4)
        assert 0 < row["ideal"] < 1  # it reused something, so the check can tell
    other = ssim(base[STEPS[0]], base[STEPS[1]], data_range=2.0).tolist()
    assert max(other) < 0.999  # the step counts' baselines differ: the pairing matters


def test_each_run_records_the_step_count_its_generation_ran(sweep_out):
    """The step count a run records is the one its policy saw: the runtime's statistics
    count the steps of the generation itself."""
    _, _, result = sweep_out
    assert all(isinstance(run, SweptRun) for run in result.runs)
    for run in result.runs:
        assert run.stats.num_steps == run.steps
        assert len(run.stats.reuse_map()) == run.steps  # one row of decisions per step
        assert run.samples.shape[0] == SEEDS
    assert [run.steps for run in result.runs if run.label == "baseline"] == STEPS


def test_paired_differences_are_within_a_step_count(sweep_out):
    res, _, _ = sweep_out
    data = json.loads((res / "bench.json").read_text())
    rows = data["rows"]
    for steps in STEPS:
        ref = next(r for r in rows if r["steps"] == steps and r["policy"] == "blockdance N=2")
        fora = next(r for r in rows if r["steps"] == steps and r["policy"] == "fora N=2")
        diff = np.subtract(fora["per_seed"]["ssim"], ref["per_seed"]["ssim"]).mean()
        assert fora["ssim_diff"] == pytest.approx(diff, abs=1e-12)
    table = format_bench_table(rows, data["meta"])
    sections = [line for line in table.splitlines() if line.endswith(" steps")]
    assert [s.split()[0] for s in sections] == [str(s) for s in STEPS]
    assert table.count("(reference)") == 2 * len(STEPS)  # SSIM and PSNR, per step count
    assert "3/5 " in table and "own baseline" in table


def test_step_sweep_writes_steps_everywhere_and_a_sweep_plot(sweep_out):
    res, _, _ = sweep_out
    assert (res / "sweep.png").stat().st_size > 0
    assert (res / "reuse_maps.png").stat().st_size > 0
    assert not (res / "pareto.png").exists()  # a front across step counts would mislead
    with (res / "bench.csv").open() as f:
        lines = list(csv.DictReader(f))
    assert [int(r["steps"]) for r in lines] == [s for s in STEPS for _ in range(3)]
    with (res / "bench_seeds.csv").open() as f:
        seeds = list(csv.DictReader(f))
    assert [(int(r["steps"]), int(r["seed"])) for r in seeds if r["policy"] == "fora N=2"] == [
        (s, seed) for s in STEPS for seed in range(SEEDS)
    ]


def test_without_a_sweep_rows_have_no_steps():
    stats = blockdance.GenerationStats(num_steps=1, num_blocks=1)
    runs = [
        PolicyRun("baseline", [1.0], stats, torch.zeros(1), per_seed={"ssim": [1.0]}),
        PolicyRun("a", [1.0], stats, torch.zeros(1), per_seed={"ssim": [0.9]}),
    ]
    assert all("steps" not in row for row in result_rows(runs))
    assert not BenchSpec(steps=50, policies=("none",)).swept_steps


def test_sweep_figure_has_a_series_per_step_count_and_labels_do_not_overlap():
    policies = (("baseline", 0.0), ("blockdance N=2", 0.25), ("blockdance N=3", 0.35))
    rows = [
        {
            "policy": name,
            "steps": steps,
            "status": "ok",
            "ideal": ideal,
            "reduction": ideal * 1.1,
            "ssim": 1.0 if name == "baseline" else 0.95 - 0.001 * steps,
            "ssim_ci_low": None if name == "baseline" else 0.85,
            "ssim_ci_high": None if name == "baseline" else 0.97,
        }
        for steps in (20, 30, 50)
        for name, ideal in policies
    ]
    fig, panels = sweep_figure(rows)
    fig.canvas.draw()  # measure where the labels are drawn, not where they were created
    ideal_ax = fig.axes[0]
    legend = ideal_ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["20 steps", "30 steps", "50 steps"]
    assert "labels: blockdance" in legend.get_title().get_text()  # the words cut from labels
    # one line per step count through its baseline and rows, in the order of the saving
    lines = [container.lines[0] for container in ideal_ax.containers]  # errorbar's data line
    assert [list(line.get_xdata()) for line in lines] == [[0.0, 0.25, 0.35]] * 3
    series_color = {steps: line.get_color() for steps, line in zip((20, 30, 50), lines)}
    # the baselines are not labelled (they sit at (0, 1)); each label has its series' colour
    assert sorted(a.get_text() for a in panels[0]) == ["N=2"] * 3 + ["N=3"] * 3
    for annotation in panels[0]:
        steps = next(r["steps"] for r in rows if r["ssim"] == annotation.xy[1])
        assert annotation.get_color() == series_color[steps]
    renderer = fig.canvas.get_renderer()
    boxes = [Text.get_window_extent(a, renderer) for a in panels[0]]
    for a, b in itertools.combinations(boxes, 2):
        assert not (a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1), (a, b)


def test_the_step_sweep_bench_file_is_a_valid_spec():
    path = Path(__file__).parents[2] / "benchmarks" / "steps_tiny_dit.yaml"
    spec = load_bench_spec(path)
    assert spec.workload == "dit-tiny-shapes" and spec.seeds == 32
    assert spec.steps == (20, 30, 50, 100)
    assert labels(spec)[1:] == ["blockdance N=2", "blockdance N=3", "blockdance N=4"]
