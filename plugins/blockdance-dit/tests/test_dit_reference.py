"""The DiT plugin on the reference DiT: identity, schedules, guidance branches, samplers."""

from __future__ import annotations

import pytest
import torch

import blockdance
from blockdance_dit.examples import tiny_reference_dit as tiny_dit
from blockdance_lab.workload import GenerateRequest
from blockdance_lab.zoo.dit.sampling import make_scheduler
from blockdance_lab.zoo.dit.workloads import DiTSampler

DEPTH = 8
BOUNDARY = 5


def test_spec_example_has_the_depth_these_tests_assume():
    """The contract itself runs on the example in tests/test_architecture_contract.py."""
    example = blockdance.default_registry().architecture("dit").example
    assert example is not None
    assert len(example().build().blocks) == DEPTH


@pytest.mark.parametrize("scheduler", ["ddim", "dpm-solver"])
@pytest.mark.parametrize("cfg_mode", ["batched", "separate"])
def test_sampler_none_identity_and_blockdance(scheduler, cfg_mode):
    steps = 12
    sampler = DiTSampler(tiny_dit(), make_scheduler(scheduler))
    request = GenerateRequest(seeds=(0, 1, 2), num_steps=steps)

    def sample():
        from blockdance_lab.zoo.dit.sampling import sample_dit

        noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        return sample_dit(
            sampler.transformer,
            [0, 1, 2],
            scheduler=sampler.scheduler,
            num_inference_steps=steps,
            latents=noise,
            cfg_mode=cfg_mode,
        )

    ref = sample()
    with blockdance.attach(sampler, "none"):
        assert torch.equal(sample(), ref)
    with blockdance.attach(sampler, "blockdance", N=2) as handle:
        fast = sample()
    stats = handle.stats
    assert stats.num_steps == steps  # learnt from scheduler.set_timesteps
    assert stats.branches == (2 if cfg_mode == "separate" else 1)
    # window 25%-95% of 12 steps = steps 3..11; N=2 reuses 4, 6, 8, 10
    expected = {(s, b) for s in (4, 6, 8, 10) for b in range(BOUNDARY + 1)}
    for branch in range(stats.branches):
        assert stats.reused_pairs(branch) == expected
    assert not torch.equal(fast, ref)
    rel = (fast - ref).norm() / ref.norm()
    assert rel < 0.5
    del request


def test_separate_guidance_equals_batched_under_blockdance():
    """Each guidance branch keeps its own cache, so separate calls match one batched call."""
    outs = {}
    for mode in ("batched", "separate"):
        sampler = DiTSampler(tiny_dit(), make_scheduler("ddim"))
        noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
        from blockdance_lab.zoo.dit.sampling import sample_dit

        with blockdance.attach(sampler, "blockdance", N=3):
            outs[mode] = sample_dit(
                sampler.transformer,
                [4, 5],
                scheduler=sampler.scheduler,
                num_inference_steps=10,
                latents=noise,
                cfg_mode=mode,
            )
    torch.testing.assert_close(outs["batched"], outs["separate"], rtol=1e-4, atol=1e-4)
