"""Train the tiny DiT shipped as the embedded default, then measure it.

Reproduces the shipped weights::

    python scripts/train_tiny_dit.py

Renders coloured-shape images on the fly (blockdance_lab.data.shapes), trains with
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

from blockdance_lab.data.shapes import make_batch
from blockdance_lab.training import add_train_arguments, train_config_from
from blockdance_lab.zoo.dit.tiny import (
    DEFAULT_WEIGHTS,
    TinyDiTConfig,
    TrainConfig,
    save_tiny_dit,
    train_tiny_dit,
)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_train_arguments(p, TrainConfig)
    p.add_argument("--hidden", type=int, default=TinyDiTConfig.hidden_size)
    p.add_argument("--depth", type=int, default=TinyDiTConfig.depth)
    p.add_argument("--heads", type=int, default=TinyDiTConfig.num_heads)
    p.add_argument("--mlp-ratio", type=float, default=TinyDiTConfig.mlp_ratio)
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    model_cfg = TinyDiTConfig(
        hidden_size=args.hidden, depth=args.depth, num_heads=args.heads, mlp_ratio=args.mlp_ratio
    )
    cfg = train_config_from(args, TrainConfig)

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
