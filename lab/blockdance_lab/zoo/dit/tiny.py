"""The embedded default: a tiny pixel-space DiT trained here on procedural shapes.

No weights can be downloaded, so the project trains its own small DiT on the
coloured-shape images of :mod:`blockdance_lab.data.shapes` and ships it. This module
holds its configuration, its loss (eps-prediction, DiT's linear noise schedule, class
dropout for guidance), save/load, and its :data:`RECIPE`
(``python -m blockdance_lab.zoo.train dit``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from blockdance import lazy
from blockdance_dit.model import DiT
from blockdance_lab.data.shapes import make_batch as make_shapes
from blockdance_lab.training import (
    ModelFiles,
    Recipe,
    linear_alphas_cumprod,
    min_snr_mean,
    save_weights,
    train_with_ema,
)
from blockdance_lab.training import TrainConfig as BaseTrainConfig
from blockdance_lab.zoo.workloads import image_probe

ASSETS = Path(__file__).parent / "assets"
DEFAULT_WEIGHTS = ASSETS / "tiny_dit_shapes32.safetensors"


@dataclass(frozen=True)
class TinyDiTConfig:
    """Architecture of the tiny DiT (kwargs of :class:`~blockdance_dit.model.DiT`)."""

    input_size: int = 32
    patch_size: int = 4
    in_channels: int = 3
    hidden_size: int = 128
    depth: int = 8
    num_heads: int = 4
    mlp_ratio: float = 2.0
    class_dropout_prob: float = 0.1
    num_classes: int = 16
    learn_sigma: bool = False

    def build(self) -> DiT:
        return DiT(**asdict(self))


@dataclass
class TrainConfig(BaseTrainConfig):
    """Training hyper-parameters (see :class:`blockdance_lab.training.TrainConfig`), plus:

    Args:
        min_snr: Min-SNR-gamma loss weighting (Hang et al., ICCV 2023): the eps loss of
            step t is weighted by ``min(SNR_t, gamma) / SNR_t``; 0 turns it off.
    """

    min_snr: float = 5.0


#: ``make_batch(n, seed, start)``: images ``(n, 3, H, W)`` in [-1, 1] and labels ``(n,)``.
MakeBatch = Callable[[int, int, int], tuple[torch.Tensor, torch.Tensor]]


def shape_batches(model_cfg: TinyDiTConfig) -> MakeBatch:
    """The shipped model's data: shape images at the model's size and their class labels."""
    return lambda n, seed, start: make_shapes(n, seed, model_cfg.input_size, start)[:2]


def train_tiny_dit(
    model_cfg: TinyDiTConfig,
    cfg: TrainConfig,
    make_batch: MakeBatch | None = None,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
    on_step: Callable[[int, DiT], None] | None = None,
) -> tuple[DiT, dict[str, Any]]:
    """Train with eps-prediction on freshly rendered batches; return the EMA model.

    Args:
        model_cfg: Architecture.
        cfg: Hyper-parameters.
        make_batch: ``make_batch(n, seed, start)`` returns images (n, 3, H, W) in [-1, 1]
            and labels (n,); default: :func:`shape_batches`, the shipped model's data.
        progress: Show a progress bar with the loss.
        device: Where to train. Random draws stay on the CPU generator, so a run's
            data, timesteps and noise are the same on any device.
        on_step: Called after each step with its index and the EMA model.

    Returns:
        The EMA model (eval mode, on the CPU) and a log: steps run, wall time, final losses.
    """
    abar = linear_alphas_cumprod()  # (T,) on the CPU
    batch = shape_batches(model_cfg) if make_batch is None else make_batch

    def loss_fn(model: DiT, step: int, gen: torch.Generator) -> torch.Tensor:
        x0, y = batch(cfg.batch_size, cfg.seed, step * cfg.batch_size)  # (B, 3, H, W), (B,)
        t = torch.randint(0, len(abar), (x0.shape[0],), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        x0, noise, a, t, y = (v.to(device) for v in (x0, noise, a, t, y))
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        per_sample = F.mse_loss(model(xt, t, y), noise, reduction="none").mean(dim=(1, 2, 3))
        return min_snr_mean(per_sample, a, cfg.min_snr)

    return train_with_ema(
        model_cfg.build,
        loss_fn,
        cfg,
        desc="train tiny DiT",
        progress=progress,
        device=device,
        on_step=on_step,
    )


#: The tiny DiT's weights files (``python -m blockdance_lab.zoo.train dit`` makes them).
FILES: ModelFiles[DiT] = ModelFiles("dit", "tiny DiT", TinyDiTConfig, DEFAULT_WEIGHTS)


def save_tiny_dit(model: DiT, model_cfg: TinyDiTConfig, path: Path, meta: dict[str, Any]) -> None:
    """Write fp16 safetensors and a JSON sidecar with the config and training log."""
    save_weights(model, model_cfg, path, meta)


def load_tiny_dit(path: Path | str = DEFAULT_WEIGHTS, dtype: torch.dtype = torch.float32) -> DiT:
    """Build the tiny DiT from its weights and their sidecar, by default the shipped ones."""
    return FILES.load(path, dtype)


RECIPE: Recipe[DiT] = Recipe(
    FILES,
    TrainConfig,
    train_tiny_dit,
    sampler=lazy("blockdance_lab.zoo.dit.workloads", "tiny_shapes_sampler"),
    probe=image_probe,
    model_flags={
        "--hidden": "hidden_size",
        "--depth": "depth",
        "--heads": "num_heads",
        "--mlp-ratio": "mlp_ratio",
    },
)
