"""The DiT plugin on diffusers' DiT and PixArt-α transformers and pipelines (offline, tiny)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DiTPipeline,
    DiTTransformer2DModel,
    DPMSolverMultistepScheduler,
    PixArtAlphaPipeline,
    PixArtTransformer2DModel,
)

import blockdance

STEPS = 10
DEPTH = 4
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


def tiny_dit() -> DiTTransformer2DModel:
    torch.manual_seed(0)
    return DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=DEPTH,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=1000,
        norm_num_groups=8,
    ).eval()


def tiny_pixart() -> PixArtTransformer2DModel:
    torch.manual_seed(0)
    return PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=DEPTH,
        sample_size=8,
        patch_size=2,
        cross_attention_dim=16,
        caption_channels=12,
        norm_num_groups=8,
        use_additional_conditions=False,
    ).eval()


def dit_call(model, t: int):
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(t))
    return model(x, timestep=torch.tensor([t, t]), class_labels=torch.tensor([1, 3])).sample


def pixart_call(model, t: int):
    g = torch.Generator().manual_seed(t)
    x = torch.randn(2, 4, 8, 8, generator=g)
    cap = torch.randn(2, 6, 12, generator=g)
    return model(
        x,
        encoder_hidden_states=cap,
        timestep=torch.tensor([t, t]),
        added_cond_kwargs={"resolution": None, "aspect_ratio": None},
    ).sample


@pytest.mark.parametrize(
    ("build", "call", "arch"),
    [(tiny_dit, dit_call, "diffusers-dit"), (tiny_pixart, pixart_call, "pixart-alpha")],
)
def test_none_is_bit_identical_on_diffusers_models(build, call, arch):
    model = build()
    ts = [900, 700, 500, 300]
    with torch.no_grad():
        ref = [call(model, t) for t in ts]
        with blockdance.attach(model, "none", num_steps=len(ts)) as handle:
            assert handle.architecture.name == arch
            got = [call(model, t) for t in ts]
    for a, b in zip(ref, got):
        assert torch.equal(a, b)
    assert handle.stats.block_calls == len(ts) * DEPTH


def dit_pipe() -> DiTPipeline:
    return DiTPipeline(transformer=tiny_dit(), vae=tiny_vae(), scheduler=DDIMScheduler())


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
