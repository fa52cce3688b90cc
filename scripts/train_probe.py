"""Train the shape-image probe and write it as fp16 safetensors + JSON config.

Reproduces the shipped probes::

    python scripts/train_probe.py                    # images
    python scripts/train_probe.py --video-frames 8 --from-image-probe --lr 1e-3  # video frames
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from blockdance_lab.evaluation.probe import (
    DEFAULT_PROBE_PATH,
    DEFAULT_VIDEO_PROBE_PATH,
    evaluate_probe,
    load_probe,
    save_probe,
    train_probe,
)


def main(argv: list[str] | None = None) -> None:
    """Parses arguments, trains, evaluates on a held-out seed and saves.

    Args:
        argv: Command-line arguments (``sys.argv[1:]`` if ``None``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimisation steps")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step")
    parser.add_argument("--seed", type=int, default=0, help="training data seed")
    parser.add_argument("--eval-seed", type=int, default=1_000_003, help="held-out data seed")
    parser.add_argument("--eval-size", type=int, default=4096, help="held-out images")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--video-frames",
        type=int,
        default=0,
        help="train and score on the frames of videos of this many frames (0: images)",
    )
    parser.add_argument(
        "--from-image-probe",
        action="store_true",
        help="start from the shipped image probe (fine-tune it, e.g. on video frames)",
    )
    parser.add_argument("--out", type=Path, default=None, help=".safetensors path")
    args = parser.parse_args(argv)
    if args.eval_seed == args.seed:
        parser.error("--eval-seed must differ from --seed so the accuracy is held out")

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    frames = args.video_frames
    out = args.out or (DEFAULT_VIDEO_PROBE_PATH if frames else DEFAULT_PROBE_PATH)
    start_from = load_probe(DEFAULT_PROBE_PATH) if args.from_image_probe else None
    model = train_probe(
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        lr=args.lr,
        frames=frames,
        model=start_from,
    )
    wall = time.perf_counter() - start
    acc = evaluate_probe(model, n=args.eval_size, seed=args.eval_seed, frames=frames)
    # Accuracy of the weights as shipped: round them to fp16 in place (save_probe stores fp16).
    acc_fp16 = evaluate_probe(
        model.half().float(), n=args.eval_size, seed=args.eval_seed, frames=frames
    )
    metadata = {
        "train": {
            "data": (
                f"frames of ShapesVideoDataset clips of {frames} frames"
                if frames
                else "ShapesDataset"
            )
            + " (procedural, rendered on the fly, no sample repeated)",
            "seed": args.seed,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "from_image_probe": args.from_image_probe,
            "threads": args.threads,
            "wall_time_s": round(wall, 1),
        },
        "held_out": {"seed": args.eval_seed, "images": args.eval_size, "accuracy": acc_fp16},
    }
    path = save_probe(model, out, metadata=metadata)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params: {n_params}  training wall time: {wall:.1f} s")
    print(
        f"held-out accuracy (seed {args.eval_seed}, {args.eval_size} images): "
        f"fp32 {acc:.4f}, fp16 weights {acc_fp16:.4f}"
    )
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB) and {path.with_suffix('.json')}")


if __name__ == "__main__":
    main()
