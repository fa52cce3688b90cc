"""The shipped BlockDance-Ada networks (lab/blockdance_lab/zoo/ada/assets): they load, decide
once per generation at step ρ, and the per-sample ones decide differently for different
samples of the demo seeds."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

import blockdance
from blockdance.policies.ada import AdaConfig, AdaPolicy, load_decider
from blockdance_lab.workload import GenerateRequest, get_workload
from blockdance_lab.zoo.ada import ASSETS, shipped_network, shipped_networks

SEEDS = tuple(range(0, 64, 4))  # demo seeds over every class and background
NETWORKS = [p for p in shipped_networks() if "-network-" in p.name]


def test_both_tiny_models_ship_a_network_and_its_static_control() -> None:
    names = {p.stem for p in shipped_networks()}
    for workload in ("dit-tiny-shapes", "sd3-tiny-shapes"):
        assert any(n.startswith(f"{workload}-network-") for n in names), names
        assert any(n.startswith(f"{workload}-static-") for n in names), names
    assert (ASSETS / "ADA_CARD.md").is_file()
    total = sum(p.stat().st_size for p in ASSETS.iterdir())
    assert total < 8 * 2**20  # the shipped weights stay small (all weights together < 30 MB)


@pytest.mark.parametrize("path", shipped_networks(), ids=lambda p: p.stem)
def test_a_shipped_network_loads_with_its_recipe(path) -> None:
    decider = load_decider(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["workload"] in path.name and meta["recipe"]["variant"] in path.name
    assert meta["minutes"] <= 40  # the CPU budget per network
    assert min(meta["train_seeds"]) >= 100_000  # disjoint from the demo seeds 0..63
    assert decider.config.num_steps == get_workload(meta["workload"]).num_steps


@functools.cache
def _generate(path: Path) -> tuple[AdaPolicy, blockdance.Handle, dict, int]:
    """Generate the demo seeds with a shipped network; how often the network ran. Cached: both
    tests below read the same generation of each network."""
    meta = json.loads(path.with_suffix(".json").read_text())
    workload = get_workload(meta["workload"])
    target = workload.build()
    rho = meta["config"]["first_step"] / meta["config"]["num_steps"]
    policy = AdaPolicy(AdaConfig(weights=path, rho=rho))
    runs: list[int] = []
    policy.decider.network.register_forward_hook(lambda *_: runs.append(1))
    with blockdance.attach(target, policy, guidance_batch=2) as handle, torch.inference_mode():
        workload.generate(target, GenerateRequest(SEEDS, workload.num_steps))
    return policy, handle, meta, len(runs)


@pytest.mark.slow
@pytest.mark.parametrize("path", NETWORKS, ids=lambda p: p.stem)
def test_a_shipped_network_decides_once_at_rho(path: Path) -> None:
    policy, handle, meta, runs = _generate(path)
    assert runs == 1  # one decision per generation, at step ρ
    first = meta["config"]["first_step"]
    assert all(min(s, default=first) >= first for s in policy.reuse_steps_per_sample)
    # the runtime's count of skipped block calls agrees with the per-sample schedules
    blocks, boundary = len(handle.slots), meta["boundary"]
    reused = sum(len(s) for s in policy.reuse_steps_per_sample) * (boundary + 1)
    expected = reused / (len(SEEDS) * meta["config"]["num_steps"] * blocks)
    assert handle.stats.saved_fraction == pytest.approx(expected)


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["dit-tiny-shapes", "sd3-tiny-shapes"])
def test_each_model_ships_a_network_that_decides_per_sample(workload: str) -> None:
    """Some shipped networks decide one schedule for every sample (docs/ada.md); each model
    has one whose samples get different schedules."""
    found: dict[str, int] = {}
    for path in (p for p in NETWORKS if p.name.startswith(workload)):
        policy, *_ = _generate(path)
        found[path.stem] = len({tuple(s) for s in policy.reuse_steps_per_sample})
    assert max(found.values()) > 1, f"one schedule for all {len(SEEDS)} samples: {found}"


def test_an_unknown_network_names_the_shipped_ones() -> None:
    with pytest.raises(FileNotFoundError, match=r"no shipped BlockDance-Ada network.*shipped: "):
        shipped_network("dit-tiny-shapes", 123.0)
