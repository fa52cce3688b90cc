"""The bench's statistics, metadata, robustness and plots, checked against values computed
here independently of the bench's own code."""

from __future__ import annotations

import csv
import itertools
import json
import shlex
import sys
from typing import Literal

import numpy as np
import pytest
import torch
from matplotlib.text import Text

import blockdance
from blockdance import Decision, attach, default_registry
from blockdance.cli import main
from blockdance.errors import InvalidInputError
from blockdance.testing import make_registry
from blockdance_lab.bench import (
    BenchSpec,
    format_bench_table,
    pareto_figure,
    result_rows,
    run_bench,
    write_results,
)
from blockdance_lab.compare import PolicyRun
from blockdance_lab.evaluation.metrics import psnr, ssim
from blockdance_lab.report import add_quality_metrics
from blockdance_lab.statistics import bootstrap_mean, paired_difference
from blockdance_lab.workload import GenerateRequest, QualityProbe, Workload, get_workload

SEEDS, STEPS, OFFSET = 3, 6, 5
POLICIES = [
    {"kind": "blockdance", "N": 2},
    {"kind": "blockdance", "N": 2, "label": "same as N=2"},
    {"kind": "fora", "N": 2},
]


def numpy_bootstrap(values, resamples=2000, seed=0):
    """The percentile bootstrap of the mean, written out with numpy."""
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.array([x[rng.integers(0, len(x), len(x))].mean() for _ in range(resamples)])
    return x.mean(), np.percentile(means, 2.5), np.percentile(means, 97.5)


# -- statistics ----------------------------------------------------------------------------------


def test_bootstrap_mean_matches_numpy_and_the_normal_approximation():
    values = np.random.default_rng(7).normal(0.9, 0.05, size=400)
    est = bootstrap_mean(values.tolist())
    mean, low, high = numpy_bootstrap(values)
    assert (est.mean, est.low, est.high) == pytest.approx((mean, low, high), abs=1e-12)
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))  # large n: close to normal
    assert est.low == pytest.approx(mean - half, abs=0.2 * half)
    assert est.high == pytest.approx(mean + half, abs=0.2 * half)
    assert bootstrap_mean([0.5, 0.5, 0.5]).crosses_zero is False
    constant = bootstrap_mean([0.5] * 4)
    assert (constant.low, constant.high, constant.n) == (0.5, 0.5, 4)
    assert bootstrap_mean(values.tolist()).low == est.low  # fixed seed: reproducible


def test_paired_difference_is_the_bootstrap_of_per_seed_differences():
    a, b = [0.90, 0.95, 0.93, 0.97], [0.91, 0.97, 0.92, 0.99]
    diff = paired_difference(a, b)
    mean, low, high = numpy_bootstrap(np.subtract(a, b))
    assert (diff.mean, diff.low, diff.high) == pytest.approx((mean, low, high), abs=1e-12)
    assert paired_difference(a, a).crosses_zero
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference(a, b[:3])


# -- one bench run, checked against independent computations ------------------------------------


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    spec = {
        "workload": "dit-s2",
        "seeds": SEEDS,
        "seed_offset": OFFSET,
        "steps": STEPS,
        "policies": POLICIES,
    }
    (out / "bench.json").write_text(json.dumps(spec))
    assert main(["bench", str(out / "bench.json"), "--out", str(out / "res"), "--quiet"]) == 0
    return out / "res"


def test_bench_json_records_what_ran(bench_out):
    meta = json.loads((bench_out / "bench.json").read_text())["meta"]
    assert meta["workload"] == "dit-s2" and meta["steps"] == STEPS
    assert meta["seeds"] == list(range(OFFSET, OFFSET + SEEDS)) and meta["seed_offset"] == OFFSET
    assert meta["scheduler"] == get_workload("dit-s2").scheduler and meta["repeats"] == 1
    assert meta["reference"] == "blockdance N=2"
    registry = default_registry()
    assert meta["configs"]["fora N=2"] == registry.make_policy(
        {"kind": "fora", "N": 2}
    ).config.model_dump(mode="json")
    assert meta["configs"]["baseline"] == {"kind": "none"}
    assert torch.__version__.startswith(meta["versions"]["torch"])  # the distribution version
    assert set(meta["versions"]) == {"blockdance", "torch", "diffusers"}
    assert meta["date"] and meta["command"] == shlex.join(sys.argv)  # this process's


def test_per_seed_ssim_equals_each_seed_generated_alone(bench_out):
    """Each seed re-run alone, baseline and BlockDance N=2; SSIM and PSNR computed here."""
    rows = {r["policy"]: r for r in json.loads((bench_out / "bench.json").read_text())["rows"]}
    workload = get_workload("dit-s2")
    target = workload.build()
    samples = {}
    for policy in ("none", {"kind": "blockdance", "N": 2}):
        per_seed = []
        for seed in range(OFFSET, OFFSET + SEEDS):
            with attach(target, policy, num_steps=STEPS), torch.inference_mode():
                per_seed.append(workload.generate(target, GenerateRequest((seed,), STEPS)))
        samples[str(policy)] = torch.cat(per_seed).float()
    base, row = samples["none"], samples[str({"kind": "blockdance", "N": 2})]
    data_range = float(base.max() - base.min())
    want_ssim = ssim(row, base, data_range=data_range).tolist()
    want_psnr = psnr(row, base, data_range=data_range, max_db=100.0).tolist()
    got = rows["blockdance N=2"]["per_seed"]
    assert got["ssim"] == pytest.approx(want_ssim, abs=1e-4)
    assert got["psnr"] == pytest.approx(want_psnr, abs=1e-2)
    assert rows["blockdance N=2"]["ssim"] == pytest.approx(np.mean(want_ssim), abs=1e-4)


def test_intervals_and_paired_differences_recompute_from_per_seed_values(bench_out):
    rows = json.loads((bench_out / "bench.json").read_text())["rows"]
    ref = next(r for r in rows if r["policy"] == "blockdance N=2")
    for row in rows:
        for key in ("ssim", "psnr"):
            mean, low, high = numpy_bootstrap(row["per_seed"][key])
            assert (row[key], row[f"{key}_ci_low"], row[f"{key}_ci_high"]) == pytest.approx(
                (mean, low, high), abs=1e-9
            )
            d = np.subtract(row["per_seed"][key], ref["per_seed"][key])
            mean, low, high = numpy_bootstrap(d)
            got = (row[f"{key}_diff"], row[f"{key}_diff_ci_low"], row[f"{key}_diff_ci_high"])
            assert got == pytest.approx((mean, low, high), abs=1e-9)
    with (bench_out / "bench.csv").open() as f:
        csv_rows = {r["policy"]: r for r in csv.DictReader(f)}
    fora = next(r for r in rows if r["policy"] == "fora N=2")
    assert float(csv_rows["fora N=2"]["ssim_diff_ci_high"]) == pytest.approx(
        fora["ssim_diff_ci_high"]
    )
    with (bench_out / "bench_seeds.csv").open() as f:
        seeds = [r for r in csv.DictReader(f) if r["policy"] == "fora N=2"]
    assert [int(r["seed"]) for r in seeds] == list(range(OFFSET, OFFSET + SEEDS))
    assert [float(r["ssim"]) for r in seeds] == pytest.approx(fora["per_seed"]["ssim"])


def test_table_marks_differences_whose_interval_crosses_zero(bench_out, capsys):
    data = json.loads((bench_out / "bench.json").read_text())
    table = format_bench_table(data["rows"], data["meta"])
    lines = {line.split("  ")[0]: line for line in table.splitlines()}
    assert lines["same as N=2"].count("] ~") == 2  # identical to the reference: SSIM, PSNR
    fora = next(r for r in data["rows"] if r["policy"] == "fora N=2")
    assert fora["ssim_diff_ci_high"] < 0  # FORA N=2 loses on every seed here
    assert "[" in lines["fora N=2"] and "~" not in lines["fora N=2"].split("]")[1]
    assert "(reference)" in lines["blockdance N=2"]
    assert "crosses zero" in table and f"{SEEDS} seeds ({OFFSET}..{OFFSET + SEEDS - 1})" in table
    assert (bench_out / "reuse_maps.png").stat().st_size > 0


def test_reference_flag_and_unknown_reference():
    spec = BenchSpec(policies=("deepcache", "fora"), reference="fora")
    assert spec.reference_label() == "fora"
    assert BenchSpec(policies=("deepcache", "fora")).reference_label() == "deepcache"
    with pytest.raises(ValueError, match="not a row"):
        BenchSpec(policies=("deepcache",), reference="nope").reference_label()


# -- per-seed probe scores ---------------------------------------------------------------------


def test_per_seed_probe_scores_are_the_asked_class_logit_and_correctness():
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])  # 3 classes from 2 channels

    def logits(x):
        return x.mean(dim=(2, 3)) @ weights.T

    probe = QualityProbe(
        features=lambda x: x.flatten(1)[:, :4],
        logits=logits,
        labels=lambda seeds: torch.tensor([s % 3 for s in seeds]),
        reference=lambda n: torch.randn(n, 2, 4, 4, generator=torch.Generator().manual_seed(0)),
    )
    workload = Workload(
        "probe-test", "", build=lambda: None, generate=lambda t, r: t, probe=lambda: probe
    )
    samples = torch.rand(6, 2, 4, 4, generator=torch.Generator().manual_seed(1)) * 1.8 - 0.9
    run = PolicyRun("row", [1.0], blockdance.GenerationStats(num_steps=1, num_blocks=1), samples)
    seeds = list(range(10, 16))
    add_quality_metrics([run], workload, seeds)
    means = samples.mean(dim=(2, 3)).numpy()
    scores = means @ weights.numpy().T
    asked = [s % 3 for s in seeds]
    assert run.per_seed["class_logit"] == pytest.approx(
        [scores[i, c] for i, c in enumerate(asked)], abs=1e-6
    )
    assert run.per_seed["correct"] == [float(scores[i].argmax() == c) for i, c in enumerate(asked)]
    assert run.metrics["accuracy"] == pytest.approx(np.mean(run.per_seed["correct"]))


# -- robustness ---------------------------------------------------------------------------------


class FailAtStepConfig(blockdance.PolicyConfig):
    kind: Literal["fail-at-step"] = "fail-at-step"
    step: int = 3


class FailAtStep(blockdance.Policy[FailAtStepConfig]):
    """Computes everything, and raises when step ``config.step`` asks for a decision."""

    config_class = FailAtStepConfig

    def decide(self, ctx, slot):
        if ctx.step == self.config.step:
            raise RuntimeError(f"boom at step {ctx.step}\n(second line)")
        return Decision.COMPUTE


class CannotBeginConfig(blockdance.PolicyConfig):
    kind: Literal["cannot-begin"] = "cannot-begin"


class CannotBegin(blockdance.Policy[CannotBeginConfig]):
    config_class = CannotBeginConfig

    def begin(self, info):
        raise ValueError(f"needs 99 blocks, the model has {info.num_blocks}")

    def decide(self, ctx, slot):
        return Decision.COMPUTE


class TestPolicies:
    @blockdance.hookimpl
    def blockdance_register_policies(self, register):
        register(FailAtStepConfig, FailAtStep)
        register(CannotBeginConfig, CannotBegin)


@pytest.fixture(scope="module")
def registry():
    return make_registry(("bench-test-policies", TestPolicies()), autoload=True)


def test_a_row_failing_mid_run_is_recorded_and_the_others_still_run(registry, tmp_path):
    spec = BenchSpec(
        workload="dit-s2",
        seeds=2,
        steps=STEPS,
        policies=({"kind": "blockdance", "N": 2}, "fail-at-step", {"kind": "fora", "N": 2}),
    )
    result = run_bench(spec, registry=registry, progress=False)
    assert result is not None
    status = {r.label: r.error for r in result.runs}
    assert status["fail-at-step"] == "RuntimeError: boom at step 3 (second line)"
    assert status["baseline"] is None and status["fora N=2"] is None
    written = write_results(result, tmp_path)
    rows = {r["policy"]: r for r in json.loads((tmp_path / "bench.json").read_text())["rows"]}
    assert rows["fail-at-step"]["status"] == "failed"
    assert rows["fail-at-step"]["error"] == status["fail-at-step"]
    assert rows["fora N=2"]["status"] == "ok" and 0 < rows["fora N=2"]["ssim"] < 1
    assert (tmp_path / "pareto.png") in written
    table = format_bench_table(list(rows.values()), result.meta)
    assert "fail-at-step" in table and "FAILED: RuntimeError: boom at step 3" in table
    assert "Traceback" not in table


def test_a_policy_that_cannot_begin_fails_before_any_generation(registry, monkeypatch):
    import blockdance_lab.bench as bench

    def never(*args, **kwargs):
        raise AssertionError("a generation ran before every policy was begin-checked")

    monkeypatch.setattr(bench, "compare_policies", never)
    spec = BenchSpec(
        workload="dit-s2", seeds=2, steps=STEPS, policies=("deepcache", "cannot-begin")
    )
    with pytest.raises(InvalidInputError, match=r"'cannot-begin' cannot begin.*needs 99 blocks"):
        run_bench(spec, registry=registry, progress=False)
    # a boundary past the model's last block is caught by the same check
    spec = BenchSpec(
        workload="dit-s2", seeds=2, steps=STEPS, policies=({"kind": "blockdance", "boundary": 40},)
    )
    with pytest.raises(InvalidInputError, match="blockdance boundary=40"):
        run_bench(spec, registry=registry, progress=False)


# -- Pareto plot -----------------------------------------------------------------------------------


def test_pareto_labels_do_not_overlap_and_the_first_panel_is_the_ideal_saving():
    rows = [
        {
            "policy": f"a long policy label {i}",
            "status": "ok",
            "ideal": 0.25 + 0.002 * (i % 3),  # nearly the same saving
            "reduction": 0.3 - 0.01 * i,
            "ssim": 0.95 + 0.0005 * i,  # nearly the same SSIM
            "ssim_ci_low": 0.94,
            "ssim_ci_high": 0.96,
        }
        for i in range(8)
    ]
    rows.append({"policy": "PAB", "status": "ok", "ideal": None, "reduction": 0.2, "ssim": 0.99})
    fig, panels = pareto_figure(rows)
    fig.canvas.draw()  # measure where the labels are drawn, not where they were created
    renderer = fig.canvas.get_renderer()
    for labels in panels:
        boxes = [Text.get_window_extent(a, renderer) for a in labels]  # text, no line
        for a, b in itertools.combinations(boxes, 2):
            assert not (a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1), (a, b)
    ideal, measured = fig.axes[:2]
    assert "ideal saving" in ideal.get_xlabel() and "PAB" in ideal.get_xlabel()  # no ideal
    assert "latency" in measured.get_xlabel()
    assert len(panels[0]) == 8 and len(panels[1]) == 9
    xs = sorted({round(a.xy[0], 6) for a in panels[0]})
    assert xs == sorted({round(r["ideal"], 6) for r in rows[:8]})


def test_result_rows_reference_defaults_to_the_second_row():
    stats = blockdance.GenerationStats(num_steps=1, num_blocks=1)
    runs = [
        PolicyRun("baseline", [1.0], stats, torch.zeros(1), per_seed={"ssim": [1.0, 1.0]}),
        PolicyRun("a", [1.0], stats, torch.zeros(1), per_seed={"ssim": [0.9, 0.8]}),
        PolicyRun("b", [1.0], stats, torch.zeros(1), per_seed={"ssim": [0.7, 0.9]}),
    ]
    rows = result_rows(runs)
    assert rows[2]["ssim_diff"] == pytest.approx(-0.05)
    assert result_rows(runs, "b")[1]["ssim_diff"] == pytest.approx(0.05)
