"""An example plugin for a model with two block lists: two-stream blocks, then joined ones.

The layout of Flux and HiDream, reduced: ``double_blocks`` update an image and a text
stream and return ``(text, image)``; the model then concatenates the streams and
``single_blocks`` update the joined sequence.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

import blockdance
from blockdance import (
    ArchitectureSpec,
    BlockList,
    SignatureIO,
    module_lists_blocks,
    timestep_argument,
)


class DoubleBlock(nn.Module):
    """Each stream is updated from itself and from the other stream's mean token."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.img = nn.Linear(2 * dim, dim)
        self.txt = nn.Linear(2 * dim, dim)

    def forward(
        self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        img, txt = hidden_states, encoder_hidden_states  # (N, T_img, D), (N, T_txt, D)
        img_ctx = txt.mean(1, keepdim=True).expand_as(img)
        txt_ctx = img.mean(1, keepdim=True).expand_as(txt)
        img = img + torch.tanh(self.img(torch.cat([img, img_ctx], -1))) * temb
        txt = txt + torch.tanh(self.txt(torch.cat([txt, txt_ctx], -1))) * temb
        return txt, img  # (text, image), as SD3's and Flux's blocks return them


class SingleBlock(nn.Module):
    """One update of the joined ``(text + image)`` sequence."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim)

    def forward(self, temb: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + torch.tanh(self.lin(hidden_states)) * temb  # (N, T, D)


class TwoListDenoiser(nn.Module):
    """Denoises image tokens ``x`` given text tokens, with 4 double and 4 single blocks."""

    def __init__(self, dim: int = 16, double: int = 4, single: int = 4) -> None:
        super().__init__()
        self.t_proj = nn.Linear(1, dim)
        self.double_blocks = nn.ModuleList(DoubleBlock(dim) for _ in range(double))
        self.single_blocks = nn.ModuleList(SingleBlock(dim) for _ in range(single))
        self.head = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, text: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = torch.sigmoid(self.t_proj(t.reshape(-1, 1).to(x.dtype) / 1000))[:, None]  # (N, 1, D)
        img, txt = x, text  # (N, T_img, D), (N, T_txt, D)
        for block in self.double_blocks:
            txt, img = block(img, encoder_hidden_states=txt, temb=temb)
        h = torch.cat([txt, img], dim=1)  # (N, T_txt + T_img, D): one stream from here on
        for block in self.single_blocks:
            h = block(temb, h)
        return self.head(h[:, txt.shape[1] :])  # (N, T_img, D)


TWO_LIST = ArchitectureSpec(
    name="two-list",
    description="two-stream blocks, then joined blocks (docs/examples/two_list_plugin.py)",
    matches=lambda model: isinstance(model, TwoListDenoiser),
    blocks=module_lists_blocks(
        BlockList(
            "double_blocks",
            SignatureIO(
                "hidden_states",
                "encoder_hidden_states",
                returns=("encoder_hidden_states", "hidden_states"),
            ),
            kind="double",
            form="two-stream",
        ),
        BlockList("single_blocks", SignatureIO("hidden_states"), kind="single", form="joined"),
    ),
    timestep=timestep_argument("t"),
)


class TwoListPlugin:
    """Registers the ``two-list`` architecture."""

    @blockdance.hookimpl
    def blockdance_register_architectures(
        self, register: Callable[[ArchitectureSpec], None]
    ) -> None:
        register(TWO_LIST)
