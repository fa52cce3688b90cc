"""Tiny random diffusers SD3 and Flux pipelines, built offline for tests.

The transformers are the MMDiT plugin's examples (:mod:`blockdance_mmdit.examples`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    StableDiffusion3Pipeline,
)

from blockdance_mmdit.examples import DEPTH, DIM, TXT, tiny_flux, tiny_sd3
from pipeline_checks import generate, offline_pipeline, tiny_vae

__all__ = [
    "DEPTH",
    "DIM",
    "STEPS",
    "TXT",
    "flux_pipe",
    "prompt_embeds",
    "run_flux",
    "run_sd3",
    "sd3_pipe",
    "tiny_flux",
    "tiny_sd3",
]

STEPS = 10
#: The pipelines' 8 x 8 images.
SIZE = {"height": 8, "width": 8}


def latent_vae(latent_channels: int) -> AutoencoderKL:
    """A one-level VAE of 4 channels with SD3's latent shift and scale."""
    return tiny_vae(
        width=4,
        groups=1,
        latent_channels=latent_channels,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def sd3_pipe() -> StableDiffusion3Pipeline:
    encoders = [f"{part}{i}" for part in ("text_encoder", "tokenizer") for i in ("", "_2", "_3")]
    return offline_pipeline(
        StableDiffusion3Pipeline,
        encoders,
        transformer=tiny_sd3(),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=latent_vae(4),
    )


def flux_pipe() -> FluxPipeline:
    encoders = [f"{part}{i}" for part in ("text_encoder", "tokenizer") for i in ("", "_2")]
    return offline_pipeline(
        FluxPipeline,
        encoders,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=latent_vae(1),
        transformer=tiny_flux(),
    )


def prompt_embeds(dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A caption's and a negative caption's embeddings, as SD3 and Flux pipelines take them."""
    g = torch.Generator().manual_seed(0)
    embeds, negative = torch.randn(2, 1, TXT, 12, generator=g).to(dtype)
    pooled, negative_pooled = torch.randn(2, 1, 8, generator=g).to(dtype)
    return {
        "prompt_embeds": embeds,
        "pooled_prompt_embeds": pooled,
        "negative_prompt_embeds": negative,
        "negative_pooled_prompt_embeds": negative_pooled,
    }


def run_sd3(
    pipe: StableDiffusion3Pipeline,
    steps: int = STEPS,
    dtype: torch.dtype = torch.float32,
    **options: Any,
) -> np.ndarray:
    """One 8 x 8 generation with batched guidance; ``options`` go to the pipeline."""
    return generate(pipe, steps, **prompt_embeds(dtype), guidance_scale=4.0, **SIZE, **options)


def run_flux(
    pipe: FluxPipeline, steps: int = STEPS, dtype: torch.dtype = torch.float32, **options: Any
) -> np.ndarray:
    """One 8 x 8 generation with true CFG (a negative prompt): two transformer calls a step."""
    return generate(pipe, steps, **prompt_embeds(dtype), true_cfg_scale=2.0, **SIZE, **options)
