"""Spatial-Temporal DiT (STDiT) in the layout of Open-Sora v1 (``opensora/models/stdit``).

Each block runs spatial self-attention among the tokens of a frame, temporal
self-attention among the frames of a token position, cross-attention to the caption and
an MLP, modulated PixArt-style ("adaLN-single"): one ``t_block`` maps the timestep
embedding to six modulation vectors for the whole model, and every block adds its own
learned ``scale_shift_table``. Module, parameter and buffer names and shapes follow the
official checkpoints (``OpenSora-v1-16x256x256.pth`` and friends), so
:func:`blockdance_stdit.checkpoint.load_official_state_dict` loads them unchanged.

Differences that leave the weights untouched: attention runs through PyTorch's
``scaled_dot_product_attention`` (timm's ``Attention``) instead of xformers or
flash-attn, and padded caption tokens are masked out instead of packed away.

One option beyond v1, off by default: ``temporal_rope=True`` rotates the temporal
attention's queries and keys by their frame index, as Open-Sora 1.1 and 1.2 do (STDiT2,
STDiT3: ``RotaryEmbedding(head_dim).rotate_queries_or_keys``). v1 tells the frames apart
only by the sin-cos table added inside the first block's temporal attention; with rotary
positions every temporal attention sees the frames' order. It adds no weights.

And ``frame_embed=True`` adds a learned table (1, T, D), started as the temporal sin-cos
table, to every token of its frame before the first block, as Latte adds its temporal
embedding to the tokens: rotary positions tell a temporal attention how far apart two frames
are, not which frame a token is in, and where the frames look alike (at high noise) a token
would not know its frame. It adds the parameter ``frame_embed``, absent from v1 checkpoints.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import DropPath, Mlp
from timm.models.vision_transformer import Attention
from torch import nn

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "CaptionEmbedder",
    "FrameRotaryAttention",
    "MultiHeadCrossAttention",
    "PatchEmbed3D",
    "STDiT",
    "STDiTBlock",
    "STDiT_XL_2",
    "STDiT_models",
    "T2IFinalLayer",
    "TimestepEmbedder",
    "get_1d_sincos_pos_embed",
    "get_2d_sincos_pos_embed",
]

Size3 = tuple[int, int, int]

approx_gelu = functools.partial(nn.GELU, approximate="tanh")


def t2i_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Apply shift and scale, each (B, 1, D), to tokens (B, N, D)."""
    return x * (1 + scale) + shift


def rotate_by_position(x: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding along the sequence axis of ``x`` (B, H, N, head_dim).

    Consecutive channel pairs ``(2i, 2i + 1)`` turn by ``n / theta^(2i / head_dim)`` at
    position ``n``: the layout of ``rotary_embedding_torch``, which Open-Sora 1.1+ uses.
    """
    n, dim = x.shape[-2:]
    freqs = theta ** -(torch.arange(0, dim, 2, device=x.device, dtype=torch.float32) / dim)
    angles = torch.outer(torch.arange(n, device=x.device, dtype=torch.float32), freqs)
    angles = angles.repeat_interleave(2, dim=-1).to(x.dtype)  # (N, head_dim)
    pairs = rearrange(x, "... (d r) -> ... d r", r=2)
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1)  # (..., head_dim / 2, 2)
    return x * angles.cos() + rearrange(rotated, "... d r -> ... (d r)") * angles.sin()


class FrameRotaryAttention(Attention):
    """timm's ``Attention`` (same weights and names) with rotary positions on the queries
    and keys: a token's position in its sequence, the frame index in temporal attention."""

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """Attend among the N tokens of each row of ``x`` (B, N, D); returns (B, N, D)."""
        if attn_mask is not None or is_causal:
            raise ValueError("FrameRotaryAttention takes no attention mask")
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # 3 x (B, H, N, head_dim)
        q, k = rotate_by_position(self.q_norm(q)), rotate_by_position(self.k_norm(k))
        x = F.scaled_dot_product_attention(q, k, v)  # (B, H, N, head_dim)
        x = self.norm(x.transpose(1, 2).reshape(b, n, self.attn_dim))
        return self.proj_drop(self.proj(x))


#################################################################################
#                   Embedding Layers for Patches, Timesteps, Captions           #
#################################################################################


class PatchEmbed3D(nn.Module):
    """Cuts a video latent into (t, h, w) patches with a strided Conv3d; tokens frame-major."""

    def __init__(self, patch_size: Size3, in_channels: int, embed_dim: int) -> None:
        """
        Args:
            patch_size: Patch extent (frames, height, width).
            in_channels: Channels of the latent.
            embed_dim: Token width D.
        """
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, T, H, W) in patches
        return rearrange(x, "b d t h w -> b (t h w) d")  # (B, T * S, D)


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
        """Sinusoidal embedding (B, dim) of B possibly fractional timesteps (GLIDE's recipe)."""
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
        )  # (half,)
        args = t[:, None].float() * freqs[None]  # (B, half)
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2 * half)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        t_freq = self.timestep_embedding(t, self.frequency_embedding_size)  # (B, F)
        if dtype is None:
            dtype = next(self.mlp.parameters()).dtype
        return self.mlp(t_freq.to(dtype))  # (B, D)


class CaptionEmbedder(nn.Module):
    """Projects caption features (e.g. T5) to the token width; drops captions for CFG."""

    y_embedding: torch.Tensor

    def __init__(
        self, in_channels: int, hidden_size: int, uncond_prob: float, token_num: int = 120
    ) -> None:
        """
        Args:
            in_channels: Width of the caption features (4096 for T5-XXL).
            hidden_size: Token width D.
            uncond_prob: Probability of replacing a caption by the null caption in training.
            token_num: Caption length L (``model_max_length``).
        """
        super().__init__()
        self.y_proj = Mlp(
            in_features=in_channels,
            hidden_features=hidden_size,
            out_features=hidden_size,
            act_layer=approx_gelu,  # type: ignore[arg-type]
            drop=0,
        )
        # The null caption: fixed random features, saved in the checkpoint.
        self.register_buffer("y_embedding", torch.randn(token_num, in_channels) / in_channels**0.5)
        self.uncond_prob = uncond_prob

    def null(self, n: int) -> torch.Tensor:
        """The null caption for ``n`` samples, (n, 1, L, C): the unconditional CFG input."""
        return self.y_embedding[None, None].expand(n, 1, -1, -1)

    def token_drop(
        self, caption: torch.Tensor, force_drop_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Replace dropped captions (B, 1, L, C) by the null caption."""
        if force_drop_ids is None:
            drop_ids = torch.rand(caption.shape[0], device=caption.device) < self.uncond_prob
        else:
            drop_ids = force_drop_ids == 1
        return torch.where(drop_ids[:, None, None, None], self.y_embedding, caption)

    def forward(
        self, caption: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        if (train and self.uncond_prob > 0) or force_drop_ids is not None:
            caption = self.token_drop(caption, force_drop_ids)
        return self.y_proj(caption)  # (B, 1, L, D)


#################################################################################
#                                 Core STDiT Model                              #
#################################################################################


class MultiHeadCrossAttention(nn.Module):
    """Multi-head attention from tokens (queries) to caption tokens (keys and values)."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        """
        Args:
            d_model: Token width D (queries and caption tokens alike).
            num_heads: Number of attention heads.
        """
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of num_heads ({num_heads})")
        self.num_heads = num_heads
        self.q_linear = nn.Linear(d_model, d_model)
        self.kv_linear = nn.Linear(d_model, d_model * 2)
        self.proj = nn.Linear(d_model, d_model)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attend from ``x`` (B, N, D) to ``cond`` (B, L, D); ``mask`` (B, L) keeps True keys."""
        q = rearrange(self.q_linear(x), "b n (h e) -> b h n e", h=self.num_heads)
        kv = rearrange(
            self.kv_linear(cond), "b l (two h e) -> two b h l e", two=2, h=self.num_heads
        )
        k, v = kv.unbind(0)  # (B, H, L, E) each
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, L)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, H, N, E)
        return self.proj(rearrange(out, "b h n e -> b n (h e)"))  # (B, N, D)


class STDiTBlock(nn.Module):
    """Spatial attention, temporal attention, cross-attention and MLP, adaLN-single modulated."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        d_s: int,
        d_t: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        temporal_rope: bool = False,
    ) -> None:
        """
        Args:
            hidden_size: Token width D.
            num_heads: Attention heads (spatial, temporal and cross-attention alike).
            d_s: Tokens per frame S.
            d_t: Frames T (in patches).
            mlp_ratio: Width of the MLP's hidden layer relative to ``hidden_size``.
            drop_path: Stochastic-depth rate of the residual branches (training only).
            temporal_rope: Rotary frame positions in the temporal attention
                (:class:`FrameRotaryAttention`, Open-Sora 1.1+); v1 has none.
        """
        super().__init__()
        self.hidden_size = hidden_size
        self.d_s = d_s
        self.d_t = d_t
        self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
        self.cross_attn = MultiHeadCrossAttention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(
            in_features=hidden_size,
            hidden_features=int(hidden_size * mlp_ratio),
            act_layer=approx_gelu,  # type: ignore[arg-type]
            drop=0,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size) / hidden_size**0.5)
        temporal = FrameRotaryAttention if temporal_rope else Attention
        self.attn_temp = temporal(hidden_size, num_heads=num_heads, qkv_bias=True)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        mask: torch.Tensor | None = None,
        tpe: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Update tokens.

        Args:
            x: Tokens (B, T * S, D), frame-major.
            y: Caption tokens (B, L, D).
            t: Modulation from ``t_block`` (B, 6 * D).
            mask: Caption mask (B, L), True for real tokens; None: all real.
            tpe: Temporal position embedding (1, T, D), given to the first block only.

        Returns:
            (B, T * S, D).
        """
        b = x.shape[0]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + t.reshape(b, 6, -1)
        ).chunk(6, dim=1)  # 6 x (B, 1, D)

        # spatial branch: the S tokens of each frame attend to each other
        x_m = t2i_modulate(self.norm1(x), shift_msa, scale_msa)  # (B, T * S, D)
        x_s = rearrange(x_m, "b (t s) d -> (b t) s d", t=self.d_t, s=self.d_s)
        x_s = rearrange(self.attn(x_s), "(b t) s d -> b (t s) d", t=self.d_t, s=self.d_s)
        x = x + self.drop_path(gate_msa * x_s)

        # temporal branch: the T frames of each token position (input not normalised, as in v1)
        x_t = rearrange(x, "b (t s) d -> (b s) t d", t=self.d_t, s=self.d_s)
        if tpe is not None:
            x_t = x_t + tpe
        x_t = rearrange(self.attn_temp(x_t), "(b s) t d -> b (t s) d", t=self.d_t, s=self.d_s)
        x = x + self.drop_path(gate_msa * x_t)  # v1 reuses the spatial gate here

        # cross-attention to the caption, then the MLP
        x = x + self.cross_attn(x, y, mask)
        x_m = t2i_modulate(self.norm2(x), shift_mlp, scale_mlp)
        return x + self.drop_path(gate_mlp * self.mlp(x_m))  # (B, T * S, D)


class T2IFinalLayer(nn.Module):
    """The final layer of PixArt: modulated norm, then a linear map back to patches."""

    def __init__(self, hidden_size: int, num_patch: int, out_channels: int) -> None:
        """
        Args:
            hidden_size: Token width D.
            num_patch: Latent elements per patch and channel (t * h * w of the patch).
            out_channels: Channels of the output latent.
        """
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, num_patch * out_channels, bias=True)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden_size) / hidden_size**0.5)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.scale_shift_table[None] + t[:, None]).chunk(2, dim=1)  # 2 x (B, 1, D)
        return self.linear(t2i_modulate(self.norm_final(x), shift, scale))  # (B, N, p * C_out)


class STDiT(nn.Module):
    """Text-to-video diffusion transformer with factorised spatial/temporal attention."""

    pos_embed: torch.Tensor
    pos_embed_temporal: torch.Tensor
    frame_embed: nn.Parameter | None

    def __init__(
        self,
        input_size: Size3 = (16, 32, 32),
        in_channels: int = 4,
        patch_size: Size3 = (1, 2, 2),
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        pred_sigma: bool = True,
        drop_path: float = 0.0,
        caption_channels: int = 4096,
        model_max_length: int = 120,
        space_scale: float = 1.0,
        time_scale: float = 1.0,
        temporal_rope: bool = False,
        frame_embed: bool = False,
    ) -> None:
        """
        Args:
            input_size: Latent extent (frames, height, width); (16, 32, 32) for 16x256x256
                videos through the SD VAE.
            in_channels: Channels of the latent.
            patch_size: Patch extent (frames, height, width).
            hidden_size: Token width D.
            depth: Number of STDiT blocks.
            num_heads: Attention heads per block.
            mlp_ratio: Width of each block's MLP hidden layer relative to ``hidden_size``.
            class_dropout_prob: Caption dropout for classifier-free guidance training.
            pred_sigma: Also predict the variance; doubles ``out_channels``.
            drop_path: Largest stochastic-depth rate (linear over the blocks, training only).
            caption_channels: Width of the caption features (4096: T5-XXL).
            model_max_length: Caption length L.
            space_scale: Divides the spatial positions of the sin-cos embedding (Open-Sora
                v1 uses 0.5 for 256x256 and 1.0 for 512x512).
            time_scale: Divides the temporal positions of the sin-cos embedding.
            temporal_rope: Rotate the temporal attention's queries and keys by frame index
                (Open-Sora 1.1+; no weights of its own); False is v1.
            frame_embed: Add a learned per-frame table (1, T, D), started as the temporal
                sin-cos table, to the tokens before the first block; False is v1.
        """
        super().__init__()
        if any(size % patch for size, patch in zip(input_size, patch_size)):
            raise ValueError(
                f"input_size {tuple(input_size)} must be a multiple of patch_size "
                f"{tuple(patch_size)} in every dimension"
            )
        self.input_size = tuple(input_size)
        self.patch_size = tuple(patch_size)
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if pred_sigma else in_channels
        self.pred_sigma = pred_sigma
        self.hidden_size = hidden_size
        self.depth = depth
        self.num_heads = num_heads
        self.caption_channels = caption_channels
        self.model_max_length = model_max_length
        self.space_scale = space_scale
        self.time_scale = time_scale
        self.temporal_rope = temporal_rope
        grid = [size // patch for size, patch in zip(input_size, patch_size)]
        self.grid: Size3 = (grid[0], grid[1], grid[2])  # (T, H, W) in patches
        self.num_temporal = self.grid[0]
        self.num_spatial = self.grid[1] * self.grid[2]

        # Fixed sin-cos embeddings, kept as (persistent) buffers like the original:
        spatial = get_2d_sincos_pos_embed(hidden_size, grid[1:], scale=space_scale)
        temporal = get_1d_sincos_pos_embed(hidden_size, self.num_temporal, scale=time_scale)
        self.register_buffer("pos_embed", spatial.float().unsqueeze(0))  # (1, S, D)
        self.register_buffer("pos_embed_temporal", temporal.float().unsqueeze(0))  # (1, T, D)
        # learned, so that each token knows its frame (started as the sin-cos table):
        self.frame_embed = nn.Parameter(temporal.float().unsqueeze(0)) if frame_embed else None

        self.x_embedder = PatchEmbed3D(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))
        self.y_embedder = CaptionEmbedder(
            caption_channels, hidden_size, class_dropout_prob, token_num=model_max_length
        )
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # linspace(0, dp)
        self.blocks = nn.ModuleList(
            [
                STDiTBlock(
                    hidden_size,
                    num_heads,
                    d_s=self.num_spatial,
                    d_t=self.num_temporal,
                    mlp_ratio=mlp_ratio,
                    drop_path=rates[i],
                    temporal_rope=temporal_rope,
                )
                for i in range(depth)
            ]
        )
        self.final_layer = T2IFinalLayer(hidden_size, math.prod(patch_size), self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier-uniform linears, zeroed output projections, as in the original."""

        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)

        self.apply(_basic_init)

        # Initialize patch_embed like nn.Linear (instead of nn.Conv3d):
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))

        # Timestep and caption embedding MLPs:
        embedders = [*self.t_embedder.mlp, *self.t_block, *self.y_embedder.y_proj.children()]
        for layer in embedders:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.02)

        # Zero-out cross-attention and temporal-attention outputs, and the output layer:
        zeroed = [self.final_layer.linear]
        for block in self.blocks:
            assert isinstance(block, STDiTBlock)
            zeroed += [block.cross_attn.proj, block.attn_temp.proj]
        for linear in zeroed:
            nn.init.constant_(linear.weight, 0)
            nn.init.constant_(linear.bias, 0)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """Fold patch tokens (B, T * H * W, p * C_out) back into latents (B, C_out, T, H, W)."""
        nt, nh, nw = self.grid
        pt, ph, pw = self.patch_size
        return rearrange(
            x,
            "b (nt nh nw) (pt ph pw c) -> b c (nt pt) (nh ph) (nw pw)",
            nt=nt,
            nh=nh,
            nw=nw,
            pt=pt,
            ph=ph,
            pw=pw,
        )

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict noise (and variance if ``pred_sigma``).

        Args:
            x: Video latents (B, C, T, H, W) of extent ``input_size``.
            timestep: Diffusion timesteps (B,).
            y: Caption features (B, 1, L, caption_channels); the null caption is
                ``y_embedder.null(B)``.
            mask: Caption mask (B, L) (or (B', L) with B' dividing B, repeated), nonzero for
                real tokens; None: every token is real.

        Returns:
            (B, out_channels, T, H, W).
        """
        if tuple(x.shape[2:]) != self.input_size:
            raise ValueError(
                f"STDiT was built for latents of extent {self.input_size} (frames, height, "
                f"width), got {tuple(x.shape[2:])}; build it with input_size= to match"
            )
        x = self.x_embedder(x)  # (B, T * S, D)
        x = rearrange(x, "b (t s) d -> b t s d", t=self.num_temporal) + self.pos_embed
        if self.frame_embed is not None:
            x = x + self.frame_embed[:, :, None]  # (1, T, 1, D): one row per frame
        x = rearrange(x, "b t s d -> b (t s) d")  # (B, T * S, D)

        t = self.t_embedder(timestep, dtype=x.dtype)  # (B, D)
        t0 = self.t_block(t)  # (B, 6 * D)
        if y.ndim == 3:
            y = y[:, None]
        y = self.y_embedder(y, self.training).squeeze(1)  # (B, L, D)
        keep = None if mask is None else self._caption_mask(mask, y.shape[0])  # (B, L)

        for i, block in enumerate(self.blocks):
            tpe = self.pos_embed_temporal if i == 0 else None
            x = block(x, y, t0, keep, tpe)  # (B, T * S, D)
        x = self.final_layer(x, t)  # (B, T * S, p * out_channels)
        return self.unpatchify(x)  # (B, out_channels, T, H, W)

    @staticmethod
    def _caption_mask(mask: torch.Tensor, batch: int) -> torch.Tensor:
        """A boolean (batch, L) mask from (B', L) or (B', 1, 1, L); rows repeat for CFG."""
        mask = mask.reshape(mask.shape[0], -1) != 0
        if mask.shape[0] != batch:
            if batch % mask.shape[0]:
                raise ValueError(f"mask batch {mask.shape[0]} does not divide the batch {batch}")
            mask = mask.repeat(batch // mask.shape[0], 1)
        return mask


#################################################################################
#                   Sine/Cosine Positional Embedding Functions                  #
#################################################################################
# Following MAE: https://github.com/facebookresearch/mae/blob/main/util/pos_embed.py


def get_2d_sincos_pos_embed(
    embed_dim: int, grid_size: Sequence[int], scale: float = 1.0
) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding (H * W, embed_dim) of a row-major (H, W) grid.

    The first half of the channels encodes the column index, the second half the row
    index, each divided by ``scale`` (computed in float64).
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be a multiple of 4 for 2-D sin-cos, got {embed_dim}")
    height, width = grid_size
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) / scale,
        torch.arange(width, dtype=torch.float64) / scale,
        indexing="ij",
    )  # (H, W) each
    emb_cols = _sincos(embed_dim // 2, cols.reshape(-1))  # (H * W, D/2)
    emb_rows = _sincos(embed_dim // 2, rows.reshape(-1))  # (H * W, D/2)
    return torch.cat([emb_cols, emb_rows], dim=1)  # (H * W, D)


def get_1d_sincos_pos_embed(embed_dim: int, length: int, scale: float = 1.0) -> torch.Tensor:
    """Fixed 1-D sin-cos embedding (length, embed_dim) of positions ``0..length-1``."""
    return _sincos(embed_dim, torch.arange(length, dtype=torch.float64) / scale)


def _sincos(embed_dim: int, pos: torch.Tensor) -> torch.Tensor:
    """``[sin, cos]`` embedding (M, embed_dim) of M positions."""
    if embed_dim % 2:
        raise ValueError(f"embed_dim must be even for sin-cos, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega  # (D/2,)
    out = pos.to(torch.float64)[:, None] * omega[None]  # (M, D/2), outer product
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (M, D)


#################################################################################
#                                  STDiT Configs                                #
#################################################################################


def STDiT_XL_2(**kwargs: Any) -> STDiT:  # noqa: N802
    return STDiT(depth=28, hidden_size=1152, patch_size=(1, 2, 2), num_heads=16, **kwargs)


STDiT_models: dict[str, Callable[..., STDiT]] = {"STDiT-XL/2": STDiT_XL_2}
