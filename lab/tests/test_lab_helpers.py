"""The lab's shared helpers: policy entries, timing, what a workload's samples are, what a
seed asks for, and the weights format."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import blockdance
from blockdance.errors import InvalidInputError, WeightsFileError
from blockdance_lab.compare import timed
from blockdance_lab.data.shapes import CLASS_NAMES, DIRECTIONS
from blockdance_lab.policy_entries import check_policies, labelled, parse_policy_arg
from blockdance_lab.weights import read_model, write_weights
from blockdance_lab.workload import Workload
from blockdance_lab.zoo.workloads import WORKLOADS, seed_captions, seed_directions, seed_labels


def test_policy_arg_is_json_object_name_or_path():
    assert parse_policy_arg(' {"kind": "blockdance", "N": 3}') == {"kind": "blockdance", "N": 3}
    assert parse_policy_arg("fora") == "fora"
    assert parse_policy_arg("configs/mine.json") == "configs/mine.json"
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        parse_policy_arg('{"kind": ')


def test_labels_name_files_by_stem_and_mappings_by_label_or_kind():
    entries = ["fora", "out/calibrated.json", {"kind": "blockdance", "N": 2},
               {"kind": "fora", "N": 3, "label": "FORA-3"}]  # fmt: skip
    assert labelled(entries) == [
        ("fora", "fora"),
        ("calibrated", "out/calibrated.json"),
        ("blockdance N=2", {"kind": "blockdance", "N": 2}),
        ("FORA-3", {"kind": "fora", "N": 3}),  # the label is not the policy's
    ]
    brief = labelled(entries, with_options=False)
    assert [label for label, _ in brief] == ["fora", "calibrated", "blockdance", "FORA-3"]


def test_check_policies_builds_each_and_validates_external_caches():
    registry = blockdance.default_registry()
    check_policies(registry, [("a", "none"), ("b", {"kind": "diffusers:first-block-cache"})])
    with pytest.raises(blockdance.UnknownPolicyError):
        check_policies(registry, [("a", "no-such-kind")])
    with pytest.raises(ValueError, match="threshold"):
        check_policies(registry, [("a", {"kind": "diffusers:first-block-cache", "threshold": 0})])


def test_timed_returns_the_result_and_its_time_under_inference_mode():
    def run() -> bool:
        return torch.is_inference_mode_enabled()

    inside, seconds = timed(run, None)
    assert inside is True and seconds >= 0


def test_workload_samples_are_images_videos_or_neither():
    kinds = {w.name: (w.images, w.videos, w.pixels) for w in WORKLOADS}
    assert kinds["dit-tiny-shapes"] == (True, False, True)
    assert kinds["stdit-tiny-shapes"] == (False, True, True)
    assert kinds["dit-s2"] == (False, False, False)  # latents
    with pytest.raises(ValueError, match="images or videos, not both"):
        Workload("w", "", object, lambda t, r: torch.zeros(1), images=True, videos=True)


def test_a_seed_asks_for_class_background_and_direction():
    seeds = [0, 1, 17, 95, 250]
    assert seed_labels(seeds).tolist() == [0, 1, 1, 15, 10]
    assert seed_directions(seeds).tolist() == [0, 1, 2, 0, 1]
    still, moving = seed_captions(seeds), seed_captions(seeds, moving=True)
    for seed, a, b in zip(seeds, still, moving):
        color, shape = CLASS_NAMES[seed % 16].split()
        assert a.startswith(f"a {color} {shape} on a ")
        assert b == a.replace(" on a ", f" moving {DIRECTIONS[(seed + seed // 16) % 4]} on a ", 1)
    # The first 64 seeds ask for every (class, direction) pair once.
    first = range(64)
    pairs = set(zip(seed_labels(first).tolist(), seed_directions(first).tolist()))
    assert len(pairs) == 64


def test_weights_round_trip_in_fp16_with_sidecar_and_header(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    sidecar = {"config": {"in_features": 3, "out_features": 2}, "note": 1}
    path = write_weights(model, tmp_path / "m.safetensors", sidecar, metadata={"arch": "Linear"})
    assert json.loads(path.with_suffix(".json").read_text())["note"] == 1
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"arch": "Linear"}
        assert f.get_tensor("weight").dtype == torch.float16

    def build(config: dict) -> torch.nn.Linear:
        return torch.nn.Linear(**config)

    loaded = read_model(path, build, family="linear", remedy="remake it", arch=None)
    torch.testing.assert_close(loaded.weight, model.weight.half().float())
    with pytest.raises(WeightsFileError, match="expected a Conv config"):
        read_model(path, build, family="linear", remedy="remake it", arch="Conv")
    path.with_suffix(".json").write_text(json.dumps({"config": {"in_features": 3}}))
    with pytest.raises(WeightsFileError, match=r"does not describe a linear .*; remake it"):
        read_model(path, build, family="linear", remedy="remake it")
