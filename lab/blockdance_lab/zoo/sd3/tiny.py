"""A tiny Stable Diffusion 3 trained here: diffusers' SD3Transformer2DModel on shape captions.

No weights can be downloaded, so the MMDiT plugin ships a small model of SD3's architecture
(diffusers' ``SD3Transformer2DModel``: joint image/text blocks, the last one context-pre-only)
trained with rectified flow on the captioned coloured-shape images of
:mod:`blockdance_lab.data.shapes`, with its own text encoder (:mod:`blockdance_lab.data.captions`).
It works in pixel space (no VAE): 32 px, patch 4, 64 image tokens and 10 caption tokens.

Training follows SD3: ``x_t = (1 - s) x_0 + s e`` with ``s`` drawn logit-normal, the
transformer predicts the velocity ``e - x_0`` at timestep ``1000 s``, and 10% of captions are
dropped to the empty caption for classifier-free guidance. The modulation and output layers
start at zero as in DiT, so every block starts as the identity. Its :data:`RECIPE` trains it
(``python -m blockdance_lab.zoo.train sd3``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.transformers.transformer_sd3 import SD3Transformer2DModel
from torch import nn

from blockdance import lazy
from blockdance_lab.data.captions import TinyTextEncoder
from blockdance_lab.data.shapes import make_batch as make_shapes
from blockdance_lab.training import ModelFiles, Recipe, save_weights, train_with_ema
from blockdance_lab.training import TrainConfig as BaseTrainConfig
from blockdance_lab.zoo.workloads import image_probe, seed_captions

ASSETS = Path(__file__).parent / "assets"
DEFAULT_WEIGHTS = ASSETS / "tiny_sd3_shapes32.safetensors"

__all__ = [
    "DEFAULT_WEIGHTS",
    "RECIPE",
    "TinySD3",
    "TinySD3Config",
    "TrainConfig",
    "caption_batches",
    "load_tiny_sd3",
    "save_tiny_sd3",
    "seed_captions",
    "train_tiny_sd3",
]


@dataclass(frozen=True)
class TinySD3Config:
    """Architecture: SD3Transformer2DModel kwargs plus the text encoder's size."""

    sample_size: int = 32
    patch_size: int = 4
    in_channels: int = 3
    num_layers: int = 8
    attention_head_dim: int = 32
    num_attention_heads: int = 4
    text_dim: int = 64
    text_depth: int = 1
    max_length: int = 10
    qk_norm: str = "rms_norm"

    def build(self) -> TinySD3:
        return TinySD3(self)


class TinySD3(nn.Module):
    """The shipped artefact: the SD3 transformer and the text encoder it was trained with.

    Args:
        cfg: Architecture.
    """

    def __init__(self, cfg: TinySD3Config) -> None:
        super().__init__()
        self.cfg = cfg
        inner = cfg.num_attention_heads * cfg.attention_head_dim
        self.transformer = SD3Transformer2DModel(
            sample_size=cfg.sample_size,
            patch_size=cfg.patch_size,
            in_channels=cfg.in_channels,
            out_channels=cfg.in_channels,
            num_layers=cfg.num_layers,
            attention_head_dim=cfg.attention_head_dim,
            num_attention_heads=cfg.num_attention_heads,
            joint_attention_dim=cfg.text_dim,
            caption_projection_dim=inner,
            pooled_projection_dim=cfg.text_dim,
            pos_embed_max_size=cfg.sample_size // cfg.patch_size,
            qk_norm=cfg.qk_norm,
        )
        self.text_encoder = TinyTextEncoder(cfg.text_dim, cfg.max_length, cfg.text_depth)

    def zero_init(self) -> None:
        """DiT's adaLN-Zero start: zero modulation and output layers (blocks are identities)."""
        for name, module in self.transformer.named_modules():
            if isinstance(module, nn.Linear) and (
                name.endswith(("norm1.linear", "norm1_context.linear", "norm_out.linear"))
                or name == "proj_out"
            ):
                nn.init.zeros_(module.weight)
                nn.init.zeros_(module.bias)

    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``prompt_embeds`` ``(N, L, D)`` and ``pooled_prompt_embeds`` ``(N, D)``."""
        return self.text_encoder.encode(captions)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """Velocity ``(N, C, H, W)`` at noise levels ``sigma`` ``(N,)`` in [0, 1]."""
        embeds, pooled = self.encode(captions)
        out = self.transformer(
            hidden_states=x,
            encoder_hidden_states=embeds,
            pooled_projections=pooled,
            timestep=sigma * 1000,
            return_dict=False,
        )
        return out[0]


@dataclass
class TrainConfig(BaseTrainConfig):
    """Training hyper-parameters (see :class:`blockdance_lab.training.TrainConfig`), plus:

    Args:
        caption_dropout: Share of captions replaced by the empty caption.
        logit_mean: Mean of the logit-normal noise-level distribution (SD3: 0).
        logit_std: Its standard deviation (SD3: 1).
    """

    steps: int = 3800
    lr: float = 5e-3
    caption_dropout: float = 0.1
    logit_mean: float = 0.0
    logit_std: float = 1.0


#: ``make_batch(n, seed, start)``: images ``(n, 3, H, W)`` in [-1, 1] and their n captions.
MakeBatch = Callable[[int, int, int], tuple[torch.Tensor, list[str]]]


def caption_batches(model_cfg: TinySD3Config) -> MakeBatch:
    """The shipped model's data: captioned shape images at the model's size."""

    def batch(n: int, seed: int, start: int) -> tuple[torch.Tensor, list[str]]:
        images, _, captions = make_shapes(n, seed, model_cfg.sample_size, start)
        return images, captions

    return batch


def train_tiny_sd3(
    model_cfg: TinySD3Config,
    cfg: TrainConfig,
    make_batch: MakeBatch | None = None,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
    on_step: Callable[[int, TinySD3], None] | None = None,
) -> tuple[TinySD3, dict[str, Any]]:
    """Train with rectified flow on freshly rendered batches; return the EMA model.

    Args:
        model_cfg: Architecture.
        cfg: Hyper-parameters.
        make_batch: ``make_batch(n, seed, start)`` returns images ``(n, 3, H, W)`` in [-1, 1]
            and their n captions; default: :func:`caption_batches`, the shipped model's data.
        progress: Show a progress bar with the loss.
        device: Where to train; random draws stay on the CPU generator.
        on_step: Called after each step with its index and the EMA model.

    Returns:
        The EMA model (eval mode, on the CPU) and a log: steps run, wall time, final loss.
    """

    batch = caption_batches(model_cfg) if make_batch is None else make_batch

    def build() -> TinySD3:
        model = model_cfg.build()
        model.zero_init()
        return model

    def loss_fn(model: TinySD3, step: int, gen: torch.Generator) -> torch.Tensor:
        x0, captions = batch(cfg.batch_size, cfg.seed, step * cfg.batch_size)  # (B, 3, H, W)
        b = x0.shape[0]
        drop = torch.rand(b, generator=gen) < cfg.caption_dropout
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        sigma = torch.sigmoid(cfg.logit_mean + cfg.logit_std * torch.randn(b, generator=gen))
        noise = torch.randn(x0.shape, generator=gen)
        x0, noise, sigma = (v.to(device) for v in (x0, noise, sigma))
        s = sigma.view(-1, 1, 1, 1)
        xt = (1 - s) * x0 + s * noise  # (B, 3, H, W)
        return F.mse_loss(model(xt, sigma, captions), noise - x0)

    return train_with_ema(
        build,
        loss_fn,
        cfg,
        desc="train tiny SD3",
        progress=progress,
        device=device,
        on_step=on_step,
    )


#: The tiny SD3's weights files (``python -m blockdance_lab.zoo.train sd3`` makes them).
FILES: ModelFiles[TinySD3] = ModelFiles("sd3", "tiny SD3", TinySD3Config, DEFAULT_WEIGHTS)


def save_tiny_sd3(model: TinySD3, path: Path, meta: dict[str, Any]) -> None:
    """Write fp16 safetensors (transformer and text encoder) and a JSON sidecar."""
    save_weights(model, model.cfg, path, meta)


def load_tiny_sd3(
    path: Path | str = DEFAULT_WEIGHTS, dtype: torch.dtype = torch.float32
) -> TinySD3:
    """Build the tiny SD3 from its weights and their sidecar, by default the shipped ones."""
    return FILES.load(path, dtype)


RECIPE: Recipe[TinySD3] = Recipe(
    FILES,
    TrainConfig,
    train_tiny_sd3,
    sampler=lazy("blockdance_lab.zoo.sd3.workloads", "tiny_sd3_sampler"),
    probe=image_probe,
    model_flags={"--layers": "num_layers"},
)
