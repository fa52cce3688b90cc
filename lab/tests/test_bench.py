"""The comparison bench: bench files, the harness, its outputs, and seed sharding."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from blockdance.cli import main
from blockdance.errors import UnknownPolicyError
from blockdance_lab.bench import BenchSpec, load_bench_spec, pareto_front, run_bench

SMALL = {"workload": "dit-s2", "seeds": 4, "steps": 6, "repeats": 1}


def _free_port() -> int:
    """A TCP port free now on this machine (a fixed one clashes with other runs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_spec_from_json_and_yaml_agree(tmp_path):
    policies = [{"kind": "blockdance", "N": 2}, {"kind": "fora", "N": 3, "label": "FORA-3"}, "none"]
    (tmp_path / "b.json").write_text(json.dumps({**SMALL, "policies": policies}))
    (tmp_path / "b.yaml").write_text(
        "workload: dit-s2\nseeds: 4\nsteps: 6\npolicies:\n"
        "  - {kind: blockdance, N: 2}\n  - {kind: fora, N: 3, label: FORA-3}\n  - none\n"
    )
    a, b = load_bench_spec(tmp_path / "b.json"), load_bench_spec(tmp_path / "b.yaml")
    assert a.policies == b.policies
    assert [label for label, _ in a.labelled()] == ["baseline", "blockdance N=2", "FORA-3", "none"]
    assert load_bench_spec(tmp_path / "b.json", seeds=8, steps=None).seeds == 8


def test_spec_errors_name_the_problem(tmp_path):
    with pytest.raises(ValidationError, match="seeds"):
        BenchSpec(seeds=0, policies=("none",))
    with pytest.raises(ValidationError, match="no 'kind'"):
        BenchSpec(policies=({"N": 2},))
    with pytest.raises(ValidationError, match="extra"):
        BenchSpec(policies=("none",), seed=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="duplicate policy labels"):
        BenchSpec(policies=("deepcache", "deepcache")).labelled()
    (tmp_path / "b.toml").write_text("")
    with pytest.raises(ValueError, match=r"\.json, \.yaml or \.yml"):
        load_bench_spec(tmp_path / "b.toml")


def test_bad_policy_config_fails_before_any_generation(monkeypatch):
    import blockdance_lab.bench as bench

    def never(*args, **kwargs):
        raise AssertionError("generation ran before the configs were checked")

    monkeypatch.setattr(bench, "compare_policies", never)
    with pytest.raises(ValidationError, match="N"):
        run_bench(BenchSpec(**SMALL, policies=({"kind": "blockdance", "N": 0},)))
    with pytest.raises(UnknownPolicyError, match="blockdance"):
        run_bench(BenchSpec(**SMALL, policies=("no-such-policy",)))


def test_pareto_front():
    points = [(0.1, 0.99), (0.2, 0.95), (0.15, 0.94), (0.3, 0.80), (0.0, 1.0), (0.2, 0.90)]
    assert pareto_front(points) == [0, 1, 3, 4]
    assert pareto_front([(0.1, 0.9), (0.1, 0.9)]) == [0, 1]  # ties dominate nothing


def test_cli_bench_writes_table_csv_json_and_pareto(tmp_path, capsys):
    spec = {**SMALL, "policies": [{"kind": "blockdance", "N": 2}, {"kind": "fora", "N": 2}]}
    (tmp_path / "bench.json").write_text(json.dumps(spec))
    out = tmp_path / "out"
    assert main(["bench", str(tmp_path / "bench.json"), "--out", str(out), "--quiet"]) == 0
    table = capsys.readouterr().out
    for label in ("baseline", "blockdance N=2", "fora N=2"):
        assert label in table
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [r["policy"] for r in rows] == ["baseline", "blockdance N=2", "fora N=2"]
    assert rows[0]["ssim"] == pytest.approx(1.0) and rows[0]["ideal"] == 0
    assert 0 < rows[1]["ideal"] < rows[2]["ideal"]  # FORA N=2 skips every block on odd steps
    assert rows[1]["cache_bytes"] > 0 and rows[1]["ssim"] < 1.0
    with (out / "bench.csv").open() as f:
        assert [r["policy"] for r in csv.DictReader(f)] == [r["policy"] for r in rows]
    assert (out / "pareto.png").stat().st_size > 0
    assert (out / "reuse_maps.png").stat().st_size > 0


def test_cli_bench_flags_without_file(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["bench", "--workload", "dit-s2", "--seeds", "2", "--steps", "4", "--quiet"]
    assert main([*args, "--policy", '{"kind": "deepcache"}', "--out", str(out)]) == 0
    assert [r["policy"] for r in json.loads((out / "bench.json").read_text())["rows"]] == [
        "baseline",
        "deepcache",
    ]
    assert main(["bench", "--out", str(out)]) == 2
    assert "--policy" in capsys.readouterr().out


def test_torchrun_two_ranks_match_one_process(tmp_path):
    """gloo, 2 processes on the CPU: the gathered numbers equal a single-process run."""
    spec = {**SMALL, "policies": [{"kind": "blockdance", "N": 2}, {"kind": "deepcache"}]}
    (tmp_path / "bench.json").write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = [str(tmp_path / "bench.json"), "--quiet", "--threads", "1"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    launcher += ["--master-port", str(_free_port()), "-m", "blockdance.cli", "bench"]
    subprocess.run([*launcher, *common, "--out", str(tmp_path / "two")], env=env, check=True)
    single = [sys.executable, "-m", "blockdance.cli", "bench", *common, "--out"]
    subprocess.run([*single, str(tmp_path / "one")], env=env, check=True)
    two = json.loads((tmp_path / "two" / "bench.json").read_text())["rows"]
    one = json.loads((tmp_path / "one" / "bench.json").read_text())["rows"]
    assert [r["policy"] for r in two] == [r["policy"] for r in one]
    for a, b in zip(two, one, strict=True):
        assert a["ideal"] == b["ideal"] and a["cache_bytes"] == b["cache_bytes"]
        assert a["ssim"] == pytest.approx(b["ssim"], abs=1e-5)
        assert a["psnr"] == pytest.approx(b["psnr"], rel=1e-4)


def test_bench_doc_example_is_a_valid_spec():
    example = Path(__file__).parents[2] / "benchmarks" / "policies_tiny_dit.yaml"
    spec = load_bench_spec(example)
    assert len(spec.policies) >= 8


def test_policy_files_in_a_bench_file_resolve_relative_to_it(tmp_path, monkeypatch):
    sub = tmp_path / "benches"
    sub.mkdir()
    (sub / "mine.json").write_text(json.dumps({"kind": "blockdance", "N": 3}))
    (sub / "b.yaml").write_text("workload: dit-s2\npolicies:\n  - mine.json\n  - deepcache\n")
    monkeypatch.chdir(tmp_path)  # the working directory holds no mine.json
    spec = load_bench_spec(Path("benches") / "b.yaml")
    assert spec.policies[0] == str(Path("benches") / "mine.json")
    assert [label for label, _ in spec.labelled()] == ["baseline", "mine", "deepcache"]
    from blockdance import default_registry

    assert default_registry().make_policy(spec.policies[0]).config.N == 3  # type: ignore[attr-defined]
    # --policy on the command line stays relative to the working directory
    assert load_bench_spec(sub / "b.yaml", policies=["x.json"]).policies == ("x.json",)


def test_repeats_interleave_with_a_rotating_order(monkeypatch):
    """The order of the runs, recorded where each row's policy is attached."""
    import blockdance_lab.compare as compare
    from blockdance_lab.compare import compare_policies, run_order
    from blockdance_lab.workload import get_workload

    attached: list[object] = []
    real_attach = compare.attach

    def recording_attach(target, policy, **kwargs):
        attached.append(policy)
        return real_attach(target, policy, **kwargs)

    monkeypatch.setattr(compare, "attach", recording_attach)
    rows = [("baseline", "none"), ("dc", "deepcache"), ("fora", "fora")]
    runs = compare_policies(
        get_workload("dit-s2"), rows, seeds=[0], num_steps=2, repeats=3, warmup=False
    )
    names = {"none": "baseline", "deepcache": "dc", "fora": "fora"}
    order = [names[p] for p in attached]  # type: ignore[index]
    assert order == ["baseline", "dc", "fora", "dc", "fora", "baseline", "fora", "baseline", "dc"]
    assert [r.label for r in runs] == ["baseline", "dc", "fora"]
    assert all(len(r.latencies) == 3 for r in runs)
    assert run_order(3, 1) == [[0, 1, 2]]  # one repeat: the order given, nothing rotates
