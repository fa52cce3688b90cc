"""Short pilots of the tiny STDiT's recipe for issue 18, on either video shape size.

    # one image stage, shared by the pilots (saved at frames=1; its 1-step video stage at
    # lr 1e-5 leaves it as it was)
    python -m blockdance_lab.zoo.train stdit --frames 1 --image-minutes 8 --steps 1 \\
        --max-minutes 1 --threads 1 --out outputs/video18/image8.safetensors
    # a video stage from it, on videos whose shapes have the stills' sizes
    python scripts/pilot_tiny_stdit.py --shape-size image \\
        --init-weights outputs/video18/image8.safetensors --minutes 9 --steps 400 \\
        --warmup 50 --out outputs/video18/p_image.safetensors
    # judged as the card judges the shipped model
    python scripts/eval_tiny.py --model stdit --weights outputs/video18/p_image.safetensors \\
        --samples 32 --guidance 6 --threads 1 --out outputs/video18/p_image_eval.json

The recipe is :data:`blockdance_lab.zoo.stdit.tiny.RECIPE`'s (``train_tiny_stdit``) with
its data chosen by ``--shape-size`` (:func:`blockdance_lab.zoo.stdit.tiny.video_batches`)
and, with ``--init-weights``, started from saved weights instead of the tiny DiT. Without
``--init-weights`` it runs both stages as the shipped recipe does (``--image-minutes``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from blockdance_lab.data.shapes import SHAPE_SIZES
from blockdance_lab.zoo.stdit.tiny import (
    VIDEO_TRAINS,
    TinySTDiTConfig,
    TrainConfig,
    save_tiny_stdit,
    train_tiny_stdit,
)


def main(argv: list[str] | None = None) -> None:
    """Trains one pilot and saves it beside a sidecar recording the command."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape-size", choices=SHAPE_SIZES, default="image")
    p.add_argument("--init-weights", type=Path, default=None, help="start from these weights")
    p.add_argument("--minutes", type=float, default=9.0, help="video-stage wall budget")
    p.add_argument("--steps", type=int, default=400, help="video-stage schedule length")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-minutes", type=float, default=0.0, help="image stage; 0 skips it")
    p.add_argument("--image-steps", type=int, default=1400)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--video-trains", choices=VIDEO_TRAINS, default=TrainConfig().video_trains)
    p.add_argument("--v1-positions", action="store_true", help="no rotary frame positions")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", type=Path, required=True, help=".safetensors path")
    args = p.parse_args(argv)
    if args.init_weights is None and args.image_minutes <= 0:
        p.error("give --init-weights (a saved image stage) or --image-minutes > 0")
    torch.set_num_threads(args.threads)
    model_cfg = replace(TinySTDiTConfig(), frames=args.frames, temporal_rope=not args.v1_positions)
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        max_minutes=args.minutes,
        image_steps=args.image_steps if args.image_minutes > 0 else 0,
        image_minutes=args.image_minutes,
        shape_size=args.shape_size,
        video_trains=args.video_trains,
    )
    start = time.perf_counter()
    model, log = train_tiny_stdit(
        model_cfg,
        cfg,
        progress=not args.no_progress,
        init_weights=args.init_weights,
    )
    meta = {
        "train": asdict(cfg),
        "init_weights": str(args.init_weights) if args.init_weights else None,
        "log": log,
        "wall_minutes": (time.perf_counter() - start) / 60,
        "command": "python scripts/pilot_tiny_stdit.py " + " ".join(argv or sys.argv[1:]),
    }
    save_tiny_stdit(model, args.out, meta)
    print(json.dumps(log, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
