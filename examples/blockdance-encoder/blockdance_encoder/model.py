"""A small denoiser whose blocks are stock ``torch.nn.TransformerEncoderLayer``s."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class EncoderDenoiser(nn.Module):
    """Patchify, add a timestep embedding to every token, run the layers, unpatchify.

    Args:
        in_channels: Channels of the (latent) image.
        patch: Patch size; height and width must be multiples of it.
        dim: Token width.
        heads: Attention heads per layer.
        depth: Number of encoder layers.
    """

    def __init__(
        self, in_channels: int = 4, patch: int = 2, dim: int = 32, heads: int = 4, depth: int = 8
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.patch = patch
        self.embed = nn.Linear(in_channels * patch * patch, dim)
        self.t_embed = nn.Sequential(nn.Linear(1, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True)
            for _ in range(depth)
        )
        self.out = nn.Linear(dim, in_channels * patch * patch)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        p = self.patch
        tokens = F.pixel_unshuffle(x, p).flatten(2).transpose(1, 2)  # (N, T, C*p*p)
        temb = self.t_embed(t.reshape(-1, 1).to(x.dtype) / 1000)  # (N, D)
        src = self.embed(tokens) + temb[:, None, :]  # (N, T, D)
        for layer in self.layers:
            src = layer(src)  # (N, T, D)
        out = self.out(src).transpose(1, 2).reshape(n, -1, h // p, w // p)  # (N, C*p*p, H/p, W/p)
        return F.pixel_shuffle(out, p)  # (N, C, H, W)


def encoder_tiny(**kwargs: int) -> EncoderDenoiser:
    """8 layers of width 32: fast enough for tests on a CPU."""
    return EncoderDenoiser(**kwargs)


@torch.no_grad()
def sample(
    model: EncoderDenoiser, seeds: Sequence[int], num_steps: int, size: int = 16
) -> torch.Tensor:
    """A plain Euler loop from seeded noise over timesteps 999 → 0 (untrained: shapes only)."""
    shape = (model.in_channels, size, size)
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
    x = torch.stack(noise)  # (N, C, H, W)
    for t in torch.linspace(999, 0, num_steps):
        x = x - model(x, t.expand(len(x))) / num_steps
    return x
