"""Train the tiny SD3 shipped with the MMDiT plugin.

Reproduces the shipped weights::

    python scripts/train_tiny_sd3.py

Renders captioned coloured-shape images on the fly (blockdance_lab.data.shapes), trains
diffusers' SD3Transformer2DModel and the tiny text encoder together with rectified flow,
and saves the EMA weights as fp16 safetensors beside a JSON sidecar. Measure the result
with ``python scripts/eval_tiny.py --model sd3``.
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
from blockdance_lab.zoo.sd3.tiny import (
    DEFAULT_WEIGHTS,
    TinySD3Config,
    TrainConfig,
    save_tiny_sd3,
    train_tiny_sd3,
)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_train_arguments(p, TrainConfig)
    p.add_argument("--layers", type=int, default=TinySD3Config.num_layers)
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    model_cfg = TinySD3Config(num_layers=args.layers)
    cfg = train_config_from(args, TrainConfig)

    def batch(n: int, seed: int, start: int) -> tuple[torch.Tensor, list[str]]:
        images, _, captions = make_batch(
            n, seed=seed, image_size=model_cfg.sample_size, start=start
        )
        return images, captions

    model, log = train_tiny_sd3(
        model_cfg, cfg, batch, progress=not args.no_progress, device=args.device
    )
    command = "python scripts/train_tiny_sd3.py " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {"train": asdict(cfg), "log": log, "command": command.strip()}
    save_tiny_sd3(model, args.out, meta)
    print(json.dumps(log, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
