"""Judge a pilot tiny STDiT as ``scripts/eval_tiny.py --model stdit`` does, per shape and
direction, against real videos of either shape size.

    python scripts/eval_tiny_stdit_directions.py outputs/video18/p1_image.safetensors \\
        --samples 64 --guidance 6 --shape-size image --threads 1

Sample ``i`` uses seed ``first + i`` through the workloads' seed-to-caption map, sampler
(DDIM-50, classifier-free guidance), probe (the shipped video-frame probe) and motion reader;
64 seeds from a multiple of 16 ask for every (class, direction) pair once
(:func:`blockdance_lab.zoo.workloads.seed_directions`). FD-probe compares with 1,024 real
videos of the given shape size (the held-out reference seed), and is also reported against
each size, to tell at which size the model draws its shapes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from blockdance_lab.data.shapes import (
    COLORS,
    DIRECTIONS,
    SHAPE_SIZES,
    SHAPES,
    make_video_batch,
)
from blockdance_lab.evaluation.metrics import class_accuracy, frechet_distance
from blockdance_lab.evaluation.motion import motion_direction
from blockdance_lab.evaluation.shapes_probe import REFERENCE_SEED
from blockdance_lab.report import temporal_consistency
from blockdance_lab.workload import GenerateRequest
from blockdance_lab.zoo.stdit.tiny import load_tiny_stdit
from blockdance_lab.zoo.stdit.workloads import tiny_stdit_sampler
from blockdance_lab.zoo.workloads import TINY_STDIT_SHAPE_SIZE, seed_directions, video_probe


def main(argv: list[str] | None = None) -> None:
    """Samples, scores, prints and writes a JSON beside the weights."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", type=Path)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--first", type=int, default=0, help="index of the first sample")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=6.0)
    p.add_argument(
        "--shape-size",
        choices=SHAPE_SIZES,
        default=TINY_STDIT_SHAPE_SIZE,
        help="FD reference (default: the shipped model's training clips)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="default: <weights>.eval.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = tuple(range(args.first, args.first + args.samples))
    asked = seed_directions(seeds)
    sampler = tiny_stdit_sampler(load_tiny_stdit(args.weights), guidance_scale=args.guidance)
    start = time.perf_counter()
    with torch.inference_mode():
        videos = sampler(GenerateRequest(seeds, args.steps)).clamp(-1, 1).cpu()
    seconds = time.perf_counter() - start
    probe = video_probe()
    logits, labels = probe.logits(videos), probe.labels(seeds)
    shape_pred, shape_true = logits.argmax(1) // len(COLORS), labels // len(COLORS)
    color_pred, color_true = logits.argmax(1) % len(COLORS), labels % len(COLORS)
    moved = motion_direction(videos)
    features = probe.features(videos)
    fd_by_size = {}
    for size in SHAPE_SIZES:
        real_size = make_video_batch(1024, seed=REFERENCE_SEED, shape_size=size)[0]
        fd_by_size[size] = frechet_distance(features, probe.features(real_size))
        if size == args.shape_size:
            real = real_size
    result: dict[str, Any] = {
        "weights": str(args.weights),
        "seeds": list(seeds),
        "guidance": args.guidance,
        "steps": args.steps,
        "accuracy": class_accuracy(logits, labels),
        "shape_accuracy": {
            name: float((shape_pred[shape_true == k] == k).float().mean())
            for k, name in enumerate(SHAPES)
        },
        "color_accuracy": float((color_pred == color_true).float().mean()),
        "direction_accuracy": float((moved == asked).float().mean()),
        "direction_by_asked": {
            name: float((moved[asked == d] == d).float().mean())
            for d, name in enumerate(DIRECTIONS)
        },
        "directions_drawn": [DIRECTIONS[int(d)] for d in moved],
        "temporal": temporal_consistency(videos),
        "real_temporal": temporal_consistency(real[:256]),
        "fd_probe": fd_by_size[args.shape_size],
        "fd_probe_by_reference_size": fd_by_size,
        "fd_reference": f"1024 real videos, shape_size={args.shape_size}",
        "sampling_seconds": seconds,
    }
    out = args.out or args.weights.with_suffix(".eval.json")
    out.write_text(json.dumps(result, indent=1))
    shapes = ", ".join(f"{k} {v:.2f}" for k, v in result["shape_accuracy"].items())
    print(
        f"{args.weights}: accuracy {result['accuracy']:.3f} ({shapes}), colour "
        f"{result['color_accuracy']:.2f}, direction {result['direction_accuracy']:.3f}, "
        f"temporal {result['temporal']:.3f} (real {result['real_temporal']:.3f}), "
        f"FD-probe {result['fd_probe']:.2f}, {seconds:.0f}s; wrote {out}"
    )


if __name__ == "__main__":
    main()
