"""Class-conditional DiT (Peebles & Xie, 2023) in the facebookresearch/DiT layout.

Module and parameter names match the official checkpoints (``DiT-XL-2-256x256.pt`` and
friends) key for key, so :func:`blockdance_dit.checkpoint.load_official_state_dict` loads
them unchanged. Building blocks come from timm, as in the original.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import torch
from einops import rearrange
from timm.layers import Mlp, PatchEmbed
from timm.models.vision_transformer import Attention
from torch import nn

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "DiT",
    "DiTBlock",
    "DiT_B_2",
    "DiT_B_4",
    "DiT_B_8",
    "DiT_L_2",
    "DiT_L_4",
    "DiT_L_8",
    "DiT_S_2",
    "DiT_S_4",
    "DiT_S_8",
    "DiT_XL_2",
    "DiT_XL_4",
    "DiT_XL_8",
    "DiT_models",
    "FinalLayer",
    "LabelEmbedder",
    "TimestepEmbedder",
    "get_2d_sincos_pos_embed",
]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Apply adaLN shift and scale, each (N, D), to tokens (N, T, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


#################################################################################
#               Embedding Layers for Timesteps and Class Labels                 #
#################################################################################


class TimestepEmbedder(nn.Module):
    """Embeds scalar timesteps into vectors: sinusoidal features, then a two-layer MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        """
        Args:
            hidden_size: Width of the output embedding.
            frequency_embedding_size: Number of sinusoidal features fed to the MLP.
        """
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
        """Sinusoidal embedding (N, dim) of N possibly fractional timesteps (GLIDE's recipe)."""
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
        )  # (half,)
        args = t[:, None].float() * freqs[None]  # (N, half)
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, 2 * half)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t_freq = self.timestep_embedding(t, self.frequency_embedding_size)  # (N, F)
        dtype = next(self.mlp.parameters()).dtype  # run in the weights' dtype (fp16, bf16)
        return self.mlp(t_freq.to(dtype))  # (N, D)


class LabelEmbedder(nn.Module):
    """Embeds class labels into vectors; drops labels to the null class for CFG training."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float) -> None:
        """
        Args:
            num_classes: Number of real classes. When ``dropout_prob > 0`` the table has one
                extra row, index ``num_classes``: the null class used by classifier-free
                guidance.
            hidden_size: Width of the output embedding.
            dropout_prob: Probability of replacing a label with the null class in training.
        """
        super().__init__()
        use_cfg_embedding = int(dropout_prob > 0)
        self.embedding_table = nn.Embedding(num_classes + use_cfg_embedding, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(
        self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Replace dropped labels with the null class id ``num_classes``."""
        if force_drop_ids is None:
            drop_ids = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop_ids = force_drop_ids == 1
        return torch.where(drop_ids, self.num_classes, labels)

    def forward(
        self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)  # (N, D)


#################################################################################
#                                 Core DiT Model                                #
#################################################################################


class DiTBlock(nn.Module):
    """A DiT block with adaptive layer norm zero (adaLN-Zero) conditioning."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        """
        Args:
            hidden_size: Token width D.
            num_heads: Number of attention heads.
            mlp_ratio: Width of the MLP's hidden layer relative to ``hidden_size``.
        """
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        approx_gelu = functools.partial(nn.GELU, approximate="tanh")
        self.mlp = Mlp(
            in_features=hidden_size,
            hidden_features=int(hidden_size * mlp_ratio),
            act_layer=approx_gelu,  # type: ignore[arg-type]
            drop=0,
        )
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(),
            nn.Linear(hidden_size, 6 * hidden_size, bias=True),
        )

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Update tokens ``x`` (N, T, D) under conditioning ``c`` (N, D); returns (N, T, D)."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(
            c
        ).chunk(6, dim=1)  # 6 x (N, D)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """The final layer of DiT: adaLN modulation, then a linear map back to patches."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        """
        Args:
            hidden_size: Token width D.
            patch_size: Side of a square patch.
            out_channels: Channels of the output image.
        """
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(),
            nn.Linear(hidden_size, 2 * hidden_size, bias=True),
        )

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)  # 2 x (N, D)
        x = modulate(self.norm_final(x), shift, scale)  # (N, T, D)
        return self.linear(x)  # (N, T, p * p * out_channels)


class DiT(nn.Module):
    """Diffusion model with a Transformer backbone (class-conditional, eps-prediction)."""

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = True,
    ) -> None:
        """
        Args:
            input_size: Side of the square input latent (image size // 8 for the SD VAE).
            patch_size: Side of a square patch; the model sees (input_size / patch_size)**2
                tokens.
            in_channels: Channels of the input latent.
            hidden_size: Token width D.
            depth: Number of DiT blocks.
            num_heads: Attention heads per block.
            mlp_ratio: Width of each block's MLP hidden layer relative to ``hidden_size``.
            class_dropout_prob: Label dropout for classifier-free guidance training; when
                positive the label table gains a null class with id ``num_classes``.
            num_classes: Number of real classes.
            learn_sigma: Also predict the variance; doubles ``out_channels``, the first
                ``in_channels`` of which are the noise prediction.
        """
        super().__init__()
        if input_size % patch_size:
            raise ValueError(
                f"input_size ({input_size}) must be a multiple of patch_size ({patch_size})"
            )
        self.input_size = input_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.hidden_size = hidden_size
        self.depth = depth
        self.num_heads = num_heads
        self.num_classes = num_classes
        self.learn_sigma = learn_sigma

        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size, bias=True)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        num_patches = self.x_embedder.num_patches
        # Fixed sin-cos embedding, kept as a frozen Parameter so it is in the state dict:
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=False)

        self.blocks = nn.ModuleList(
            [DiTBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio) for _ in range(depth)]
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier-uniform linears, sin-cos positions and adaLN-Zero, as in the original."""

        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)

        self.apply(_basic_init)

        # Initialize (and freeze) pos_embed by sin-cos embedding:
        grid_size = self.input_size // self.patch_size
        pos_embed = get_2d_sincos_pos_embed(self.hidden_size, grid_size)  # (T, D)
        self.pos_embed.data.copy_(pos_embed.float().unsqueeze(0))

        # Initialize patch_embed like nn.Linear (instead of nn.Conv2d):
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))

        # Initialize label embedding table and timestep embedding MLP:
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        for layer in self.t_embedder.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.02)

        # Zero-out adaLN modulation layers in DiT blocks and the final layer (adaLN-Zero):
        for module in self.modules():
            if isinstance(module, (DiTBlock, FinalLayer)):
                for param in module.adaLN_modulation.parameters():
                    nn.init.constant_(param, 0)

        # Zero-out output layers:
        nn.init.constant_(self.final_layer.linear.weight, 0)
        nn.init.constant_(self.final_layer.linear.bias, 0)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """Fold patch tokens (N, T, p * p * C) back into images (N, C, H, W)."""
        h = w = self.input_size // self.patch_size
        return rearrange(
            x, "n (h w) (p q c) -> n c (h p) (w q)", h=h, w=w, p=self.patch_size, q=self.patch_size
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Predict noise (and variance if ``learn_sigma``).

        Args:
            x: Latents (N, C, H, W).
            t: Diffusion timesteps (N,).
            y: Class labels (N,); ``num_classes`` is the null class.

        Returns:
            (N, out_channels, H, W).
        """
        x = self.x_embedder(x) + self.pos_embed  # (N, T, D), where T = H * W / patch_size ** 2
        t = self.t_embedder(t)  # (N, D)
        y = self.y_embedder(y, self.training)  # (N, D)
        c = t + y  # (N, D)
        for block in self.blocks:
            x = block(x, c)  # (N, T, D)
        x = self.final_layer(x, c)  # (N, T, patch_size ** 2 * out_channels)
        return self.unpatchify(x)  # (N, out_channels, H, W)


#################################################################################
#                   Sine/Cosine Positional Embedding Functions                  #
#################################################################################
# Following MAE: https://github.com/facebookresearch/mae/blob/main/util/pos_embed.py


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding (grid_size**2, embed_dim) of a row-major square grid.

    The first half of the channels encodes the column index, the second half the row index,
    each as ``[sin, cos]`` of the position times geometric frequencies (computed in float64).
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be a multiple of 4 for 2-D sin-cos, got {embed_dim}")
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")  # (G, G) each
    emb_cols = get_1d_sincos_pos_embed(embed_dim // 2, cols.reshape(-1))  # (T, D/2)
    emb_rows = get_1d_sincos_pos_embed(embed_dim // 2, rows.reshape(-1))  # (T, D/2)
    return torch.cat([emb_cols, emb_rows], dim=1)  # (T, D)


def get_1d_sincos_pos_embed(embed_dim: int, pos: torch.Tensor) -> torch.Tensor:
    """Sin-cos embedding (M, embed_dim) of M positions."""
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega  # (D/2,)
    out = pos.to(torch.float64)[:, None] * omega[None]  # (M, D/2), outer product
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (M, D)


#################################################################################
#                                   DiT Configs                                 #
#################################################################################


def DiT_XL_2(**kwargs: Any) -> DiT:  # noqa: N802
    return DiT(depth=28, hidden_size=1152, patch_size=2, num_heads=16, **kwargs)


def DiT_XL_4(**kwargs: Any) -> DiT:  # noqa: N802
    return DiT(depth=28, hidden_size=1152, patch_size=4, num_heads=16, **kwargs)


def DiT_XL_8(**kwargs: Any) -> DiT:  # noqa: N802
    return DiT(depth=28, hidden_size=1152, patch_size=8, num_heads=16, **kwargs)


def DiT_L_2(**kwargs: Any) -> DiT:  # noqa: N802
    return DiT(depth=24, hidden_size=1024, patch_size=2, num_heads=16, **kwargs)


def DiT_L_4(**kwargs: Any) -> DiT:  # noqa: N802
    return DiT(depth=24, hidden_size=1024, patch_size=4, num_heads=16, **kwargs)


def DiT_L_8(**kwargs: Any) -> DiT:  # noqa: N802
    return DiT(depth=24, hidden_size=1024, patch_size=8, num_heads=16, **kwargs)


def DiT_B_2(**kwargs: Any) -> DiT:  # noqa: N802
    return DiT(depth=12, hidden_size=768, patch_size=2, num_heads=12, **kwargs)


def DiT_B_4(**kwargs: Any) -> DiT:  # noqa: N802
    return DiT(depth=12, hidden_size=768, patch_size=4, num_heads=12, **kwargs)


def DiT_B_8(**kwargs: Any) -> DiT:  # noqa: N802
    return DiT(depth=12, hidden_size=768, patch_size=8, num_heads=12, **kwargs)


def DiT_S_2(**kwargs: Any) -> DiT:  # noqa: N802
    return DiT(depth=12, hidden_size=384, patch_size=2, num_heads=6, **kwargs)


def DiT_S_4(**kwargs: Any) -> DiT:  # noqa: N802
    return DiT(depth=12, hidden_size=384, patch_size=4, num_heads=6, **kwargs)


def DiT_S_8(**kwargs: Any) -> DiT:  # noqa: N802
    return DiT(depth=12, hidden_size=384, patch_size=8, num_heads=6, **kwargs)


DiT_models: dict[str, Callable[..., DiT]] = {
    "DiT-XL/2": DiT_XL_2,
    "DiT-XL/4": DiT_XL_4,
    "DiT-XL/8": DiT_XL_8,
    "DiT-L/2": DiT_L_2,
    "DiT-L/4": DiT_L_4,
    "DiT-L/8": DiT_L_8,
    "DiT-B/2": DiT_B_2,
    "DiT-B/4": DiT_B_4,
    "DiT-B/8": DiT_B_8,
    "DiT-S/2": DiT_S_2,
    "DiT-S/4": DiT_S_4,
    "DiT-S/8": DiT_S_8,
}
