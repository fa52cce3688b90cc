"""Tiny random diffusers SD3 and Flux transformers and pipelines, built offline for tests."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)

STEPS = 10
DEPTH = 4  # SD3: 4 joint blocks; Flux: 2 double-stream + 2 single-stream blocks
TXT = 6  # text tokens
DIM = 16  # token width (2 heads x 8)


def tiny_sd3() -> SD3Transformer2DModel:
    torch.manual_seed(0)
    return SD3Transformer2DModel(
        sample_size=8,
        patch_size=1,
        in_channels=4,
        num_layers=DEPTH,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=12,
        caption_projection_dim=DIM,
        pooled_projection_dim=8,
        out_channels=4,
        pos_embed_max_size=8,
    ).eval()


def tiny_flux() -> FluxTransformer2DModel:
    torch.manual_seed(0)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=12,
        pooled_projection_dim=8,
        axes_dims_rope=(2, 2, 4),
    ).eval()


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
