"""The embedded default: a tiny pixel-space DiT trained here on procedural shapes.

No weights can be downloaded, so the project trains its own small DiT on the
coloured-shape images of :mod:`blockdance.data.shapes` and ships it. This module
holds its configuration, the training loop (eps-prediction, DiT's linear noise
schedule, class dropout for guidance, EMA weights), and save/load.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from blockdance_dit.model import DiT

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
class TrainConfig:
    """Training hyper-parameters.

    Args:
        steps: Optimiser steps (training also stops at ``max_minutes``).
        batch_size: Images per step, rendered fresh each step.
        lr: Peak AdamW learning rate (linear warm-up, cosine decay).
        warmup: Warm-up steps.
        ema_decay: EMA decay of the shipped weights.
        seed: Data and initialisation seed.
        max_minutes: Wall-clock budget.
        min_snr: Min-SNR-gamma loss weighting (Hang et al., ICCV 2023): the eps loss of
            step t is weighted by ``min(SNR_t, gamma) / SNR_t``; 0 turns it off.
    """

    steps: int = 5800
    batch_size: int = 64
    lr: float = 6e-3
    warmup: int = 300
    ema_decay: float = 0.998
    seed: int = 0
    max_minutes: float = 38.0
    min_snr: float = 5.0
    extra: dict[str, Any] = field(default_factory=dict)


def linear_alphas_cumprod(num_train_timesteps: int = 1000) -> torch.Tensor:
    """DiT's linear beta schedule (1e-4 to 0.02), as cumulative alpha products."""
    betas = torch.linspace(1e-4, 0.02, num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0).float()  # (T,)


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def train_tiny_dit(
    model_cfg: TinyDiTConfig,
    cfg: TrainConfig,
    make_batch: Callable[[int, int, int], tuple[torch.Tensor, torch.Tensor]],
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[DiT, dict[str, Any]]:
    """Train with eps-prediction on freshly rendered batches; return the EMA model.

    Args:
        model_cfg: Architecture.
        cfg: Hyper-parameters.
        make_batch: ``make_batch(n, seed, start)`` returns images (n, 3, H, W) in [-1, 1]
            and labels (n,).
        progress: Show a progress bar with the loss.
        device: Where to train. Random draws stay on the CPU generator, so a run's
            data, timesteps and noise are the same on any device.

    Returns:
        The EMA model (eval mode, on the CPU) and a log: steps run, wall time, final losses.
    """
    torch.manual_seed(cfg.seed)
    model = model_cfg.build().to(device).train()
    ema = model_cfg.build().to(device).eval().requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    abar = linear_alphas_cumprod()  # (T,) on the CPU
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    start = time.perf_counter()
    recent: deque[torch.Tensor] = deque(maxlen=100)  # detached losses: no sync per step
    bar = tqdm(range(cfg.steps), desc="train tiny DiT", disable=not progress)
    step = 0
    for step in bar:
        x0, y = make_batch(cfg.batch_size, cfg.seed, step * cfg.batch_size)  # (B, 3, H, W), (B,)
        t = torch.randint(0, len(abar), (x0.shape[0],), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        x0, noise, a, t, y = (v.to(device) for v in (x0, noise, a, t, y))
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        per_sample = F.mse_loss(model(xt, t, y), noise, reduction="none").mean(dim=(1, 2, 3))
        if cfg.min_snr > 0:
            snr = a.flatten() / (1 - a.flatten())  # (B,)
            per_sample = per_sample * snr.clamp(max=cfg.min_snr) / snr
        loss = per_sample.mean()
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
        recent.append(loss.detach())
        if step % 10 == 0 and progress:
            bar.set_postfix(loss=f"{float(torch.stack(list(recent)[-50:]).mean()):.4f}")
        if time.perf_counter() - start > cfg.max_minutes * 60:
            break
    log = {
        "steps_run": step + 1,
        "wall_minutes": (time.perf_counter() - start) / 60,
        "samples_seen": (step + 1) * cfg.batch_size,
        "final_loss_avg100": float(torch.stack(list(recent)).mean()),
        "device": str(device),
    }
    return ema.cpu(), log


def save_tiny_dit(model: DiT, model_cfg: TinyDiTConfig, path: Path, meta: dict[str, Any]) -> None:
    """Write fp16 safetensors and a JSON sidecar with the config and training log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    sidecar = {"config": asdict(model_cfg), **meta}
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=1))


def load_tiny_dit(path: Path | str = DEFAULT_WEIGHTS, dtype: torch.dtype = torch.float32) -> DiT:
    """Build the tiny DiT from shipped weights (eval mode).

    Args:
        path: The ``.safetensors`` file; its ``.json`` sidecar holds the config.
        dtype: Parameter dtype after loading.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"tiny DiT weights not found at {path}; train them with scripts/train_tiny_dit.py"
        )
    cfg = TinyDiTConfig(**json.loads(path.with_suffix(".json").read_text())["config"])
    model = cfg.build()
    state = load_file(str(path))
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.to(dtype).eval()
