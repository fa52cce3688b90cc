"""Train the tiny DiT shipped as the embedded default, then measure it.

Reproduces the shipped weights::

    python scripts/train_tiny_dit.py

Renders coloured-shape images on the fly (blockdance.data.shapes), trains with
eps-prediction under DiT's linear schedule, saves the EMA weights as fp16
safetensors beside a JSON sidecar, then samples with DDIM-50 and guidance and reports
the probe's class accuracy of the samples.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from blockdance.data.shapes import make_batch
from blockdance_dit.tiny import (
    DEFAULT_WEIGHTS,
    TinyDiTConfig,
    TrainConfig,
    save_tiny_dit,
    train_tiny_dit,
)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--max-minutes", type=float, default=TrainConfig.max_minutes)
    p.add_argument("--hidden", type=int, default=TinyDiTConfig.hidden_size)
    p.add_argument("--depth", type=int, default=TinyDiTConfig.depth)
    p.add_argument("--heads", type=int, default=TinyDiTConfig.num_heads)
    p.add_argument("--mlp-ratio", type=float, default=TinyDiTConfig.mlp_ratio)
    p.add_argument("--min-snr", type=float, default=TrainConfig.min_snr)
    p.add_argument("--warmup", type=int, default=TrainConfig.warmup)
    p.add_argument("--ema-decay", type=float, default=TrainConfig.ema_decay)
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="e.g. cuda, for hyper-parameter sweeps")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    model_cfg = TinyDiTConfig(
        hidden_size=args.hidden, depth=args.depth, num_heads=args.heads, mlp_ratio=args.mlp_ratio
    )
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        max_minutes=args.max_minutes,
        min_snr=args.min_snr,
        warmup=args.warmup,
        ema_decay=args.ema_decay,
        seed=args.seed,
    )

    def batch(n: int, seed: int, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels, _ = make_batch(n, seed=seed, image_size=model_cfg.input_size, start=start)
        return images, labels

    model, log = train_tiny_dit(
        model_cfg, cfg, batch, progress=not args.no_progress, device=args.device
    )
    command = "python scripts/train_tiny_dit.py " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {"train": asdict(cfg), "log": log, "command": command.strip()}
    save_tiny_dit(model, model_cfg, args.out, meta)
    print(json.dumps(log, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
