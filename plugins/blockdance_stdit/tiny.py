"""A tiny Open-Sora STDiT trained here on captioned moving-shape videos.

No weights can be downloaded, so the STDiT plugin ships a small model of the reference
:class:`~blockdance_stdit.model.STDiT` (spatial and temporal self-attention, cross-attention
to the caption, MLP; adaLN-single) trained on the videos of :mod:`blockdance.data.shapes`:
8 frames of 32×32 pixels, patch (1, 4, 4), so 8 × 64 tokens. The caption comes from the tiny
text encoder of :mod:`blockdance.data.captions`, trained jointly and saved in the same file.

Training is Open-Sora v1's: ε-prediction on DiT's linear β schedule (here with min-SNR-5
weighting), captions dropped to the model's null caption with p = 0.1 for guidance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from blockdance.data.captions import ShapesTokenizer, TinyTextEncoder
from blockdance.data.shapes import BACKGROUNDS, COLORS, DIRECTIONS, SHAPES, caption_for, num_classes
from blockdance.training import TrainConfig as BaseTrainConfig
from blockdance.training import linear_alphas_cumprod, load_weights, save_weights, train_with_ema
from blockdance_stdit.model import STDiT

ASSETS = Path(__file__).parent / "assets"
DEFAULT_WEIGHTS = ASSETS / "tiny_stdit_shapes8x32.safetensors"

__all__ = [
    "DEFAULT_WEIGHTS",
    "TinySTDiT",
    "TinySTDiTConfig",
    "TrainConfig",
    "load_tiny_stdit",
    "save_tiny_stdit",
    "seed_captions",
    "train_tiny_stdit",
]


@dataclass(frozen=True)
class TinySTDiTConfig:
    """Architecture: the reference STDiT's kwargs plus the text encoder's size."""

    frames: int = 8
    image_size: int = 32
    patch_size: int = 4
    hidden_size: int = 128
    depth: int = 8
    num_heads: int = 4
    mlp_ratio: float = 2.0
    class_dropout_prob: float = 0.1
    text_dim: int = 64
    text_depth: int = 1
    max_length: int = 10

    def build(self) -> TinySTDiT:
        return TinySTDiT(self)


class TinySTDiT(nn.Module):
    """The shipped artefact: the STDiT and the text encoder it was trained with.

    Args:
        cfg: Architecture.
    """

    def __init__(self, cfg: TinySTDiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stdit = STDiT(
            input_size=(cfg.frames, cfg.image_size, cfg.image_size),
            in_channels=3,
            patch_size=(1, cfg.patch_size, cfg.patch_size),
            hidden_size=cfg.hidden_size,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            class_dropout_prob=cfg.class_dropout_prob,
            pred_sigma=False,
            caption_channels=cfg.text_dim,
            model_max_length=cfg.max_length,
        )
        self.text_encoder = TinyTextEncoder(cfg.text_dim, cfg.max_length, cfg.text_depth)
        self.tokenizer = ShapesTokenizer(cfg.max_length)

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        """Caption features ``(N, 1, L, text_dim)``, the STDiT's ``y``."""
        ids = self.tokenizer(captions).to(self.text_encoder.positions.device)
        embeds, _ = self.text_encoder(ids)  # (N, L, D)
        return embeds[:, None]

    def forward(self, x: torch.Tensor, t: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """Noise prediction ``(N, 3, T, H, W)`` for videos ``x`` at timesteps ``t``."""
        return self.stdit(x, t, self.encode(captions))


def seed_captions(seeds: Sequence[int]) -> list[str]:
    """The caption each seed asks for: class ``seed % 16`` on background
    ``(seed // 16) % 5``, moving in direction ``(seed // 80) % 4``."""
    out = []
    for s in seeds:
        k = s % num_classes
        out.append(
            caption_for(
                SHAPES[k // len(COLORS)],
                COLORS[k % len(COLORS)],
                BACKGROUNDS[(s // num_classes) % len(BACKGROUNDS)],
                DIRECTIONS[(s // (num_classes * len(BACKGROUNDS))) % len(DIRECTIONS)],
            )
        )
    return out


@dataclass
class TrainConfig(BaseTrainConfig):
    """Training hyper-parameters (see :class:`blockdance.training.TrainConfig`), plus:

    Args:
        min_snr: Min-SNR-gamma weighting of the ε loss; 0 turns it off.
    """

    # Not yet run to completion: 1500 steps of 16 videos take about 36 min on 2 CPU cores
    # (1.45 s a step, measured), a tenth of the images the tiny DiT saw. Choose them with a
    # GPU sweep before shipping weights.
    steps: int = 1500
    batch_size: int = 16
    lr: float = 4e-3
    min_snr: float = 5.0


def train_tiny_stdit(
    model_cfg: TinySTDiTConfig,
    cfg: TrainConfig,
    make_batch: Callable[[int, int, int], tuple[torch.Tensor, list[str]]],
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[TinySTDiT, dict[str, Any]]:
    """Train with ε-prediction on freshly rendered videos; return the EMA model.

    Args:
        model_cfg: Architecture.
        cfg: Hyper-parameters.
        make_batch: ``make_batch(n, seed, start)`` returns videos ``(n, T, 3, H, W)`` in
            [-1, 1] and their captions.
        progress: Show a progress bar with the loss.
        device: Where to train; random draws stay on the CPU generator.
    """
    abar = linear_alphas_cumprod()  # (T,)

    def loss_fn(model: TinySTDiT, step: int, gen: torch.Generator) -> torch.Tensor:
        videos, captions = make_batch(cfg.batch_size, cfg.seed, step * cfg.batch_size)
        x0 = videos.permute(0, 2, 1, 3, 4)  # (B, 3, T, H, W)
        t = torch.randint(0, len(abar), (x0.shape[0],), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1, 1)
        x0, noise, a, t = (v.to(device) for v in (x0, noise, a, t))
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        per_sample = F.mse_loss(model(xt, t, captions), noise, reduction="none").mean((1, 2, 3, 4))
        if cfg.min_snr > 0:
            snr = a.flatten() / (1 - a.flatten())  # (B,)
            per_sample = per_sample * snr.clamp(max=cfg.min_snr) / snr
        return per_sample.mean()

    return train_with_ema(
        model_cfg.build, loss_fn, cfg, desc="train tiny STDiT", progress=progress, device=device
    )


def save_tiny_stdit(model: TinySTDiT, path: Path, meta: dict[str, Any]) -> None:
    """Write fp16 safetensors (STDiT and text encoder) and a JSON sidecar."""
    save_weights(model, model.cfg, path, meta)


def load_tiny_stdit(
    path: Path | str = DEFAULT_WEIGHTS, dtype: torch.dtype = torch.float32
) -> TinySTDiT:
    """Build the tiny STDiT from shipped weights (eval mode).

    Args:
        path: The ``.safetensors`` file; its ``.json`` sidecar holds the config.
        dtype: Parameter dtype after loading.
    """
    return load_weights(
        path,
        lambda config: TinySTDiTConfig(**config).build(),
        family="tiny STDiT",
        script="scripts/train_tiny_stdit.py",
        dtype=dtype,
    )
