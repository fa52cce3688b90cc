"""The DiT plugin on diffusers' DiT and PixArt-α transformers and pipelines (offline, tiny)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DiTPipeline,
    DPMSolverMultistepScheduler,
    PixArtAlphaPipeline,
)

import blockdance
from blockdance_dit.examples import DEPTH, tiny_diffusers_dit, tiny_pixart

STEPS = 10
BOUNDARY = 2  # round(21/28 * 4) - 1


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=16,
    ).eval()


@pytest.mark.parametrize("arch", ["diffusers-dit", "pixart-alpha"])
def test_spec_example_is_matched_with_every_block(arch):
    """The contract itself runs on the example in tests/test_architecture_contract.py."""
    example = blockdance.default_registry().architecture(arch).example
    assert example is not None
    with blockdance.attach(example().build(), "none", num_steps=1) as handle:
        assert handle.architecture.name == arch
        assert len(handle.slots) == DEPTH


def dit_pipe() -> DiTPipeline:
    return DiTPipeline(transformer=tiny_diffusers_dit(), vae=tiny_vae(), scheduler=DDIMScheduler())


def run_dit(pipe: DiTPipeline, steps: int = STEPS, labels=(1, 2)) -> np.ndarray:
    return pipe(
        class_labels=list(labels),
        num_inference_steps=steps,
        guidance_scale=4.0,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images


def pixart_pipe() -> PixArtAlphaPipeline:
    return PixArtAlphaPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=tiny_vae(),
        transformer=tiny_pixart(),
        scheduler=DPMSolverMultistepScheduler(),
    )


def run_pixart(pipe: PixArtAlphaPipeline, steps: int = STEPS) -> np.ndarray:
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(1, 6, 12, generator=g)
    mask = torch.ones(1, 6)
    return pipe(
        prompt_embeds=embeds,
        prompt_attention_mask=mask,
        negative_prompt=None,
        negative_prompt_embeds=torch.zeros_like(embeds),
        negative_prompt_attention_mask=mask,
        num_inference_steps=steps,
        height=16,
        width=16,
        use_resolution_binning=False,
        output_type="np",
        generator=torch.Generator().manual_seed(1),
    ).images


def test_dit_pipeline_none_identity_and_blockdance_schedule():
    pipe = dit_pipe()
    ref = run_dit(pipe)
    with blockdance.attach(pipe, "none"):
        assert np.array_equal(run_dit(pipe), ref)
    with blockdance.attach(pipe, "blockdance", N=2) as handle:
        fast = run_dit(pipe)
        assert handle.stats.num_steps == STEPS  # from the pipeline call
        first = handle.stats
        run_dit(pipe, steps=STEPS, labels=(5, 6, 7))  # new generation, new batch size
        assert handle.stats is not first
    # window 25%-95% of 10 steps = steps 3..9; N=2 reuses 4, 6, 8 (batched guidance: 1 branch)
    expected = {(s, b) for s in (4, 6, 8) for b in range(BOUNDARY + 1)}
    assert first.reused_pairs() == expected
    assert first.branches == 1
    assert not np.array_equal(fast, ref)
    assert np.abs(fast - ref).max() < 0.5
    assert "forward" not in vars(pipe.transformer)
    assert "set_timesteps" not in vars(pipe.scheduler)


def test_pixart_pipeline_offline_uses_pixart_window():
    pipe = pixart_pipe()
    ref = run_pixart(pipe)
    with blockdance.attach(pipe, "none"):
        assert np.array_equal(run_pixart(pipe), ref)
    with blockdance.attach(pipe, "blockdance", N=2) as handle:
        assert handle.architecture.name == "pixart-alpha"
        run_pixart(pipe)
    # PixArt-α window 40%-95% of 10 steps = steps 4..9; N=2 reuses 5, 7, 9
    expected = {(s, b) for s in (5, 7, 9) for b in range(BOUNDARY + 1)}
    assert handle.stats.reused_pairs() == expected
    assert handle.stats.num_steps == STEPS
