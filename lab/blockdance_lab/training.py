"""What the small shipped models share to be trained: the loop (AdamW, warm-up and cosine
decay, EMA), its command-line flags, their weights files, and :class:`Recipe`.

Each model brings only its loss (:data:`StepLoss`): how it renders a batch and noises it. The
loop draws nothing itself; every random draw of a step comes from the generator it hands to
the loss, seeded from the config, so a run is reproducible on any device. A model's
:class:`Recipe` declares the rest (configs, data, how to train, load and sample it), and
``python -m blockdance_lab.zoo.train`` runs it.
"""

from __future__ import annotations

import argparse
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import nn
from tqdm import tqdm

from blockdance_lab.weights import read_model, write_weights
from blockdance_lab.workload import QualityProbe

__all__ = [
    "ModelFiles",
    "Recipe",
    "StepLoss",
    "TrainConfig",
    "add_default_argument",
    "add_train_arguments",
    "linear_alphas_cumprod",
    "load_weights",
    "lr_at",
    "min_snr_mean",
    "save_weights",
    "train_config_from",
    "train_with_ema",
]

M = TypeVar("M", bound=nn.Module)

#: ``loss(model, step, generator)``: the training loss of step ``step``.
StepLoss = Callable[[M, int, torch.Generator], torch.Tensor]


@dataclass
class TrainConfig:
    """Hyper-parameters every small model shares.

    Args:
        steps: Optimiser steps (training also stops at ``max_minutes``).
        batch_size: Samples per step, rendered fresh each step.
        lr: Peak AdamW learning rate (linear warm-up, cosine decay to 10%).
        warmup: Warm-up steps.
        ema_decay: EMA decay of the shipped weights.
        seed: Data and initialisation seed.
        max_minutes: Wall-clock budget.
        extra: Free-form notes saved with the weights.
    """

    steps: int = 5800
    batch_size: int = 64
    lr: float = 6e-3
    warmup: int = 300
    ema_decay: float = 0.998
    seed: int = 0
    max_minutes: float = 38.0
    extra: dict[str, Any] = field(default_factory=dict)


def linear_alphas_cumprod(num_train_timesteps: int = 1000) -> torch.Tensor:
    """DiT's (and Open-Sora v1's) linear beta schedule, 1e-4 to 0.02, as cumulative alpha
    products ``(T,)``."""
    betas = torch.linspace(1e-4, 0.02, num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0).float()


def min_snr_mean(per_sample: torch.Tensor, alpha_bar: torch.Tensor, gamma: float) -> torch.Tensor:
    """Mean of per-sample ε losses under Min-SNR-γ weighting (Hang et al., ICCV 2023).

    Each sample's loss is scaled by ``min(snr, γ) / snr`` with ``snr = ᾱ / (1 − ᾱ)``, so the
    nearly clean timesteps stop dominating; ``gamma <= 0`` gives the plain mean.

    Args:
        per_sample: Losses ``(B,)``.
        alpha_bar: Cumulative alpha product of each sample's timestep, any shape of B elements.
        gamma: γ, the SNR at which the weight starts to fall.
    """
    if gamma > 0:
        snr = alpha_bar.flatten() / (1 - alpha_bar.flatten())  # (B,)
        per_sample = per_sample * snr.clamp(max=gamma) / snr
    return per_sample.mean()


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of ``step``: linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def train_with_ema(
    build: Callable[[], M],
    loss_fn: StepLoss[M],
    cfg: TrainConfig,
    *,
    desc: str = "train",
    progress: bool = True,
    device: str | torch.device = "cpu",
    on_step: Callable[[int, M], None] | None = None,
) -> tuple[M, dict[str, Any]]:
    """Train ``build()`` on ``loss_fn`` and return its EMA copy.

    Args:
        build: Makes the model (called twice: the trained model, then its EMA copy).
        loss_fn: The loss of one step; it draws every random number from the generator.
        cfg: Hyper-parameters.
        desc: Progress bar label.
        progress: Show a progress bar with the running loss.
        device: Where to train.
        on_step: Called after each step with the step index and the EMA model (e.g. to
            save snapshots of a run); it must not change the model.

    Returns:
        The EMA model (eval mode, on the CPU) and a log: steps run, wall time, final loss.
    """
    torch.manual_seed(cfg.seed)
    model = build().to(device).train()
    ema = build().to(device).eval().requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    start = time.perf_counter()
    recent: deque[torch.Tensor] = deque(maxlen=100)  # detached losses: no sync per step
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress)
    step = 0
    for step in bar:
        loss = loss_fn(model, step, gen)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
        recent.append(loss.detach())
        if on_step is not None:
            on_step(step, ema)
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


C = TypeVar("C", bound=TrainConfig)


def add_train_arguments(parser: argparse.ArgumentParser, cls: type[TrainConfig]) -> None:
    """Add one ``--flag`` per hyper-parameter of ``cls`` (``--batch-size`` for
    ``batch_size``) with its default, and ``--threads``, ``--device``, ``--no-progress``."""
    for f in fields(cls):
        if f.name != "extra":
            add_default_argument(parser, "--" + f.name.replace("_", "-"), f.default)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="e.g. cuda, for hyper-parameter sweeps")
    parser.add_argument("--no-progress", action="store_true")


def add_default_argument(parser: argparse.ArgumentParser, flag: str, default: Any) -> None:
    """Add ``flag`` parsed as its default's type; a bool as ``--flag`` / ``--no-flag``
    (``type=bool`` would read the string ``"False"`` as True)."""
    if isinstance(default, bool):
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
    else:
        parser.add_argument(flag, type=type(default), default=default)


def train_config_from(args: argparse.Namespace, cls: type[C]) -> C:
    """The ``cls`` config the flags of :func:`add_train_arguments` describe."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if f.name != "extra"})


def save_weights(model: nn.Module, config: Any, path: Path, meta: Mapping[str, Any]) -> None:
    """Write a small model's weights as fp16 safetensors and a JSON sidecar.

    Args:
        model: The trained model.
        config: Its architecture (a dataclass), saved as the sidecar's ``"config"``.
        path: The ``.safetensors`` file; the sidecar is ``path.with_suffix(".json")``.
        meta: Training hyper-parameters, log and command, saved beside the config.
    """
    write_weights(model, path, {"config": asdict(config), **meta})


def load_weights(
    path: Path | str,
    build: Callable[[dict[str, Any]], M],
    *,
    family: str,
    script: str,
    dtype: torch.dtype = torch.float32,
) -> M:
    """Build a model from :func:`save_weights` files, checking keys and shapes (eval mode).

    Args:
        path: The ``.safetensors`` file; its ``.json`` sidecar holds the config.
        build: Config dict from the sidecar -> the model to load into.
        family: Model name for the messages, e.g. ``"tiny SD3"``.
        script: The script that trains it, named when the weights are missing or do not fit.
        dtype: Parameter dtype after loading.

    Raises:
        WeightsFileNotFoundError: No weights or no sidecar (also a ``FileNotFoundError``).
        WeightsFileError: Truncated weights, or a sidecar that is not JSON or whose
            ``"config"`` is missing or does not build the model.
        CheckpointMismatchError: The weights do not fit the sidecar's config.
    """
    remedy = (
        f"retrain with {script}, or for the shipped weights restore them from the repository "
        "or reinstall the package"
    )
    return read_model(path, build, family=family, remedy=remedy, dtype=dtype)


@dataclass(frozen=True)
class ModelFiles(Generic[M]):
    """A small model's weights files: what builds the model from them and what makes them.

    Args:
        name: The recipe that trains it (``python -m blockdance_lab.zoo.train NAME``).
        family: What it is, for help and messages, e.g. ``"tiny DiT"``.
        config: The architecture dataclass; its defaults are the shipped model's and its
            ``build()`` makes the model.
        shipped: The shipped weights (a ``.safetensors`` file beside its JSON sidecar).
    """

    name: str
    family: str
    config: type[Any]
    shipped: Path

    @property
    def command(self) -> str:
        """The command that trains it, and its script in a checkout."""
        name = self.name
        return f"`python -m blockdance_lab.zoo.train {name}` (scripts/train_tiny_{name}.py)"

    def _build(self, config: dict[str, Any]) -> M:
        """The model of a sidecar's config, which must name every architecture field: a
        field added since the file was written would otherwise take today's default."""
        missing = sorted({f.name for f in fields(self.config)} - config.keys())
        if missing:
            raise TypeError(  # read_model names the file and the remedy
                f"no {', '.join(missing)}: the file predates these "
                f'architecture fields of {self.config.__name__}; add them to its "config" '
                "with the values it was trained with"
            )
        return self.config(**config).build()

    def load(self, path: Path | str | None = None, dtype: torch.dtype = torch.float32) -> M:
        """The model from :func:`save_weights` files (eval mode), by default the shipped ones."""
        return load_weights(
            self.shipped if path is None else path,
            self._build,
            family=self.family,
            script=self.command,
            dtype=dtype,
        )


@dataclass(frozen=True)
class Recipe(Generic[M]):
    """How the lab trains and measures one of its small models.

    ``python -m blockdance_lab.zoo.train NAME`` (:mod:`blockdance_lab.zoo.train`) trains it
    with one flag per hyper-parameter and per architecture option in ``model_flags``; with
    none, it reproduces the shipped weights.

    Args:
        files: Its weights files, and the architecture they hold.
        train_config: The hyper-parameter dataclass; its defaults are the shipped run's.
        train: ``train(model_config, train_config, *, progress, device, on_step)`` trains on
            the shipped model's data and returns the EMA model and the training log.
        sampler: ``sampler(model, guidance_scale=...)``: what generates with the model.
        probe: Makes the quality probe that judges its samples.
        model_flags: Architecture fields settable on the command line, ``--flag`` -> field.
        snapshot_stage: The training stage ``on_step`` follows (e.g. ``"video"``); when set,
            ``--snapshot-steps`` also saves the EMA model after the given steps of it.
    """

    files: ModelFiles[M]
    train_config: type[TrainConfig]
    train: Callable[..., tuple[M, dict[str, Any]]]
    sampler: Callable[..., Any]
    probe: Callable[[], QualityProbe]
    model_flags: Mapping[str, str] = field(default_factory=dict)
    snapshot_stage: str | None = None
