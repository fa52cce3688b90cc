"""Tiny seeded instances of the MMDiT plugin's architectures, for the contract checks.

Each ``tiny_*`` builder and its ``*_call`` are the ``example`` of one spec in
:mod:`blockdance_mmdit.plugin`, which imports this module (and diffusers) only when an
example is asked for. The models keep diffusers' random initialisation (no adaLN-Zero
there), are in eval mode, and have 4 blocks of width 16 (2 heads of 8). Every ``call``
draws its inputs from a generator seeded by ``t`` (and the guidance branch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel
from diffusers.models.transformers.transformer_hidream_image import HiDreamImageTransformer2DModel
from diffusers.models.transformers.transformer_sd3 import SD3Transformer2DModel
from torch import nn

from blockdance.testing import seeded_model

DEPTH = 4  # SD3: 4 joint blocks; Flux and HiDream: 2 double-stream + 2 single-stream blocks
TXT = 6  # text tokens (SD3, Flux)
DIM = 16  # token width (2 heads x 8)
#: HiDream's text: T5 tokens, and tokens per Llama layer (one layer per block).
HIDREAM_TEXT = (5, 3)
#: What every tiny MMDiT shares: tokens of width DIM (2 heads of 8), latents of 4 channels.
WIDTH: dict[str, Any] = {"num_attention_heads": 2, "attention_head_dim": 8, "in_channels": 4}
#: SD3 and Flux: patch 1, text tokens of width 12 and a pooled text vector of width 8.
SD3_FLUX: dict[str, Any] = {
    **WIDTH,
    "patch_size": 1,
    "joint_attention_dim": 12,
    "pooled_projection_dim": 8,
}


def tiny_sd3() -> SD3Transformer2DModel:
    """An SD3 transformer of 4 joint blocks on 8 x 8 latents (64 tokens), text width 12."""
    return seeded_model(
        SD3Transformer2DModel,
        **SD3_FLUX,
        sample_size=8,
        num_layers=DEPTH,
        caption_projection_dim=DIM,
        out_channels=4,
        pos_embed_max_size=8,
    )


def tiny_flux() -> FluxTransformer2DModel:
    """A Flux transformer of 2 double- and 2 single-stream blocks, packed latents of 4 channels."""
    return seeded_model(
        FluxTransformer2DModel,
        **SD3_FLUX,
        num_layers=2,
        num_single_layers=2,
        axes_dims_rope=(2, 2, 4),
    )


def tiny_hidream() -> HiDreamImageTransformer2DModel:
    """A HiDream-I1 transformer of 2 double- and 2 single-stream blocks, patch 2, MoE kept.

    Text: T5 width 12, Llama width 10 with one Llama layer per block (``llama_layers``
    0..3); RoPE axes (4, 2, 2) fill the head width of 8.
    """
    return seeded_model(
        HiDreamImageTransformer2DModel,
        **WIDTH,
        patch_size=2,
        num_layers=2,
        num_single_layers=2,
        caption_channels=[12, 10],
        text_emb_dim=8,
        num_routed_experts=4,
        num_activated_experts=2,
        axes_dims_rope=(4, 2, 2),
        max_resolution=(8, 8),
        llama_layers=list(range(DEPTH)),
    )


def branches_call(
    model: nn.Module, t: int, branches: int, inputs: Callable[[torch.Generator], dict[str, Any]]
) -> torch.Tensor:
    """One step: ``branches`` separate calls (e.g. cond, uncond), their outputs concatenated.

    Branch ``b`` calls ``model(**inputs(g)).sample`` with ``g`` seeded by ``t + 1000 * b``.
    """
    outs = [
        model(**inputs(torch.Generator().manual_seed(t + 1000 * b))).sample for b in range(branches)
    ]
    return torch.cat(outs)


def _text(g: torch.Generator) -> dict[str, torch.Tensor]:
    """SD3's and Flux's text inputs: tokens (N, T_txt, C_txt) and the pooled vector (N, 8)."""
    return {
        "encoder_hidden_states": torch.randn(2, TXT, 12, generator=g),
        "pooled_projections": torch.randn(2, 8, generator=g),
    }


def sd3_call(model: nn.Module, t: int, branches: int = 1) -> torch.Tensor:
    """One step: ``branches`` separate calls (e.g. cond, uncond) of batch 2 at timestep t."""

    def inputs(g: torch.Generator) -> dict[str, Any]:
        latents = torch.randn(2, 4, 8, 8, generator=g)  # (N, C, H, W)
        return {"hidden_states": latents, **_text(g), "timestep": torch.full((2,), float(t))}

    return branches_call(model, t, branches, inputs)


def image_ids(h: int, w: int) -> torch.Tensor:
    """Flux's position ids of an ``h`` x ``w`` grid of packed latents: (h * w, 3)."""
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)  # (T_img, 3)


def flux_call(model: nn.Module, t: int, branches: int = 1) -> torch.Tensor:
    """Like :func:`sd3_call`; Flux takes packed latents and the timestep divided by 1000."""

    def inputs(g: torch.Generator) -> dict[str, Any]:
        return {
            "hidden_states": torch.randn(2, 16, 4, generator=g),  # (N, T_img, C)
            **_text(g),
            "timestep": torch.full((2,), t / 1000),
            "img_ids": image_ids(4, 4),
            "txt_ids": torch.zeros(TXT, 3),
        }

    return branches_call(model, t, branches, inputs)


def hidream_call(model: nn.Module, t: int, branches: int = 1) -> torch.Tensor:
    """Like :func:`sd3_call`, with HiDream's inputs as ``HiDreamImagePipeline`` passes them.

    The Llama states are one tensor stacking a layer per block, (DEPTH, N, T_llama, 10);
    latents (N, 4, 8, 8) make 16 image tokens.
    """
    t5_len, llama_len = HIDREAM_TEXT

    def inputs(g: torch.Generator) -> dict[str, Any]:
        return {
            "hidden_states": torch.randn(2, 4, 8, 8, generator=g),  # (N, C, H, W)
            "timesteps": torch.full((2,), float(t)),
            "encoder_hidden_states_t5": torch.randn(2, t5_len, 12, generator=g),
            "encoder_hidden_states_llama3": torch.randn(DEPTH, 2, llama_len, 10, generator=g),
            "pooled_embeds": torch.randn(2, 8, generator=g),
        }

    return branches_call(model, t, branches, inputs)
