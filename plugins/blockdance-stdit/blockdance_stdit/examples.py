"""Tiny seeded instances of the STDiT plugin's architectures, for the contract checks.

Each ``tiny_*`` builder and its ``*_call`` are the ``example`` of one spec in
:mod:`blockdance_stdit.plugin`, which imports this module (timm, diffusers) only when an
example is asked for. The models
have 4 blocks (Latte: 4 spatial + 4 temporal), are in eval mode, and their blocks matter
(the reference STDiT's zero-initialised output layers are perturbed). Every ``call`` draws
its inputs from a generator seeded by ``t``.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.transformers.latte_transformer_3d import LatteTransformer3DModel
from torch import nn

from blockdance.testing import seeded_model
from blockdance_stdit.model import STDiT

DEPTH = 4
#: The tiny reference STDiT's configuration.
TINY: dict[str, Any] = {
    "input_size": (3, 4, 4),  # 3 frames of 2 x 2 = 4 tokens
    "in_channels": 4,
    "patch_size": (1, 2, 2),
    "hidden_size": 32,
    "depth": DEPTH,
    "num_heads": 2,
    "caption_channels": 12,
    "model_max_length": 6,
}


def tiny_stdit(seed: int = 0, **overrides: Any) -> STDiT:
    """A tiny STDiT with its zero-initialised output layers perturbed, so it is not constant.

    Args:
        seed: Seed of the initialisation.
        **overrides: Changes to :data:`TINY` (``pred_sigma`` defaults to False).
    """
    model = seeded_model(STDiT, seed, **{"pred_sigma": False, **TINY, **overrides})
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(part in name for part in ("cross_attn.proj", "attn_temp.proj", "final_layer")):
                param.normal_(std=0.05)
    return model


def stdit_inputs(t: int = 500, n: int = 2) -> tuple[torch.Tensor, ...]:
    """``(x, timestep, y, mask)`` for :func:`tiny_stdit`; the first caption has 4 real tokens.

    Shapes: x (n, 4, 3, 4, 4), timestep (n,), y (n, 1, 6, 12), mask (n, 6).
    """
    g = torch.Generator().manual_seed(t)
    x = torch.randn(n, 4, 3, 4, 4, generator=g)  # (N, C, F, H, W)
    y = torch.randn(n, 1, 6, 12, generator=g)  # (N, 1, T_txt, C_txt)
    mask = torch.ones(n, 6, dtype=torch.long)
    mask[0, 4:] = 0
    return x, torch.full((n,), t), y, mask


def stdit_call(model: nn.Module, t: int) -> torch.Tensor:
    """``model(x, timestep, y, mask)`` on :func:`stdit_inputs` at ``t``."""
    return model(*stdit_inputs(t))


def tiny_latte(seed: int = 0) -> LatteTransformer3DModel:
    """Latte-1's configuration, shrunk: 4 spatial + 4 temporal blocks, 3 frames of 16 tokens."""
    return seeded_model(
        LatteTransformer3DModel,
        seed,
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=DEPTH,
        cross_attention_dim=16,
        attention_bias=True,
        sample_size=8,
        patch_size=2,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        caption_channels=12,
        video_length=3,
    )


def latte_call(model: nn.Module, t: int, **kwargs: Any) -> torch.Tensor:
    """A caption-conditioned call on 2 videos (N, 4, 3, 8, 8); ``kwargs`` go to the model."""
    g = torch.Generator().manual_seed(t)
    x = torch.randn(2, 4, 3, 8, 8, generator=g)  # (N, C, F, H, W)
    caption = torch.randn(2, 5, 12, generator=g)  # (N, T_txt, C_txt)
    timestep = torch.tensor([t, t])
    return model(x, timestep=timestep, encoder_hidden_states=caption, **kwargs).sample
