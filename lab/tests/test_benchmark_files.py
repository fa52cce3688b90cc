"""Every bench file under benchmarks/ loads, and every row builds its policy (or external
cache) from its options, so a typo fails here rather than minutes into a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from blockdance import default_registry
from blockdance_lab.bench import load_bench_spec
from blockdance_lab.external import is_external, parse_external
from repo_files import REPO, load_benchmark

BENCHMARKS = REPO / "benchmarks"
FILES = sorted(BENCHMARKS.glob("*.yaml"))


def test_there_are_bench_files() -> None:
    assert {p.name for p in FILES} >= {"policies_tiny_dit.yaml", "policies_tiny_sd3.yaml"}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_row_of_a_bench_file_builds(path: Path) -> None:
    spec = load_bench_spec(path)
    registry = default_registry()
    pairs = spec.labelled()
    assert len(pairs) >= 2
    for label, entry in pairs:
        if is_external(entry):
            parse_external(entry)
        else:
            policy = registry.make_policy(entry)
            assert policy.name, label


#: The configurations on the front of each shipped model (docs/policies.md, "Which policy to
#: use when"), at about 25%, 35% and 45% ideal saving.
LEADING = {
    "policies_tiny_dit.yaml": (
        "blockdance-forecast N=2, boundary=5, window=[0.24, 0.92], order=2",
        "blockdance-forecast N=2, boundary=6, window=[0.0, 0.8], order=2",
        "blockdance-forecast N=2, boundary=6, window=[0.0, 1.0]",
    ),
    "policies_tiny_sd3.yaml": (
        "blockdance-forecast N=2, boundary=5, window=[0.25, 0.95], order=2",
        "blockdance-forecast N=2, boundary=6, window=[0.14, 0.94]",
        "blockdance-forecast N=3, boundary=6, window=[0.2, 0.95]",
    ),
    "policies_tiny_stdit.yaml": (
        "blockdance-forecast N=2",
        "blockdance-forecast N=2, window=[0.08, 1.0]",
        "blockdance-forecast N=2, boundary=6, window=[0.0, 1.0]",
    ),
}


@pytest.mark.parametrize("name", sorted(LEADING))
def test_the_tiny_model_bench_files_hold_the_leading_configurations(name: str) -> None:
    labels = [label for label, _ in load_bench_spec(BENCHMARKS / name).labelled()]
    missing = [want for want in LEADING[name] if want not in labels]
    assert not missing, (missing, labels)


def test_the_static_control_threshold_reuses_as_many_steps_as_asked() -> None:
    """benchmarks/ada_controls.py: the learned static schedule at a network's compute."""
    import torch

    module = load_benchmark("ada_controls")
    probs = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.95])
    for reuse, steps in [(0, set()), (2, {1, 3}), (3, {1, 2, 3}), (5, {0, 1, 2, 3, 4})]:
        t = module.matched_threshold(probs, reuse)
        assert {i for i, m in enumerate(probs.tolist()) if m < t} == steps  # m < t: reuse
    with pytest.raises(ValueError, match="tie"):
        module.matched_threshold(torch.tensor([0.2, 0.2, 0.9]), 1)


def test_record_magcache_writes_the_held_out_seeds_ratios(tmp_path: Path) -> None:
    """benchmarks/record_magcache.py records on the seeds it names (held out: 10000..), as
    a MagnitudeRecorder attached here to the same workload and seeds does, and says so."""
    import json

    import torch

    import blockdance
    from blockdance.policies.magcache import MagnitudeRecorder
    from blockdance_lab.workload import GenerateRequest, get_workload

    script = load_benchmark("record_magcache")
    out = tmp_path / "ratios.json"
    flags = "--workload dit-tiny-shapes --seeds 2 --steps 6 --threads 1"
    script.main([*flags.split(), "--out", str(out)])
    record = json.loads(out.read_text())
    assert record["workload"] == "dit-tiny-shapes" and record["steps"] == 6
    assert record["seeds"] == [10_000, 10_001]

    def recorded(seeds: tuple[int, ...]) -> list[float]:
        workload = get_workload("dit-tiny-shapes")
        target, recorder = workload.build(), MagnitudeRecorder()
        with (
            blockdance.attach(target, recorder, num_steps=6) as handle,
            handle.generation(6),
            torch.inference_mode(),
        ):
            workload.generate(target, GenerateRequest(seeds, 6))
        return recorder.ratios()

    assert len(record["mag_ratios"]) == 6
    assert record["mag_ratios"] == pytest.approx(recorded((10_000, 10_001)), rel=1e-6)
    assert record["mag_ratios"] != pytest.approx(recorded((0, 1)), rel=1e-6)  # seeds matter
