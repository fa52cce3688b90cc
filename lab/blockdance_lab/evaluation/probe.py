"""A small CNN probe for the procedural shape images: classifier and feature extractor.

The probe measures the quality of images the tiny embedded-default models generate: its
class accuracy on them (does the sample show the class it was asked for?) and the Fréchet
distance between its penultimate features on generated and on real images. It is trained on
``ShapesDataset`` images rendered on the fly and shipped as fp16 safetensors plus a JSON
config (``assets/probe_shapes32.safetensors`` / ``.json``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from blockdance_lab.data.shapes import CLASS_NAMES, make_batch, make_video_batch, num_classes
from blockdance_lab.evaluation.metrics import class_accuracy
from blockdance_lab.weights import read_model, write_weights

__all__ = [
    "DEFAULT_PROBE_PATH",
    "DEFAULT_VIDEO_PROBE_PATH",
    "ProbeNet",
    "evaluate_probe",
    "load_probe",
    "probe_features",
    "save_probe",
    "train_probe",
]

DEFAULT_PROBE_PATH = (
    Path(__file__).resolve().parent.parent / "assets" / "probe_shapes32.safetensors"
)
"""The shipped probe's weights; its config sits beside it with a ``.json`` suffix."""

DEFAULT_VIDEO_PROBE_PATH = DEFAULT_PROBE_PATH.with_name("probe_shapes32_video.safetensors")
"""The probe for video frames: the same network trained on frames of the moving-shape
videos, whose shapes are smaller than the images' (the image probe gets 0.86 on them)."""


def shape_batch(
    n: int, seed: int, image_size: int = 32, start: int = 0, frames: int = 0
) -> tuple[Tensor, Tensor]:
    """Images ``(n, 3, H, W)`` and labels ``(n,)``: samples ``start..`` of ``seed``, or with
    ``frames > 0`` the frames of ``n // frames`` videos ``start // frames..``, in order."""
    if frames <= 0:
        images, labels, _ = make_batch(n, seed, image_size, start=start)
        return images, labels
    clips = max(1, n // frames)
    videos, labels, _ = make_video_batch(clips, seed, image_size, frames, start=start // frames)
    return videos.flatten(0, 1), labels.repeat_interleave(frames)  # (clips*F, 3, H, W)


_ARCH = "ProbeNet"

# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------


def _conv_block(c_in: int, c_out: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.GroupNorm(min(groups, c_out), c_out),
        nn.SiLU(),
    )


class ProbeNet(nn.Module):
    """Three conv stages (two 3×3 convs each, 2× downsampling between), avg+max pooling."""

    def __init__(
        self,
        num_classes: int = num_classes,
        in_channels: int = 3,
        widths: tuple[int, ...] = (32, 64, 96),
        feature_dim: int = 128,
        groups: int = 8,
    ) -> None:
        """Builds the probe.

        Args:
            num_classes: Number of output classes.
            in_channels: Image channels.
            widths: Channels of each stage; every stage after the first halves the resolution.
            feature_dim: Size of the penultimate feature vector (used for Fréchet distance).
            groups: GroupNorm groups (capped at the channel count).
        """
        super().__init__()
        self.config: dict[str, Any] = {
            "num_classes": num_classes,
            "in_channels": in_channels,
            "widths": list(widths),
            "feature_dim": feature_dim,
            "groups": groups,
        }
        stages: list[nn.Module] = []
        c_in = in_channels
        for i, width in enumerate(widths):
            if i > 0:
                stages.append(nn.AvgPool2d(2))
            stages += [_conv_block(c_in, width, groups), _conv_block(width, width, groups)]
            c_in = width
        self.body = nn.Sequential(*stages)
        self.neck = nn.Sequential(nn.Linear(2 * c_in, feature_dim), nn.SiLU())
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features.

        Args:
            x: (N, C, H, W) images in [-1, 1].

        Returns:
            (N, feature_dim) features.
        """
        h = self.body(x)  # (N, C', H', W')
        pooled = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)  # (N, 2C')
        return self.neck(pooled)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits.

        Args:
            x: (N, C, H, W) images in [-1, 1].

        Returns:
            (N, num_classes) logits.
        """
        return self.head(self.features(x))


# --------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------


def _augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """Light, label-preserving augmentation: flips, blur, brightness and noise.

    Horizontal flips keep every class (all shapes are mirror-symmetric); blur and noise make
    the probe tolerant of the softer, noisier images small generators produce.
    """
    n = x.shape[0]

    def coin(p: float) -> Tensor:
        return (torch.rand(n, 1, 1, 1, generator=gen) < p).float()

    x = torch.lerp(x, x.flip(-1), coin(0.5))
    k = torch.tensor([0.25, 0.5, 0.25])
    kernel = (k[:, None] * k[None, :]).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    x = torch.lerp(x, blurred, coin(0.3))
    x = x + 0.1 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 2.0
    sigma = 0.08 * torch.rand(n, 1, 1, 1, generator=gen) * coin(0.5)
    x = x + sigma * torch.randn(x.shape, generator=gen)
    return x.clamp(-1.0, 1.0)


def train_probe(
    steps: int = 300,
    batch_size: int = 128,
    seed: int = 0,
    image_size: int = 32,
    lr: float = 3e-3,
    model: ProbeNet | None = None,
    progress: bool = True,
    frames: int = 0,
) -> ProbeNet:
    """Trains a probe on freshly rendered ``ShapesDataset`` images (no sample is seen twice).

    Step ``k`` uses samples ``k * batch_size ..`` of ``seed``; AdamW with a linear warm-up and
    cosine decay, label smoothing 0.05, light augmentation.

    Args:
        steps: Optimisation steps.
        batch_size: Images per step.
        seed: Seed of the training data and of the augmentation.
        image_size: Image height and width in pixels.
        lr: Peak learning rate.
        model: A probe to continue training; a new default ``ProbeNet`` if ``None``.
        progress: Show a tqdm progress bar.
        frames: Train on the frames of moving-shape videos of this length instead of
            images (``batch_size // frames`` videos per step).

    Returns:
        The trained probe, in eval mode.
    """
    torch.manual_seed(seed)
    model = model if model is not None else ProbeNet()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(range(steps), desc="probe", disable=not progress, mininterval=1.0)
    ema_loss, ema_acc = 0.0, 0.0
    for step in bar:
        images, labels = shape_batch(batch_size, seed, image_size, step * batch_size, frames)
        logits = model(_augment(images, gen))
        loss = F.cross_entropy(logits, labels, label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        decay = 0.0 if step == 0 else 0.9
        ema_loss = decay * ema_loss + (1.0 - decay) * float(loss.detach())
        ema_acc = decay * ema_acc + (1.0 - decay) * class_accuracy(logits.detach(), labels)
        bar.set_postfix(loss=f"{ema_loss:.3f}", acc=f"{ema_acc:.3f}")
    return model.eval()


@torch.no_grad()
def probe_features(model: ProbeNet, images: Tensor, batch_size: int = 512) -> Tensor:
    """Penultimate probe features of many images, in batches.

    Args:
        model: The probe.
        images: (N, 3, H, W) images in [-1, 1].
        batch_size: Images per forward pass.

    Returns:
        (N, feature_dim) float32 features on the CPU.
    """
    model.eval()
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    out = [
        model.features(chunk.to(device=device, dtype=dtype)).float().cpu()
        for chunk in images.split(batch_size)
    ]
    return torch.cat(out)


@torch.no_grad()
def evaluate_probe(
    model: ProbeNet,
    n: int = 2048,
    seed: int = 1_000_003,
    image_size: int = 32,
    batch_size: int = 512,
    frames: int = 0,
) -> float:
    """Accuracy of the probe on ``n`` images of a (held-out) seed.

    Args:
        model: The probe.
        n: Number of images.
        seed: Data seed; use one that differs from the training seed.
        image_size: Image height and width in pixels.
        batch_size: Images per forward pass.
        frames: Score video frames of this length instead of images.

    Returns:
        Accuracy in [0, 1].
    """
    model.eval()
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    correct = total = 0
    for start in range(0, n, batch_size):
        images, labels = shape_batch(min(batch_size, n - start), seed, image_size, start, frames)
        logits = model(images.to(device=device, dtype=dtype)).float().cpu()
        correct += int((logits.argmax(dim=1) == labels).sum())
        total += len(labels)
    return correct / total


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def save_probe(model: ProbeNet, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Writes the probe as fp16 safetensors plus a JSON config beside it (``.json`` suffix).

    Args:
        model: The probe.
        path: Destination ``.safetensors`` file.
        metadata: Extra JSON-serialisable facts to record (training data, accuracy, ...).

    Returns:
        The path of the weights.
    """
    config = {
        "arch": _ARCH,
        "config": model.config,
        "class_names": CLASS_NAMES,
        "input": "float images in [-1, 1], shape (N, 3, H, W); trained at H = W = 32",
        "dtype": "float16",
        "metadata": metadata or {},
    }
    return write_weights(model, path, config, metadata={"format": "pt", "arch": _ARCH}, indent=2)


def _build(config: dict[str, Any]) -> ProbeNet:
    return ProbeNet(**{**config, "widths": tuple(config["widths"])})


def load_probe(
    path: str | Path | None = None, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> ProbeNet:
    """Loads a probe written by ``save_probe`` (by default, the shipped one).

    Args:
        path: The ``.safetensors`` file; ``None`` for ``DEFAULT_PROBE_PATH``.
        dtype: Parameter dtype after loading (weights are stored in fp16).
        device: Device to load onto.

    Returns:
        The probe, in eval mode.

    Raises:
        WeightsFileNotFoundError: No weights or no config (also a ``FileNotFoundError``).
        WeightsFileError: Truncated weights, or a config that is not JSON, is not a
            ``ProbeNet`` config, or lacks the ``"config"`` that builds it.
        CheckpointMismatchError: The weights do not fit the config.
    """
    remedy = (
        "train one with scripts/train_probe.py, or for the shipped probes restore them from "
        "the repository or reinstall the package"
    )
    path = DEFAULT_PROBE_PATH if path is None else path
    return read_model(
        path, _build, family="probe", remedy=remedy, arch=_ARCH, dtype=dtype, device=device
    )
