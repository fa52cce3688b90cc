"""Tiny seeded instances of the DiT plugin's architectures, for the contract checks.

Each ``*_example()`` is the ``example`` of one spec in :mod:`blockdance_dit.plugin`, which
imports this module only when an example is asked for (it imports timm and diffusers).
The models are small (4-8 blocks of width 16-32), in eval mode, and their blocks matter:
the reference DiT's adaLN-Zero layers are perturbed, the diffusers models keep diffusers'
random initialisation. Every ``call`` draws its inputs from a generator seeded by ``t``.
"""

from __future__ import annotations

import torch
from diffusers.models.transformers.dit_transformer_2d import DiTTransformer2DModel
from diffusers.models.transformers.pixart_transformer_2d import PixArtTransformer2DModel
from torch import nn

from blockdance import ArchitectureExample
from blockdance_dit.model import DiT

#: Blocks of the tiny diffusers DiT and PixArt-α (the reference DiT has 8).
DEPTH = 4


def tiny_reference_dit() -> DiT:
    """A reference DiT of 8 blocks of width 32 on 8 x 8 latents (16 tokens), perturbed."""
    torch.manual_seed(0)
    model = DiT(
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
    return model.eval()


def reference_dit_call(model: nn.Module, t: int) -> torch.Tensor:
    """``model(x, t, y)`` on a batch of 2 latents (N, 4, 8, 8), classes 1 and 7."""
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(t))  # (N, C, H, W)
    return model(x, torch.full((2,), t), torch.tensor([1, 7]))


def tiny_diffusers_dit() -> DiTTransformer2DModel:
    """A diffusers DiT of 4 blocks of width 16 on 8 x 8 latents (16 tokens)."""
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


def diffusers_dit_call(model: nn.Module, t: int) -> torch.Tensor:
    """A class-conditional call on a batch of 2 latents (N, 4, 8, 8)."""
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(t))  # (N, C, H, W)
    return model(x, timestep=torch.tensor([t, t]), class_labels=torch.tensor([1, 3])).sample


def tiny_pixart() -> PixArtTransformer2DModel:
    """A PixArt-α transformer of 4 blocks of width 16, captions of width 12."""
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


def reference_dit_example() -> ArchitectureExample:
    """The ``dit`` spec's example."""
    return ArchitectureExample(build=tiny_reference_dit, call=reference_dit_call)


def diffusers_dit_example() -> ArchitectureExample:
    """The ``diffusers-dit`` spec's example."""
    return ArchitectureExample(build=tiny_diffusers_dit, call=diffusers_dit_call)


def pixart_example() -> ArchitectureExample:
    """The ``pixart-alpha`` spec's example."""
    return ArchitectureExample(build=tiny_pixart, call=pixart_call)
