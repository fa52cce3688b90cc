"""Captions of the procedural shapes as model inputs: a tokenizer and a tiny text encoder.

No text encoder can be downloaded, so a caption-conditioned model trained here carries its
own: a word-level tokenizer over the closed vocabulary of :mod:`blockdance_lab.data.shapes`
captions, and a learned token embedding followed by transformer blocks (timm). The encoder
gives what a text-to-image pipeline hands its transformer: per-token embeddings and a pooled
vector. It is trained jointly with the model that uses it and shipped in the same file (the
tiny SD3 of the MMDiT plugin does this).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.models.vision_transformer import Block
from torch import nn

from blockdance_lab.data.shapes import BACKGROUNDS, COLORS, DIRECTIONS, SHAPES

__all__ = ["PAD", "VOCABULARY", "ShapesTokenizer", "TinyTextEncoder"]

PAD = "<pad>"
#: Every word a caption of :mod:`blockdance_lab.data.shapes` uses; index 0 is padding.
VOCABULARY: tuple[str, ...] = (
    PAD,
    "a",
    "on",
    "background",
    "moving",
    *COLORS,
    *SHAPES,
    *BACKGROUNDS,
    *DIRECTIONS,
)


class ShapesTokenizer:
    """Whitespace tokenizer over :data:`VOCABULARY`, padded to a fixed length.

    Args:
        max_length: Tokens per caption; the empty caption (the guidance null) is all padding.
    """

    def __init__(self, max_length: int = 10) -> None:
        self.max_length = max_length
        self.index = {word: i for i, word in enumerate(VOCABULARY)}

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        """Token ids ``(N, max_length)`` int64.

        Raises:
            ValueError: A caption has a word outside the vocabulary or too many words.
        """
        rows = []
        for caption in captions:
            words = caption.lower().split()
            unknown = [w for w in words if w not in self.index]
            if unknown:
                raise ValueError(
                    f"caption {caption!r} has words outside the tiny text encoder's vocabulary: "
                    f"{unknown}; it knows {list(VOCABULARY[1:])}"
                )
            if len(words) > self.max_length:
                raise ValueError(
                    f"caption {caption!r} has {len(words)} words; the tokenizer takes at most "
                    f"{self.max_length}"
                )
            ids = [self.index[w] for w in words]
            rows.append(ids + [0] * (self.max_length - len(ids)))
        return torch.tensor(rows, dtype=torch.long)


class TinyTextEncoder(nn.Module):
    """Token embedding, learned positions and transformer blocks over a caption.

    Args:
        dim: Width of the token features (SD3's ``joint_attention_dim``).
        max_length: Tokens per caption.
        depth: Transformer blocks.
        num_heads: Attention heads.
    """

    def __init__(self, dim: int = 64, max_length: int = 10, depth: int = 1, num_heads: int = 4):
        super().__init__()
        self.tokens = nn.Embedding(len(VOCABULARY), dim)
        self.positions = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio=2.0) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.pooled = nn.Linear(dim, dim)
        self.tokenizer = ShapesTokenizer(max_length)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode token ids ``(N, L)``.

        Returns:
            ``prompt_embeds`` ``(N, L, dim)`` and ``pooled_prompt_embeds`` ``(N, dim)``.
        """
        h = self.tokens(ids) + self.positions[: ids.shape[1]]  # (N, L, D)
        h = self.norm(self.blocks(h))
        return h, self.pooled(h.mean(dim=1))  # (N, L, D), (N, D)

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize and encode captions: ``(N, L, dim)`` and ``(N, dim)`` as :meth:`forward`."""
        return self(self.tokenizer(captions).to(self.positions.device))
