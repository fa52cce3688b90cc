"""Train the tiny STDiT shipped with the STDiT plugin.

Reproduces the shipped weights::

    python scripts/train_tiny_stdit.py

Starts from the shipped tiny DiT (as Open-Sora started from PixArt-α, and PixArt-α from
DiT), trains on single frames, then on clips of captioned moving shapes rendered on the fly
(blockdance_lab.data.shapes), with the tiny text encoder trained jointly and eps-prediction. Saves
the EMA weights as fp16 safetensors beside a JSON sidecar.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from blockdance_lab.data.shapes import make_video_batch
from blockdance_lab.training import add_train_arguments, train_config_from
from blockdance_lab.zoo.stdit.tiny import (
    DEFAULT_WEIGHTS,
    TinySTDiT,
    TinySTDiTConfig,
    TrainConfig,
    save_tiny_stdit,
    train_tiny_stdit,
)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_train_arguments(p, TrainConfig)
    p.add_argument("--depth", type=int, default=TinySTDiTConfig.depth)
    p.add_argument("--frames", type=int, default=TinySTDiTConfig.frames)
    p.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument(
        "--snapshot-steps",
        type=int,
        nargs="*",
        default=[],
        help="also save the EMA model after these video-stage steps, as <out>.video<step>",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    model_cfg = TinySTDiTConfig(depth=args.depth, frames=args.frames)
    cfg = train_config_from(args, TrainConfig)

    def batch(n: int, seed: int, start: int, frames: int) -> tuple[torch.Tensor, list[str]]:
        videos, _, captions = make_video_batch(
            n, seed=seed, image_size=model_cfg.image_size, frames=frames, start=start
        )
        return videos, captions

    command = "python scripts/train_tiny_stdit.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    snapshots = set(args.snapshot_steps)

    def snapshot(step: int, ema: TinySTDiT) -> None:
        if step + 1 in snapshots:
            path = args.out.with_name(f"{args.out.stem}.video{step + 1}{args.out.suffix}")
            save_tiny_stdit(ema, path, {"train": asdict(cfg), "video_steps": step + 1})

    model, log = train_tiny_stdit(
        model_cfg,
        cfg,
        batch,
        progress=not args.no_progress,
        device=args.device,
        on_video_step=snapshot if snapshots else None,
    )
    meta = {"train": asdict(cfg), "log": log, "command": command.strip()}
    save_tiny_stdit(model, args.out, meta)
    print(json.dumps(log, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
