"""Tiny seeded instances of the DiT plugin's architectures, for the contract checks.

Each ``tiny_*`` builder and its ``*_call`` are the ``example`` of one spec in
:mod:`blockdance_dit.plugin`, which imports this module only when an example is asked for
(it imports timm and diffusers).
The models are small (4-8 blocks of width 16-32), in eval mode, and their blocks matter:
the reference DiT's adaLN-Zero layers are perturbed, the diffusers models keep diffusers'
random initialisation. Every ``call`` draws its inputs from a generator seeded by ``t``.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.embeddings import get_2d_rotary_pos_embed
from diffusers.models.transformers.dit_transformer_2d import DiTTransformer2DModel
from diffusers.models.transformers.hunyuan_transformer_2d import HunyuanDiT2DModel
from diffusers.models.transformers.pixart_transformer_2d import PixArtTransformer2DModel
from torch import nn

from blockdance.testing import seeded_model
from blockdance_dit.model import DiT

#: Blocks of the tiny diffusers DiT and PixArt-α (the reference DiT has 8).
DEPTH = 4
#: Blocks of the tiny HunyuanDiT: blocks 0 and 1 feed long skips into blocks 5 and 4.
HUNYUAN_DEPTH = 6
#: Text tokens of the tiny HunyuanDiT: CLIP/BERT and T5.
HUNYUAN_TEXT = (4, 6)
#: The tiny diffusers DiT's and PixArt-α's shared shape: 4 blocks of width 16 (2 heads of 8)
#: on 8 x 8 latents of 4 channels (16 tokens of patch 2), learnt sigma.
DIFFUSERS_TINY: dict[str, Any] = {
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "in_channels": 4,
    "out_channels": 8,
    "num_layers": DEPTH,
    "sample_size": 8,
    "patch_size": 2,
    "norm_num_groups": 8,
}


def tiny_reference_dit() -> DiT:
    """A reference DiT of 8 blocks of width 32 on 8 x 8 latents (16 tokens), perturbed."""
    model = seeded_model(
        DiT,
        input_size=8,
        patch_size=2,
        in_channels=4,
        hidden_size=32,
        depth=8,
        num_heads=2,
        num_classes=10,
        learn_sigma=True,
    )
    # adaLN-Zero makes a fresh DiT an identity map; perturb so blocks matter
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def reference_dit_call(model: nn.Module, t: int) -> torch.Tensor:
    """``model(x, t, y)`` on a batch of 2 latents (N, 4, 8, 8), classes 1 and 7."""
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(t))  # (N, C, H, W)
    return model(x, torch.full((2,), t), torch.tensor([1, 7]))


def tiny_diffusers_dit() -> DiTTransformer2DModel:
    """A class-conditional diffusers DiT of :data:`DIFFUSERS_TINY`'s shape."""
    return seeded_model(DiTTransformer2DModel, **DIFFUSERS_TINY, num_embeds_ada_norm=1000)


def diffusers_dit_call(model: nn.Module, t: int) -> torch.Tensor:
    """A class-conditional call on a batch of 2 latents (N, 4, 8, 8)."""
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(t))  # (N, C, H, W)
    return model(x, timestep=torch.tensor([t, t]), class_labels=torch.tensor([1, 3])).sample


def tiny_pixart() -> PixArtTransformer2DModel:
    """A PixArt-α transformer of :data:`DIFFUSERS_TINY`'s shape, captions of width 12."""
    return seeded_model(
        PixArtTransformer2DModel,
        **DIFFUSERS_TINY,
        cross_attention_dim=16,
        caption_channels=12,
        use_additional_conditions=False,
    )


def pixart_call(model: nn.Module, t: int) -> torch.Tensor:
    """A caption-conditioned call: latents (N, 4, 8, 8), T5-like captions (N, 6, 12)."""
    g = torch.Generator().manual_seed(t)
    x = torch.randn(2, 4, 8, 8, generator=g)  # (N, C, H, W)
    caption = torch.randn(2, 6, 12, generator=g)  # (N, T_txt, C_txt)
    return model(
        x,
        encoder_hidden_states=caption,
        timestep=torch.tensor([t, t]),
        added_cond_kwargs={"resolution": None, "aspect_ratio": None},
    ).sample


def tiny_hunyuan_dit() -> HunyuanDiT2DModel:
    """A HunyuanDiT of 6 blocks of width 16 (2 heads of 8), patch 2, learnt sigma.

    Its forward keeps the outputs of blocks 0 and 1 on the long-skip list that blocks 5 and
    4 pop; blocks 2 and 3 are the middle. Text: 4 CLIP/BERT tokens of width 16 and 6 T5
    tokens of width 16 (the attention pool needs a multiple of 8).
    """
    return seeded_model(
        HunyuanDiT2DModel,
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        patch_size=2,
        sample_size=8,
        hidden_size=16,
        num_layers=HUNYUAN_DEPTH,
        cross_attention_dim=16,
        cross_attention_dim_t5=16,
        pooled_projection_dim=8,
        text_len=HUNYUAN_TEXT[0],
        text_len_t5=HUNYUAN_TEXT[1],
    )


def hunyuan_rotary(model: nn.Module, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The image RoPE ``HunyuanDiTPipeline`` builds for a square grid of ``grid`` patches a side.

    Returns:
        ``(cos, sin)``, each (grid * grid, head_dim).
    """
    config: Any = model.config
    base = 512 // 8 // config.patch_size  # the pipeline's reference grid side
    return get_2d_rotary_pos_embed(config.attention_head_dim, ((0, 0), (base, base)), (grid, grid))


def hunyuan_dit_call(model: nn.Module, t: int) -> torch.Tensor:
    """A call as ``HunyuanDiTPipeline`` makes it, on a batch of 2 latents (N, 4, 8, 8).

    The first sample's last CLIP token and last two T5 tokens are padding.
    """
    g = torch.Generator().manual_seed(t)
    clip_len, t5_len = HUNYUAN_TEXT
    mask, mask_t5 = torch.ones(2, clip_len), torch.ones(2, t5_len)
    mask[0, -1:] = 0
    mask_t5[0, -2:] = 0
    return model(
        torch.randn(2, 4, 8, 8, generator=g),  # (N, C, H, W)
        torch.full((2,), float(t)),
        encoder_hidden_states=torch.randn(2, clip_len, 16, generator=g),  # (N, T_clip, C)
        text_embedding_mask=mask,
        encoder_hidden_states_t5=torch.randn(2, t5_len, 16, generator=g),  # (N, T_t5, C_t5)
        text_embedding_mask_t5=mask_t5,
        image_meta_size=torch.tensor([[64.0, 64, 64, 64, 0, 0]]).repeat(2, 1),  # (N, 6)
        style=torch.zeros(2, dtype=torch.long),
        image_rotary_emb=hunyuan_rotary(model, grid=4),
    ).sample
