"""BlockDance-Ada training: resumable loops reproduce the workloads, rollouts follow their
masks, and ``train-ada`` runs end to end on a tiny budget."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import blockdance
from blockdance.cli import main
from blockdance.policies.ada import AdaConfig, AdaPolicy
from blockdance_lab.ada_training import (
    AdaTrainConfig,
    RolloutConfig,
    RolloutPolicy,
    evaluate_policies,
    loop_for,
    precompute,
    rollout,
    train_ada,
)
from blockdance_lab.workload import GenerateRequest, get_workload

STEPS = 5  # rho 0.4: steps 0, 1 compute, the network decides steps 2, 3, 4
SEEDS = (100_000, 100_001)


@pytest.fixture(scope="module")
def dit():
    workload = get_workload("dit-tiny-shapes")
    return workload, workload.build()


@pytest.mark.parametrize("name", ["dit-tiny-shapes", "sd3-tiny-shapes"])
def test_a_loop_run_whole_is_the_workloads_generation(name: str) -> None:
    """Independent of the loop: the workload's own sampler gives the same images."""
    workload = get_workload(name)
    target = workload.build()
    with torch.inference_mode():
        expected = workload.generate(target, GenerateRequest(SEEDS, STEPS))
    loop = loop_for(target, STEPS)
    x, cond = loop.start(SEEDS)
    loop.begin_run(0)
    with torch.inference_mode():
        for i in range(STEPS):
            x = loop.step(x, cond, i)
    torch.testing.assert_close(loop.pixels(x), expected, rtol=1e-5, atol=1e-5)


def test_a_rollout_resumed_at_rho_follows_its_mask_per_sample(dit) -> None:
    """Rollouts resumed at step ρ - 1 with per-sample masks equal each seed generated from
    noise by the workload under the ``schedule`` policy reusing the same steps.

    Within 1e-3: the tiny DiT's batch of 2 and batch of 1 already differ by ~1e-4 at full
    compute (kernel blocking), while reusing one step more or less moves pixels by >= 0.1.
    """
    workload, target = dit
    registry = blockdance.default_registry()
    loop = loop_for(target, STEPS)
    pre = precompute(loop, SEEDS, 0.4, None, registry)
    assert pre.first_step == 2 and pre.start.shape == (2, 3, 32, 32)
    assert pre.conditions is not None and pre.conditions.tolist() == [
        [s % 16 for s in SEEDS],
        [16, 16],  # the null class: the policy reads both guidance copies
    ]
    policy = RolloutPolicy(RolloutConfig(rho=0.4))
    policy.mask = torch.tensor([[False, True, False], [True, True, False]])  # True: cache
    images, _ = rollout(loop, pre.start, pre.cond, 1, policy, registry)
    assert policy.reuse_steps_per_sample == [[2, 4], [4]]
    boundary = policy.boundary
    for i, steps in enumerate(policy.reuse_steps_per_sample):
        table = {str(s): f"0-{boundary}" for s in steps}
        with blockdance.attach(target, "schedule", reuse=table, guidance_batch=2):
            alone = workload.generate(target, GenerateRequest((SEEDS[i],), STEPS))
        torch.testing.assert_close(images[i : i + 1], alone, rtol=0, atol=1e-3)
    # all cache steps: the full-compute result
    policy.mask = None
    images, _ = rollout(loop, pre.start, pre.cond, 1, policy, registry)
    torch.testing.assert_close(images, pre.full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["network", "static"])
def test_train_ada_writes_a_network_the_policy_runs(tmp_path: Path, dit, variant: str) -> None:
    workload, target = dit
    config = AdaTrainConfig(
        variant=variant, steps=STEPS, train_seeds=4, states=2, rollouts=2, updates=2, dim=16
    )
    result = train_ada(workload, 2.0, config=config, out=tmp_path, progress=False)
    assert result.weights == tmp_path / f"dit-tiny-shapes-{variant}-lam2.safetensors"
    sidecar = json.loads(result.weights.with_suffix(".json").read_text())
    assert sidecar["train_seeds"] == [100_000, 100_001, 100_002, 100_003]
    assert sidecar["recipe"]["lam"] == 2.0 and sidecar["recipe"]["rollouts"] == 2
    assert sidecar["config"]["num_steps"] == STEPS and sidecar["config"]["first_step"] == 2
    assert sidecar["updates"] == 2 and len(sidecar["history"]["reward"]) == 2
    assert sidecar["precompute_seconds"] > 0 and sidecar["boundary"] == 5  # 8 blocks: 0..5
    if variant == "static":
        assert set(sidecar["config"]) == {"kind", "num_steps", "first_step", "copies"}
    assert result.curve is not None and result.curve.stat().st_size > 1000
    for r, c, q in zip(*(result.history[k] for k in ("reward", "C", "Q"))):
        assert r == pytest.approx(c + 2.0 * q, abs=1e-5)
    policy = AdaPolicy(AdaConfig(weights=result.weights))
    with blockdance.attach(target, policy, guidance_batch=2), torch.inference_mode():
        workload.generate(target, GenerateRequest((0, 1, 2), STEPS))
    assert policy.cache_mask is not None and policy.cache_mask.shape == (3, 3)


def test_evaluation_reports_per_sample_reuse(tmp_path: Path, dit) -> None:
    workload, _ = dit
    config = AdaTrainConfig(
        steps=STEPS, train_seeds=2, states=2, rollouts=2, updates=1, dim=16, entropy=0.01
    )
    result = train_ada(workload, 2.0, config=config, out=tmp_path, progress=False)
    assert 0 < result.history["entropy"][0] <= math.log(2) + 1e-6  # fp32
    ada = {"kind": "blockdance-ada", "weights": str(result.weights), "threshold": 1.0}
    rows = evaluate_policies(workload, [("ada", ada)], seeds=[0, 1], steps=STEPS)
    assert [r["label"] for r in rows] == ["full compute", "ada"]
    assert rows[0]["ssim"] == pytest.approx(1.0)
    # threshold 1: every decided step reuses blocks 0..5 of 8 for both samples
    assert rows[1]["reuse_steps"] == [[2, 3, 4], [2, 3, 4]]
    assert rows[1]["ideal"] == pytest.approx(3 * 6 / (STEPS * 8))


def test_a_decaying_entropy_bonus_falls_linearly_to_zero(tmp_path: Path, dit) -> None:
    workload, _ = dit
    common = dict(steps=STEPS, train_seeds=2, states=2, rollouts=2, updates=4, dim=16)
    config = AdaTrainConfig(entropy=0.02, entropy_decay=True, max_minutes=60.0, **common)
    result = train_ada(workload, 2.0, config=config, out=tmp_path, progress=False)
    # 4 updates, well inside the hour: the update count sets the pace
    assert result.history["entropy_weight"] == pytest.approx([0.02, 0.015, 0.01, 0.005])
    flat = AdaTrainConfig(entropy=0.02, **common)
    result = train_ada(workload, 2.0, config=flat, out=tmp_path, progress=False)
    assert result.history["entropy_weight"] == [0.02] * 4


@pytest.mark.parametrize("variant", ["network", "static"])
def test_a_warm_start_from_blockdance_n_reuses_its_grouping(tmp_path: Path, dit, variant) -> None:
    """Untrained (learning rates 0), the policy is BlockDance N=2 from ρ: steps 2, 4 of 5
    are cache steps and step 3 reuses, for every sample, as the runtime counts it."""
    workload, _ = dit
    config = AdaTrainConfig(
        variant=variant,
        steps=STEPS,
        train_seeds=2,
        states=2,
        rollouts=2,
        updates=1,
        dim=16,
        lr=0.0,
        schedule_lr=0.0,
        init_group=2,
        init_cache_prob=0.9,
    )
    result = train_ada(workload, 2.0, config=config, out=tmp_path, progress=False)
    assert result.history["greedy_C"] == [pytest.approx(1 / 3)]
    ada = {"kind": "blockdance-ada", "weights": str(result.weights)}
    rows = evaluate_policies(workload, [("ada", ada)], seeds=[0, 1, 2], steps=STEPS)
    assert rows[1]["reuse_steps"] == [[3], [3], [3]]
    with pytest.raises(ValueError, match="init_group=0"):
        AdaTrainConfig(init_group=0).check()


def test_another_rho_writes_another_file(tmp_path: Path, dit) -> None:
    workload, _ = dit
    config = AdaTrainConfig(
        steps=STEPS, rho=0.6, train_seeds=2, states=2, rollouts=2, updates=1, dim=16
    )
    result = train_ada(workload, 2.0, config=config, out=tmp_path, progress=False)
    assert result.weights.name == "dit-tiny-shapes-network-lam2-rho0.6.safetensors"
    assert json.loads(result.weights.with_suffix(".json").read_text())["config"]["first_step"] == 3


def test_the_command_trains_and_evaluates(tmp_path: Path, capsys) -> None:
    code = main(
        [
            "train-ada",
            "--workload",
            "dit-tiny-shapes",
            "--steps",
            str(STEPS),
            "--train-seeds",
            "2",
            "--states",
            "2",
            "--rollouts",
            "2",
            "--updates",
            "1",
            "--dim",
            "16",
            "--eval-seeds",
            "2",
            "--quiet",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "network λ=2: 1 updates" in out and "blockdance N=3" in out
    assert (tmp_path / "dit-tiny-shapes-network-lam2.safetensors").is_file()
    rows = json.loads((tmp_path / "dit-tiny-shapes-eval.json").read_text())
    assert [r["label"] for r in rows][-1] == "ada network λ=2"


def test_too_few_rollouts_are_refused() -> None:
    with pytest.raises(ValueError, match="leave-one-out"):
        AdaTrainConfig(rollouts=1).check()
