"""Bad input fails with a blockdance error (or a pydantic field error) naming it (issue 14).

Schedule tables, policy files and the small models' weight files: each case checks the error
class and that the message names the input (the step, the entry or the file).
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

import blockdance
from blockdance.cli import main
from blockdance.errors import InvalidInputError, PolicyFileError, WeightsFileError
from blockdance_lab.evaluation.probe import load_probe
from blockdance_lab.zoo.dit.tiny import load_tiny_dit
from blockdance_lab.zoo.sd3.tiny import load_tiny_sd3
from blockdance_lab.zoo.stdit.tiny import load_tiny_stdit
from toymodel import run


# -- schedule tables ---------------------------------------------------------------------------
@pytest.mark.parametrize("entry", [1.7, True, None, [0, None], "x", "-3"], ids=repr)
def test_schedule_block_entry_must_be_an_integer_or_a_range(entry):
    with pytest.raises(ValidationError, match="schedule step 3") as info:
        blockdance.ScheduleConfig(reuse={3: entry})
    bad = entry[1] if isinstance(entry, list) else entry
    assert f"block entry {bad!r}" in str(info.value)
    assert '"0-20"' in str(info.value)  # what is expected


@pytest.mark.parametrize("step", [True, 2.5, "x"], ids=repr)
def test_schedule_step_must_be_an_integer(step):
    with pytest.raises(ValidationError, match="not a step index") as info:
        blockdance.ScheduleConfig(reuse={step: "0-2"})
    assert f"schedule step {step!r}" in str(info.value)


def test_schedule_huge_range_is_not_expanded_and_fails_at_begin(toy, registry):
    tracemalloc.start()
    try:
        config = blockdance.ScheduleConfig(reuse={5: "0-100000000"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"building the config took {peak} bytes"
    with blockdance.attach(toy, config, registry=registry):
        with pytest.raises(InvalidInputError) as info:
            run(toy, torch.zeros(1, 2, 16), 8)
    assert str(info.value).startswith(
        "schedule step 5 reuses blocks up to 100000000, but the model has 8 blocks (0..7)"
    )


def test_schedule_step_beyond_the_generation_is_invalid_input(toy, registry):
    with blockdance.attach(toy, "schedule", reuse={9: 2}, registry=registry, num_steps=8):
        with pytest.raises(InvalidInputError, match="schedule lists step 9, but the generation"):
            run(toy, torch.zeros(1, 2, 16), 8)


def test_schedule_round_trips_through_json_in_compact_form(tmp_path):
    config = blockdance.ScheduleConfig(reuse={"3": [0, "2-4", 5], 7: ["0-10", "11-20", 25]})
    assert config.reuse == {3: (0, 2, 3, 4, 5), 7: (*range(21), 25)}
    path = tmp_path / "sched.json"
    path.write_text(config.model_dump_json())
    assert json.loads(path.read_text())["reuse"] == {"3": [0, "2-5"], "7": ["0-20", 25]}
    assert blockdance.load_policy_config(path) == config
    assert blockdance.ScheduleConfig.model_validate(config.model_dump()) == config


# -- policy files ------------------------------------------------------------------------------
@pytest.fixture
def yaml_policy(tmp_path: Path) -> Path:
    path = tmp_path / "fast.yaml"
    path.write_text("kind: blockdance\nN: 3\n")
    return path


def test_yaml_policy_file_is_refused_as_not_json(yaml_policy):
    with pytest.raises(PolicyFileError, match="only JSON policy files") as info:
        blockdance.load_policy_config(yaml_policy)
    assert str(yaml_policy) in str(info.value) and "'.yaml'" in str(info.value)


def test_yaml_policy_path_given_to_attach_is_not_an_unknown_kind(yaml_policy, registry):
    with pytest.raises(PolicyFileError, match="only JSON policy files") as info:
        registry.make_policy(str(yaml_policy))
    assert str(yaml_policy) in str(info.value)


@pytest.mark.parametrize("name", ["configs/fast.json", "fast.toml"])
def test_missing_policy_path_is_named(name, registry):
    with pytest.raises(PolicyFileError, match="policy configuration file not found") as info:
        registry.make_policy(name)
    assert isinstance(info.value, FileNotFoundError)  # what callers caught before
    assert name in str(info.value) and "or a registered policy kind: blockdance" in str(info.value)


def test_malformed_json_policy_file_names_file_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"kind": "blockdance",\n "N": 2,}\n')
    with pytest.raises(PolicyFileError, match="is not valid JSON") as info:
        blockdance.load_policy_config(path)
    assert str(path) in str(info.value) and "line 2, column 9" in str(info.value)


def test_policy_file_that_is_not_an_object(tmp_path):
    path = tmp_path / "list.json"
    path.write_text('[{"kind": "blockdance"}]')
    with pytest.raises(PolicyFileError, match="holds a JSON array") as info:
        blockdance.load_policy_config(path)
    assert str(path) in str(info.value)


def test_bench_cli_prints_a_bad_policy_file_as_one_line(yaml_policy, tmp_path, capsys):
    args = ["bench", "--workload", "dit-s2", "--seeds", "1", "--steps", "2", "--quiet"]
    assert main([*args, "--policy", str(yaml_policy), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "only JSON policy files" in err
    assert err.startswith("blockdance bench: error:") and str(yaml_policy) in err


def test_demo_cli_checks_policy_files_before_running(tmp_path, capsys):
    missing = tmp_path / "absent.json"
    args = ["demo", "--workload", "dit-s2", "--seeds", "1", "--steps", "2", "--repeats", "1"]
    code = main([*args, "--n", "--policy", str(missing), "--quiet", "--out", str(tmp_path)])
    assert code == 2
    captured = capsys.readouterr()
    assert "seeds" not in captured.out  # nothing ran
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err and "not found" in err


# -- weights files of the small shipped models -------------------------------------------------
LOADERS: dict[str, tuple[Callable[[Path], object], str]] = {
    "tiny-dit": (load_tiny_dit, "scripts/train_tiny_dit.py"),
    "tiny-sd3": (load_tiny_sd3, "scripts/train_tiny_sd3.py"),
    "tiny-stdit": (load_tiny_stdit, "scripts/train_tiny_stdit.py"),
    "probe": (load_probe, "scripts/train_probe.py"),
}
# a sidecar every loader reads (the probe's arch check included); the config builds nothing
# because the tensors fail first
GOOD_SIDECAR = json.dumps({"arch": "ProbeNet", "config": {}})


def _safetensors_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "valid.safetensors"
    save_file({"w": torch.zeros(4, 4, dtype=torch.float16)}, str(path))
    return path.read_bytes()


def _write(tmp_path: Path, weights: bytes | None, sidecar: str | None) -> Path:
    path = tmp_path / "model.safetensors"
    if weights is not None:
        path.write_bytes(weights)
    if sidecar is not None:
        path.with_suffix(".json").write_text(sidecar)
    return path


@pytest.mark.parametrize("loader", LOADERS)
def test_missing_weights_name_the_file_and_the_script(loader, tmp_path):
    load, script = LOADERS[loader]
    path = tmp_path / "absent.safetensors"
    with pytest.raises(WeightsFileError, match="no such file") as info:
        load(path)
    assert isinstance(info.value, FileNotFoundError)  # what callers caught before
    assert str(path) in str(info.value) and script in str(info.value)


@pytest.mark.parametrize("loader", LOADERS)
def test_truncated_weights_are_named(loader, tmp_path):
    load, script = LOADERS[loader]
    path = _write(tmp_path, _safetensors_bytes(tmp_path)[:-7], GOOD_SIDECAR)
    with pytest.raises(WeightsFileError, match="truncated or not a safetensors file") as info:
        load(path)
    assert str(path) in str(info.value) and script in str(info.value)


@pytest.mark.parametrize(
    ("case", "sidecar", "expected"),
    [
        ("missing", None, "no such file"),
        ("not-json", '{"config": {"depth": 2,}}', r"is not valid JSON \(Expecting"),
        ("no-config", json.dumps({"arch": "ProbeNet", "log": {}}), "has no 'config' entry"),
        ("list", "[1, 2]", "holds a JSON list"),
        ("bad-config", json.dumps({"arch": "ProbeNet", "config": {"nope": 1}}), "describe"),
    ],
)
@pytest.mark.parametrize("loader", LOADERS)
def test_bad_sidecar_is_named(loader, case, sidecar, expected, tmp_path):
    load, script = LOADERS[loader]
    path = _write(tmp_path, _safetensors_bytes(tmp_path), sidecar)
    with pytest.raises(WeightsFileError, match=expected) as info:
        load(path)
    assert str(path.with_suffix(".json")) in str(info.value) and script in str(info.value)
    assert isinstance(info.value, FileNotFoundError) == (case == "missing")
