"""The MMDiT plugin on diffusers' SD3 and Flux transformers and pipelines (offline, tiny)."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from torch import nn

import blockdance
from blockdance import TensorIO
from blockdance.testing import trajectory
from blockdance_dit.examples import tiny_diffusers_dit
from blockdance_mmdit.examples import flux_call, sd3_call
from blockdance_mmdit.streams import JOINT, single_stream_io
from pipeline_checks import count_block_calls, none_then_blockdance
from tiny_diffusers import (
    DEPTH,
    DIM,
    STEPS,
    TXT,
    flux_pipe,
    run_flux,
    run_sd3,
    sd3_pipe,
    tiny_flux,
    tiny_sd3,
)

BOUNDARY = 2  # round(21/28 * 4) - 1; for Flux, single-stream block 0
# window 25%-95% of 10 steps = steps 3..9; groups of N start at 3
REUSE_STEPS = {2: (4, 6, 8), 3: (4, 5, 7, 8)}


MODELS = [
    pytest.param(tiny_sd3, sd3_call, "sd3", id="sd3"),
    pytest.param(tiny_flux, flux_call, "flux", id="flux"),
]


def expected_reuse(n: int) -> set[tuple[int, int]]:
    return {(s, b) for s in REUSE_STEPS[n] for b in range(BOUNDARY + 1)}


# -- discovery, matching, slots --------------------------------------------------------------
def test_entry_point_registers_mmdit_architectures():
    pm = blockdance.get_plugin_manager()
    assert "mmdit" in {name for name, _ in pm.list_name_plugin()}
    assert {"sd3", "flux"} <= set(blockdance.list_architectures())


def test_models_match_their_architecture_only():
    registry = blockdance.default_registry()
    assert registry.match(tiny_sd3()).name == "sd3"
    assert registry.match(tiny_flux()).name == "flux"
    dit = tiny_diffusers_dit()  # the DiT plugin's example
    assert registry.match(dit).name == "diffusers-dit"
    with pytest.raises(blockdance.UnknownArchitectureError, match="no registered architecture"):
        registry.match(nn.Linear(2, 2))
    for arch in ("sd3", "flux"):  # forcing an MMDiT spec onto a DiT says what is wrong
        with pytest.raises(TypeError, match=f"architecture '{arch}' expects"):
            blockdance.attach(dit, "none", architecture=arch, num_steps=STEPS)


@pytest.mark.parametrize(
    ("build", "call", "kinds", "names"),
    [
        (tiny_sd3, sd3_call, ["joint"] * 4, [f"transformer_blocks.{i}" for i in range(4)]),
        (
            tiny_flux,
            flux_call,
            ["joint", "joint", "single", "single"],
            [
                "transformer_blocks.0",
                "transformer_blocks.1",
                "single_transformer_blocks.0",
                "single_transformer_blocks.1",
            ],
        ),
    ],
    ids=["sd3", "flux"],
)
def test_slots_follow_execution_order_with_kinds(build, call, kinds, names):
    model = build()
    order: list[int] = []
    with blockdance.attach(model, "none", num_steps=1) as handle:
        assert [s.kind for s in handle.slots] == kinds
        assert {s.form for s in handle.slots} == {"two-stream"}  # current diffusers: no joining
        assert [s.name for s in handle.slots] == names
        for slot in handle.slots:
            slot.module.register_forward_pre_hook(lambda m, a, i=slot.index: order.append(i))
        with torch.no_grad():
            call(model, 999)
    assert order == list(range(DEPTH))


def test_single_stream_io_follows_the_block_signature():
    class Legacy(nn.Module):  # diffusers releases whose single blocks take one stream
        def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
            return hidden_states

    assert single_stream_io(Legacy()) == TensorIO()
    assert single_stream_io(tiny_flux().single_transformer_blocks[0]) is JOINT


# -- reuse (the contract itself runs in tests/test_architecture_contract.py) ------------------
@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize(("build", "call", "arch"), MODELS)
def test_blockdance_schedule_skips_real_compute(build, call, arch, n):
    model = build()
    with torch.no_grad():
        ref = [call(model, t, branches=2) for t in trajectory(STEPS)]
    counts = count_block_calls(blockdance.default_registry().architecture(arch).blocks(model))
    with blockdance.attach(model, "blockdance", N=n, num_steps=STEPS) as handle, torch.no_grad():
        got = [call(model, t, branches=2) for t in trajectory(STEPS)]
    stats = handle.stats
    assert stats.branches == 2
    for branch in (0, 1):
        assert stats.reused_pairs(branch) == expected_reuse(n)
    reused = len(REUSE_STEPS[n])
    assert counts == {i: 2 * (STEPS - reused if i <= BOUNDARY else STEPS) for i in range(DEPTH)}, (
        "reused blocks must not run"
    )
    for step, (a, b) in enumerate(zip(ref, got)):  # inputs depend on t only
        assert torch.equal(a, b) is (step not in REUSE_STEPS[n]), f"step {step}"


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize(("build", "call", "arch"), MODELS)
def test_reuse_feeds_both_cached_streams(build, call, arch, n):
    """Hand recomputation: the unhooked model with the boundary output replaced (torch hook)."""
    model = build()
    step_call = functools.partial(call, branches=2)
    boundary = blockdance.default_registry().match(model).blocks(model)[BOUNDARY].module
    kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # branch -> (text, image) output
    where = {"step": -1, "branch": 0, "image_only": False}

    def substitute(module: nn.Module, args: Any, output: Any) -> Any:
        branch = where["branch"]
        where["branch"] += 1
        if where["step"] not in REUSE_STEPS[n]:
            kept[branch] = output
            return None
        text, image = kept[branch]
        return (output[0], image) if where["image_only"] else (text, image)

    def reference(image_only: bool = False) -> list[torch.Tensor]:
        hook = boundary.register_forward_hook(substitute)
        outs = []
        with torch.no_grad():
            for step, t in enumerate(trajectory(STEPS)):
                where.update(step=step, branch=0, image_only=image_only)
                outs.append(step_call(model, t))
        hook.remove()
        return outs

    ref_image_only = reference(image_only=True)
    ref = reference()
    with blockdance.attach(model, "blockdance", N=n, num_steps=STEPS) as handle, torch.no_grad():
        got = [step_call(model, t) for t in trajectory(STEPS)]
        cache = dict(handle.runtime.cache)
    for step, (a, b) in enumerate(zip(ref, got)):
        assert torch.equal(a, b), f"step {step} differs from the hand recomputation"
    first = REUSE_STEPS[n][0]
    assert not torch.equal(ref_image_only[first], got[first]), "the text stream is not reused"
    assert set(cache) == {(0, BOUNDARY), (1, BOUNDARY)}  # one state per branch
    for branch in (0, 1):
        image, text = cache[(branch, BOUNDARY)]
        assert torch.equal(image, kept[branch][1]) and torch.equal(text, kept[branch][0])
        assert image.shape[1] == (64 if arch == "sd3" else 16) and text.shape[1] == TXT


@pytest.mark.parametrize(
    "policy",
    [
        {"kind": "fora", "N": 2},  # SD3's last block is reused: output reuse of blocks 0..last
        {"kind": "fora", "N": 2, "reuse": "residual"},  # residual over blocks 0..last
    ],
    ids=["fora-output", "fora-residual"],
)
def test_sd3_last_block_without_text_stream(policy):
    model = tiny_sd3()
    with torch.no_grad():
        ref = [sd3_call(model, t) for t in trajectory(STEPS)]
        with blockdance.attach(model, policy, num_steps=STEPS) as handle:
            got = [sd3_call(model, t) for t in trajectory(STEPS)]
    assert any(block == DEPTH - 1 for _, block in handle.stats.reused_pairs())
    assert all(torch.isfinite(g).all() for g in got)
    assert any(not torch.equal(a, b) for a, b in zip(ref, got))


# -- pipelines ------------------------------------------------------------------------------------
def _state_bytes(batch: int, image_tokens: int) -> int:
    return 4 * batch * (image_tokens + TXT) * DIM  # float32 (image, text) streams


def test_sd3_pipeline_none_identity_and_blockdance():
    pipe = sd3_pipe()

    def second_generation(handle: blockdance.Handle) -> None:
        run_sd3(pipe, steps=6)  # a new generation: step count from this call
        assert handle.stats.num_steps == 6

    runs = none_then_blockdance(pipe, run_sd3, "sd3", then=second_generation)
    stats = runs.stats
    assert stats.num_steps == STEPS  # from the pipeline call
    assert stats.branches == 1  # batched CFG: uncond and cond rows travel in one state
    assert stats.reused_pairs() == expected_reuse(2)
    assert stats.peak_cache_bytes == _state_bytes(batch=2, image_tokens=64)
    assert runs.computed == {i: STEPS - 3 if i <= BOUNDARY else STEPS for i in range(DEPTH)}


def test_flux_pipeline_true_cfg_branches_stay_apart():
    runs = none_then_blockdance(flux_pipe(), run_flux, "flux")
    stats = runs.stats
    assert stats.num_steps == STEPS
    assert stats.branches == 2  # cond and uncond calls, each with its own cache
    assert stats.reused_pairs(0) == stats.reused_pairs(1) == expected_reuse(2)
    assert stats.peak_cache_bytes == 2 * _state_bytes(batch=1, image_tokens=16)
    assert runs.computed == {i: 2 * (STEPS - 3 if i <= BOUNDARY else STEPS) for i in range(DEPTH)}
