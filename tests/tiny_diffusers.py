"""Tiny random diffusers SD3 and Flux pipelines, built offline for tests.

The transformers are the MMDiT plugin's examples (:mod:`blockdance_mmdit.examples`).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    StableDiffusion3Pipeline,
)

from blockdance_mmdit.examples import DEPTH, DIM, TXT, tiny_flux, tiny_sd3

__all__ = [
    "DEPTH",
    "DIM",
    "STEPS",
    "TXT",
    "flux_pipe",
    "run_flux",
    "run_sd3",
    "sd3_pipe",
    "tiny_flux",
    "tiny_sd3",
    "tiny_vae",
]

STEPS = 10


def tiny_vae(latent_channels: int) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=1,
        sample_size=8,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    ).eval()


def sd3_pipe() -> StableDiffusion3Pipeline:
    return StableDiffusion3Pipeline(
        transformer=tiny_sd3(),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=tiny_vae(4),
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        text_encoder_3=None,
        tokenizer_3=None,
    )


def run_sd3(pipe: StableDiffusion3Pipeline, steps: int = STEPS) -> np.ndarray:
    g = torch.Generator().manual_seed(0)
    embeds, negative = torch.randn(2, 1, TXT, 12, generator=g)
    pooled, negative_pooled = torch.randn(2, 1, 8, generator=g)
    return pipe(
        prompt_embeds=embeds,
        pooled_prompt_embeds=pooled,
        negative_prompt_embeds=negative,
        negative_pooled_prompt_embeds=negative_pooled,
        guidance_scale=4.0,
        num_inference_steps=steps,
        height=8,
        width=8,
        output_type="np",
        generator=torch.Generator().manual_seed(1),
    ).images


def flux_pipe() -> FluxPipeline:
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=tiny_vae(1),
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=tiny_flux(),
    )


def run_flux(pipe: FluxPipeline, steps: int = STEPS) -> np.ndarray:
    g = torch.Generator().manual_seed(0)
    embeds, negative = torch.randn(2, 1, TXT, 12, generator=g)
    pooled, negative_pooled = torch.randn(2, 1, 8, generator=g)
    return pipe(
        prompt_embeds=embeds,
        pooled_prompt_embeds=pooled,
        negative_prompt_embeds=negative,  # true CFG: two transformer calls per step
        negative_pooled_prompt_embeds=negative_pooled,
        true_cfg_scale=2.0,
        num_inference_steps=steps,
        height=8,
        width=8,
        output_type="np",
        generator=torch.Generator().manual_seed(1),
    ).images
