"""The ``blockdance-ada`` policy: options, files, per-sample decisions made once at step ρ.

Decision networks here have hand-set weights: every weight zero but the direct
condition -> logits path, so each sample's cache steps are chosen by its condition and written
out in the test. The batch's output is compared with each sample generated alone under a
per-batch policy that reuses the same steps, and the rows the structural blocks ran on are
counted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from torch import nn

import blockdance
from blockdance import GenerationError, PolicyConfig
from blockdance.errors import (
    CheckpointMismatchError,
    InvalidInputError,
    WeightsFileError,
    WeightsFileNotFoundError,
)
from blockdance.policies.ada import AdaConfig, AdaPolicy, DeciderConfig, build_decider
from blockdance.policies.step_set import StepSetPolicy
from blockdance.policy import GenerationInfo
from test_per_sample import build, count_rows, dit_call, null_of, registry, sample

STEPS = 6
FIRST = 3  # round(0.5 * 6): steps 0..2 compute, the network decides steps 3, 4, 5
BOUNDARY = 4  # blocks 0..4 of the tiny DiT's 8 are reused on a reuse step
#: Cache-step logits per class of the tiny DiT (10 classes, null class 10), steps 3, 4, 5.
CLASS_LOGITS = {1: (8.0, -8.0, -8.0), 7: (-8.0, 8.0, -8.0), 3: (8.0, 8.0, 8.0)}
# build("dit") draws labels [1, 7, 3, 1]: each sample's reuse steps follow its class
DIT_REUSE = [{4, 5}, {3, 5}, set(), {4, 5}]


# -- decision-network files with hand-set weights ---------------------------------------------
def dit_net_config(**changes: Any) -> DeciderConfig:
    base: dict[str, Any] = {
        "kind": "network",
        "num_steps": STEPS,
        "first_step": FIRST,
        "condition": "classes",
        "condition_size": 11,
        "in_channels": 4,
        "input_size": (8, 8),
        "patch_size": 2,
        "dim": 8,
        "depth": 3,
        "heads": 2,
    }
    return DeciderConfig(**{**base, **changes})


def write_net(
    path: Path,
    cfg: DeciderConfig,
    setup: Callable[[nn.Module], None] = lambda net: None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """A network for ``cfg`` with every weight zero, then ``setup``; and its sidecar."""
    net = build_decider(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        setup(net)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    sidecar = {"arch": "blockdance-ada", "config": cfg.to_dict(), **(meta or {})}
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


def class_rows(net: nn.Module) -> None:
    for label, logits in CLASS_LOGITS.items():
        net.cond_logits.weight[label] = torch.tensor(logits)


@pytest.fixture
def dit_net(tmp_path: Path) -> Path:
    return write_net(tmp_path / "ada.safetensors", dit_net_config(), class_rows)


def ada(weights: Path, **options: Any) -> AdaPolicy:
    return AdaPolicy(AdaConfig(weights=weights, rho=0.5, boundary=BOUNDARY, **options))


# -- a per-batch reference: the same reuse steps for the whole (one-sample) batch -------------
class FixedStepsConfig(PolicyConfig):
    kind: Literal["fixed-steps"] = "fixed-steps"
    reuse: frozenset[int]
    boundary: int


class FixedSteps(StepSetPolicy[FixedStepsConfig]):
    config_class: ClassVar[type[PolicyConfig]] = FixedStepsConfig

    def plan_steps(self, info: GenerationInfo, num_steps: int) -> tuple[None, frozenset[int]]:
        return None, self.config.reuse


def alone(
    name: str, guided: bool, reuse: Sequence[set[int]], boundary: int
) -> tuple[torch.Tensor, list[float]]:
    """Each sample generated alone under a per-batch policy reusing its steps."""
    model, call, x, cond, _, _ = build(name)
    outs, reused = [], []
    for i, steps in enumerate(reuse):
        policy = FixedSteps(FixedStepsConfig(reuse=frozenset(steps), boundary=boundary))
        with blockdance.attach(model, policy, registry=registry(), num_steps=STEPS) as h:
            rows = cond[i : i + 1] if isinstance(cond, torch.Tensor) else pick(cond, i)
            outs.append(sample(model, call, x[i : i + 1], rows, name, guided))
            reused.append(h.stats.reused_blocks)
    return torch.cat(outs), reused


def pick(cond: Any, i: int) -> Any:
    return tuple(c[i : i + 1] for c in cond)


# -- options ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"rho": 0.0}, "rho"),
        ({"rho": 1.0}, "rho"),
        ({"threshold": 1.5}, "threshold"),
        ({"boundary": -1}, "boundary"),
        ({"window": (0.1, 0.9)}, "window"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        AdaConfig(weights=tmp_path / "x.safetensors", **options)


def test_weights_are_required() -> None:
    with pytest.raises(ValidationError, match="weights"):
        AdaConfig()  # type: ignore[call-arg]


def test_the_kind_is_registered_with_its_options() -> None:
    config = blockdance.list_policies()["blockdance-ada"]
    assert config is AdaConfig
    assert {"weights", "rho", "boundary", "threshold"} == set(config.model_fields) - {"kind"}


# -- per-sample decisions ---------------------------------------------------------------------
@pytest.mark.parametrize("guided", [False, True], ids=["one-row", "batched-guidance"])
def test_each_sample_reuses_the_steps_its_network_chose(dit_net: Path, guided: bool) -> None:
    model, call, x, cond, blocks, boundary = build("dit")
    assert boundary == BOUNDARY and cond.tolist() == [1, 7, 3, 1]
    counted = count_rows(blocks)
    policy = ada(dit_net)
    copies = 2 if guided else 1
    with blockdance.attach(
        model, policy, registry=registry(), num_steps=STEPS, guidance_batch=copies
    ) as h:
        together = sample(model, call, x, cond, "dit", guided)
        stats = h.stats
    assert policy.reuse_steps_per_sample == [sorted(s) for s in DIT_REUSE]
    assert policy.cache_mask is not None and policy.cache_mask.shape == (4, STEPS - FIRST)
    # the structural blocks ran only on the rows of the samples that computed
    computing = sum(STEPS - len(s) for s in DIT_REUSE)
    assert counted[: BOUNDARY + 1] == [copies * computing] * (BOUNDARY + 1)
    assert counted[BOUNDARY + 1 :] == [copies * 4 * STEPS] * (len(blocks) - BOUNDARY - 1)
    # equal to each sample alone, reusing the same steps for its whole batch
    expected, reused = alone("dit", guided, DIT_REUSE, BOUNDARY)
    torch.testing.assert_close(together, expected, rtol=1e-5, atol=1e-5)
    assert stats.reused_blocks == pytest.approx(sum(reused) / 4)


def test_two_call_guidance_follows_one_decision_per_sample(dit_net: Path) -> None:
    """Conditional and null calls per step: the decision at step ρ sums both branches'
    conditions (recorded at step ρ - 1), as batched guidance does, and both calls follow it."""
    model, call, x, cond, blocks, _ = build("dit")
    counted = count_rows(blocks)
    policy = ada(dit_net)
    with blockdance.attach(model, policy, registry=registry(), num_steps=STEPS, guidance_batch=1):
        with torch.no_grad():
            for t in torch.linspace(999, 0, STEPS).round().tolist():
                tt = torch.full((4,), t)
                call(model, x, tt, cond)
                call(model, x, tt, null_of(cond, "dit"))
    assert policy.reuse_steps_per_sample == [sorted(s) for s in DIT_REUSE]
    computing = sum(STEPS - len(s) for s in DIT_REUSE)
    assert counted[: BOUNDARY + 1] == [2 * computing] * (BOUNDARY + 1)


def test_the_copies_of_a_sample_are_summed_whatever_their_order(tmp_path: Path) -> None:
    """The null class's row adds to every sample's logits; swapping the halves changes nothing."""

    def setup(net: nn.Module) -> None:
        class_rows(net)
        net.cond_logits.weight[10] = torch.tensor([-20.0, 0.0, 0.0])  # null: step 3 reuses

    weights = write_net(tmp_path / "n.safetensors", dit_net_config(copies=2), setup)
    model, _, x, cond, _, _ = build("dit")
    decided = []
    for first_half_null in (False, True):
        policy = ada(weights)
        labels = [null_of(cond, "dit"), cond] if first_half_null else [cond, null_of(cond, "dit")]
        with blockdance.attach(
            model, policy, registry=registry(), num_steps=STEPS, guidance_batch=2
        ):
            with torch.no_grad():
                for t in torch.linspace(999, 0, STEPS).round().tolist():
                    dit_call(model, torch.cat([x, x]), torch.full((8,), t), torch.cat(labels))
        decided.append(policy.reuse_steps_per_sample)
    assert decided[0] == decided[1] == [[3, 4, 5], [3, 5], [3], [3, 4, 5]]


def test_a_vector_condition_chooses_per_sample_on_sd3(tmp_path: Path) -> None:
    """SD3's pooled text through the Linear path: sample j's pooled vector is e_j, so its
    logits are column j of the hand-set weight; the null (zero) vector adds nothing."""
    columns = torch.tensor([[8.0, -8.0, 8.0, -8.0], [-8.0, -8.0, 8.0, 8.0], [8.0, 8.0, 8.0, -8.0]])
    reuse = [{4}, {3, 4}, set(), {3, 5}]  # step 3 + row, where column j is negative

    def setup(net: nn.Module) -> None:
        net.cond_logits.weight[:, :4] = columns

    cfg = dit_net_config(condition="vector", condition_size=8, copies=2)
    weights = write_net(tmp_path / "sd3.safetensors", cfg, setup)
    model, call, x, (text, _), blocks, boundary = build("sd3")
    pooled = torch.eye(8)[:4]  # (4, 8)
    counted = count_rows(blocks)
    policy = AdaPolicy(AdaConfig(weights=weights, rho=0.5, boundary=boundary))
    with blockdance.attach(model, policy, registry=registry(), num_steps=STEPS, guidance_batch=2):
        together = sample(model, call, x, (text, pooled), "sd3", guided=True)
    assert policy.reuse_steps_per_sample == [sorted(s) for s in reuse]
    computing = sum(STEPS - len(s) for s in reuse)
    assert counted[: boundary + 1] == [2 * computing] * (boundary + 1)
    outs = []
    for i, steps in enumerate(reuse):
        fixed = FixedSteps(FixedStepsConfig(reuse=frozenset(steps), boundary=boundary))
        with blockdance.attach(model, fixed, registry=registry(), num_steps=STEPS):
            one = (text[i : i + 1], pooled[i : i + 1])
            outs.append(sample(model, call, x[i : i + 1], one, "sd3", guided=True))
    torch.testing.assert_close(together, torch.cat(outs), rtol=1e-5, atol=1e-5)


def test_the_network_decides_once_per_generation(dit_net: Path) -> None:
    model, call, x, cond, _, _ = build("dit")
    policy = ada(dit_net)
    seen: list[tuple[int, ...]] = []
    policy.decider.network.register_forward_hook(
        lambda _m, args, _o: seen.append(tuple(args[0].shape))
    )
    with blockdance.attach(model, policy, registry=registry(), num_steps=STEPS, guidance_batch=2):
        for _ in range(2):
            sample(model, call, x, cond, "dit", guided=True)
    assert seen == [(4, 4, 8, 8), (4, 4, 8, 8)]  # once per generation, one latent per sample


def test_a_static_schedule_gives_every_sample_the_same_steps(tmp_path: Path) -> None:
    def setup(net: nn.Module) -> None:
        net.logits.copy_(torch.tensor([8.0, -8.0, 8.0]))

    cfg = DeciderConfig(kind="static", num_steps=STEPS, first_step=FIRST)
    weights = write_net(tmp_path / "static.safetensors", cfg, setup)
    model, call, x, cond, blocks, _ = build("dit")
    counted = count_rows(blocks)
    policy = ada(weights)
    with blockdance.attach(model, policy, registry=registry(), num_steps=STEPS, guidance_batch=2):
        sample(model, call, x, cond, "dit", guided=True)
    assert policy.reuse_steps_per_sample == [[4]] * 4
    assert policy.probabilities is not None
    torch.testing.assert_close(policy.probabilities[0], torch.sigmoid(torch.tensor([8.0, -8, 8])))
    assert counted[0] == 2 * 4 * (STEPS - 1)  # one step reused by the whole batch


def test_threshold_moves_the_cut(tmp_path: Path) -> None:
    def setup(net: nn.Module) -> None:
        net.logits.copy_(torch.tensor([1.0, 0.0, -1.0]))  # m = 0.73, 0.5, 0.27

    cfg = DeciderConfig(kind="static", num_steps=STEPS, first_step=FIRST)
    weights = write_net(tmp_path / "static.safetensors", cfg, setup)
    model, call, x, cond, _, _ = build("dit")
    found = []
    for threshold in (0.5, 0.8, 0.2):
        policy = ada(weights, threshold=threshold)
        with blockdance.attach(
            model, policy, registry=registry(), num_steps=STEPS, guidance_batch=2
        ):
            sample(model, call, x[:1], cond[:1], "dit", guided=True)
        found.append(policy.reuse_steps_per_sample[0])
    assert found == [[5], [3, 4, 5], []]


# -- refusals ---------------------------------------------------------------------------------
def test_another_step_count_is_refused(dit_net: Path) -> None:
    model, _, x, cond, _, _ = build("dit")
    with blockdance.attach(model, ada(dit_net), registry=registry(), num_steps=8):
        with pytest.raises(InvalidInputError, match=r"generations of 6 steps.*has 8"):
            dit_call(model, x, torch.full((4,), 999.0), cond)


def test_another_rho_than_trained_is_refused(dit_net: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"rho=0.4 decides at step 2 of 6.*step 3"):
        AdaPolicy(AdaConfig(weights=dit_net, rho=0.4))


def test_unknown_guidance_batching_is_refused(dit_net: Path) -> None:
    model, call, x, cond, _, _ = build("dit")
    with blockdance.attach(model, ada(dit_net), registry=registry(), num_steps=STEPS):
        with pytest.raises(GenerationError, match="guidance_batch="):
            sample(model, call, x, cond, "dit", guided=True)


def test_other_guidance_than_trained_is_refused(tmp_path: Path) -> None:
    weights = write_net(tmp_path / "n.safetensors", dit_net_config(copies=2), class_rows)
    model, call, x, cond, _, _ = build("dit")
    policy = ada(weights)
    with blockdance.attach(model, policy, registry=registry(), num_steps=STEPS, guidance_batch=1):
        with pytest.raises(InvalidInputError, match=r"trained on 2 condition copies.*gives 1"):
            sample(model, call, x, cond, "dit", guided=False)


def test_a_latent_of_another_shape_is_refused(tmp_path: Path) -> None:
    weights = write_net(tmp_path / "n.safetensors", dit_net_config(input_size=(16, 16)))
    model, call, x, cond, _, _ = build("dit")
    with blockdance.attach(
        model, ada(weights), registry=registry(), num_steps=STEPS, guidance_batch=1
    ):
        with pytest.raises(InvalidInputError, match=r"\(4, 16, 16\).*\(4, 8, 8\)"):
            sample(model, call, x, cond, "dit", guided=False)


def test_a_missing_weights_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(WeightsFileNotFoundError, match=r"nowhere\.safetensors.*train-ada"):
        blockdance.attach(build("dit")[0], {"kind": "blockdance-ada", "weights": str(missing)})


def test_a_missing_sidecar_is_named(dit_net: Path) -> None:
    dit_net.with_suffix(".json").unlink()
    with pytest.raises(WeightsFileNotFoundError, match=r"ada\.json"):
        ada(dit_net)


def test_a_sidecar_of_something_else_is_refused(dit_net: Path) -> None:
    dit_net.with_suffix(".json").write_text(json.dumps({"arch": "tiny-dit", "config": {}}))
    with pytest.raises(WeightsFileError, match=r"ada\.json names arch 'tiny-dit'"):
        ada(dit_net)


def test_weights_that_do_not_fit_the_sidecar_name_file_and_keys(dit_net: Path) -> None:
    tensors = load_file(str(dit_net))
    tensors["head.2.weight"] = torch.zeros(5, 8)  # 5 logits where the sidecar says 3
    del tensors["pos"]
    save_file(tensors, str(dit_net))
    with pytest.raises(CheckpointMismatchError) as info:
        ada(dit_net)
    message = str(info.value)
    assert str(dit_net) in message and str(dit_net.with_suffix(".json")) in message
    assert "pos" in message and "head.2.weight: model (3, 8) vs checkpoint (5, 8)" in message


def test_a_sidecar_config_with_unknown_entries_is_refused(dit_net: Path) -> None:
    sidecar = json.loads(dit_net.with_suffix(".json").read_text())
    sidecar["config"]["layers"] = 3
    dit_net.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(WeightsFileError, match=r"unknown entries \['layers'\]"):
        ada(dit_net)


# -- memory -----------------------------------------------------------------------------------
def test_memory_counts_the_network(dit_net: Path) -> None:
    file_bytes = sum(t.numel() * 4 for t in load_file(str(dit_net)).values())  # fp32 on disk
    policy = ada(dit_net)
    assert policy.memory_bytes() == file_bytes  # nothing decided yet
    model, call, x, cond, _, _ = build("dit")
    with blockdance.attach(
        model, policy, registry=registry(), num_steps=STEPS, guidance_batch=2
    ) as h:
        sample(model, call, x, cond, "dit", guided=True)
        stats = h.stats
    assert stats.peak_policy_bytes >= file_bytes
    assert stats.peak_cache_bytes >= file_bytes + 8 * 16 * 32 * 4  # + an (8, 16, 32) fp32 state
    n_params = sum(p.numel() for p in policy.decider.network.parameters())
    assert 1_000 < n_params < 20_000  # the test's small network (dim 8)
