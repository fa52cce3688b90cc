"""The bench on videos: per-seed temporal consistency and its change to the baseline, checked
against values computed here frame pair by frame pair; image benches gain no such column."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from blockdance.stats import CallRecord, GenerationStats
from blockdance_lab.bench import (
    BenchResult,
    format_bench_table,
    load_bench_spec,
    result_rows,
    write_results,
)
from blockdance_lab.compare import PolicyRun
from blockdance_lab.data.shapes import make_video_batch
from blockdance_lab.evaluation.metrics import ssim
from blockdance_lab.report import add_consistency_metrics, temporal_per_seed

SEEDS, FRAMES = 5, 6


def numpy_bootstrap(values, resamples=2000, seed=0):
    """The percentile bootstrap of the mean, written out with numpy."""
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.array([x[rng.integers(0, len(x), len(x))].mean() for _ in range(resamples)])
    return x.mean(), np.percentile(means, 2.5), np.percentile(means, 97.5)


def _run(label: str, samples: torch.Tensor) -> PolicyRun:
    stats = GenerationStats(num_steps=1, num_blocks=2)
    stats.calls.append(CallRecord(step=0, branch=0, timestep=None, reused=[False, True]))
    return PolicyRun(label, [1.0], stats, samples)


def _meta(reference: str) -> dict:
    return {
        "reference": reference,
        "seeds": list(range(SEEDS)),
        "steps": 50,
        "scheduler": "DDIM",
        "repeats": 1,
        "bootstrap": {"resamples": 2000},
    }


@pytest.fixture(scope="module")
def video_runs() -> list[PolicyRun]:
    """A baseline of moving shapes, a shaky copy (every other frame jumps sideways) and a
    noisy copy (independent noise on every frame)."""
    videos, _, _ = make_video_batch(SEEDS, seed=4, frames=FRAMES)  # (5, 6, 3, 32, 32)
    shaky = videos.clone()
    shaky[:, 1::2] = videos[:, 1::2].roll(2, dims=-1)
    noise = torch.randn(videos.shape, generator=torch.Generator().manual_seed(3))
    noisy = (videos + 0.1 * noise).clamp(-1, 1)
    runs = [_run("baseline", videos), _run("shaky", shaky), _run("noisy", noisy)]
    add_consistency_metrics(runs)
    return runs


def _adjacent_frame_ssim(video: torch.Tensor, data_range: float) -> float:
    """One video's (F, C, H, W) mean SSIM over its adjacent frame pairs, one pair at a time."""
    pairs = [
        float(ssim(video[f + 1][None], video[f][None], data_range=data_range)[0])
        for f in range(video.shape[0] - 1)
    ]
    return sum(pairs) / len(pairs)


def test_per_seed_temporal_is_each_videos_adjacent_frame_ssim(video_runs):
    base = video_runs[0].samples
    data_range = float(base.max() - base.min())  # the bench's: the baseline's range
    want = {
        run.label: [_adjacent_frame_ssim(run.samples[n], data_range) for n in range(SEEDS)]
        for run in video_runs
    }
    rows = {r["policy"]: r for r in result_rows(video_runs, reference="shaky")}
    for label, values in want.items():
        assert rows[label]["per_seed"]["temporal"] == pytest.approx(values, abs=1e-5)
        change = [v / b - 1.0 for v, b in zip(values, want["baseline"])]
        assert rows[label]["per_seed"]["temporal_change"] == pytest.approx(change, abs=1e-5)
        got = tuple(rows[label][f"temporal{s}"] for s in ("", "_ci_low", "_ci_high"))
        assert got == pytest.approx(numpy_bootstrap(values), abs=1e-5)
        mean, low, high = numpy_bootstrap(change)
        got = tuple(rows[label][f"temporal_change{s}"] for s in ("", "_ci_low", "_ci_high"))
        assert got == pytest.approx((mean, low, high), abs=1e-5)
        # the paired difference to the reference row, as for SSIM
        diff = np.subtract(values, want["shaky"])
        got = tuple(rows[label][f"temporal_diff{s}"] for s in ("", "_ci_low", "_ci_high"))
        assert got == pytest.approx(numpy_bootstrap(diff), abs=1e-5)
    assert rows["baseline"]["temporal_change"] == 0.0
    assert rows["shaky"]["temporal_change_ci_high"] < 0  # the jumps cost smoothness
    assert rows["noisy"]["temporal_change_ci_high"] < 0


def test_video_table_and_files_show_temporal_and_its_change(video_runs, tmp_path):
    rows = result_rows(video_runs, reference="shaky")
    table = format_bench_table(rows, _meta("shaky"))
    header = table.splitlines()[0]
    assert "temporal [95% CI]" in header and "Δtemporal/base [95% CI]" in header
    lines = {line.split("  ")[0]: line for line in table.splitlines()}
    shaky = next(r for r in rows if r["policy"] == "shaky")
    want = (
        f"{shaky['temporal_change']:+.2%} [{shaky['temporal_change_ci_low']:+.2%}, "
        f"{shaky['temporal_change_ci_high']:+.2%}]"
    )
    assert want in lines["shaky"]
    assert f"{shaky['temporal']:.4f} [{shaky['temporal_ci_low']:.4f}," in lines["shaky"]
    assert "(baseline)" in lines["baseline"]
    assert "adjacent frames" in table  # the footer says what the column is

    write_results(BenchResult(video_runs, _meta("shaky"), "shaky"), tmp_path)
    with (tmp_path / "bench.csv").open() as f:
        by_policy = {r["policy"]: r for r in csv.DictReader(f)}
    assert float(by_policy["shaky"]["temporal_change"]) == pytest.approx(shaky["temporal_change"])
    assert float(by_policy["noisy"]["temporal_ci_low"]) > 0
    with (tmp_path / "bench_seeds.csv").open() as f:
        seeds = [r for r in csv.DictReader(f) if r["policy"] == "shaky"]
    assert [float(r["temporal"]) for r in seeds] == pytest.approx(shaky["per_seed"]["temporal"])
    saved = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert saved[1]["per_seed"]["temporal_change"] == shaky["per_seed"]["temporal_change"]


def test_image_benches_gain_no_temporal_column(tmp_path):
    images = torch.rand(SEEDS, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    runs = [_run("baseline", images), _run("copy", images.flip(-1))]
    add_consistency_metrics(runs)
    rows = result_rows(runs, reference="copy")
    assert not any(key.startswith("temporal") for row in rows for key in row)
    assert not any(key.startswith("temporal") for row in rows for key in row["per_seed"])
    assert "temporal" not in format_bench_table(rows, _meta("copy"))
    write_results(BenchResult(runs, _meta("copy"), "copy"), tmp_path)
    assert "temporal" not in (tmp_path / "bench.csv").read_text()
    assert "temporal" not in (tmp_path / "bench_seeds.csv").read_text()


def test_temporal_per_seed_refuses_images():
    with pytest.raises(ValueError, match=r"at least 2 frames.*\(2, 3, 8, 8\)"):
        temporal_per_seed(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="at least 2 frames"):
        temporal_per_seed(torch.zeros(2, 1, 3, 8, 8))


def test_native_ratio_files_are_read_from_the_bench_files_folder(tmp_path: Path):
    folder = tmp_path / "benches"
    folder.mkdir()
    (folder / "ratios.json").write_text(json.dumps([1.0] * 10))
    (folder / "b.json").write_text(
        json.dumps(
            {
                "workload": "stdit-tiny-shapes",
                "policies": [
                    {"kind": "magcache", "mag_ratios": "ratios.json", "label": "mc"},
                    {"kind": "blockdance-ada", "weights": "ada/net.safetensors"},
                    {"kind": "blockdance-adaptive", "changes": "/abs/changes.json"},
                    {"kind": "blockdance", "N": 2, "label": "n2.json"},  # not a file option
                ],
            }
        )
    )
    spec = load_bench_spec(folder / "b.json")
    assert spec.policies[0]["mag_ratios"] == str(folder / "ratios.json")
    assert spec.policies[1]["weights"] == str(folder / "ada" / "net.safetensors")
    assert spec.policies[2]["changes"] == "/abs/changes.json"  # absolute: as given
    assert spec.policies[3]["label"] == "n2.json"
    shipped = Path(__file__).resolve().parents[2] / "benchmarks" / "policies_tiny_stdit.yaml"
    magcache = [p for p in load_bench_spec(shipped).policies if p["kind"] == "magcache"]
    assert magcache and all(Path(p["mag_ratios"]).is_file() for p in magcache)
