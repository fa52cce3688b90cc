"""Measure a shipped tiny model: probe class accuracy and FD-probe of its samples.

    python scripts/eval_tiny.py --model dit --samples 256 --guidance 4 6 8 10
    python scripts/eval_tiny.py --model sd3 --samples 256 --guidance 3 4.5 6 7.5
    python scripts/eval_tiny.py --model stdit --samples 128 --guidance 4 6 8

Samples one image (or video) per seed (class = seed % 16; for the SD3 and the STDiT, the
caption of that class on background (seed // 16) % 5, for the STDiT moving in direction
(seed + seed // 16) % 4) with classifier-free guidance -- DDIM for the DiT and the STDiT, diffusers'
flow-matching Euler for the SD3 -- and compares them with real samples of the held-out
reference seed. Videos also get the share moving in the captioned direction and their
temporal consistency (mean SSIM of adjacent frames), against the real videos'.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from blockdance_lab.data.shapes import COLORS, SHAPES
from blockdance_lab.evaluation.metrics import class_accuracy, frechet_distance
from blockdance_lab.evaluation.motion import motion_direction
from blockdance_lab.report import temporal_consistency
from blockdance_lab.workload import GenerateRequest
from blockdance_lab.zoo.train import RECIPES, recipe
from blockdance_lab.zoo.workloads import seed_directions


def save_grid(rows: list[torch.Tensor], path: Path) -> None:
    """One row of samples (N, 3, H, W) in [-1, 1] per guidance scale, as a PNG; videos
    (N, F, 3, H, W) show their first, middle and last frames side by side."""
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    if rows[0].dim() == 5:
        f = rows[0].shape[1]
        rows = [r[:8, [0, f // 2, f - 1]].flatten(0, 1) for r in rows]  # (8 * 3, 3, H, W)
    grid = make_grid(torch.cat(rows), nrow=len(rows[0]), padding=1, value_range=(-1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, ((grid.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=tuple(RECIPES), default="dit")
    p.add_argument("--weights", type=Path, default=None, help="default: the shipped weights")
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--grid", type=Path, default=None, help="PNG of the first 32 samples per scale")
    p.add_argument("--out", type=Path, default=None, help="default outputs/eval_tiny_<model>.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = recipe(args.model)
    weights = model.files.load(args.weights).to(args.device)
    out = args.out or Path(f"outputs/eval_tiny_{args.model}.json")
    probe = model.probe()
    seeds = tuple(range(args.samples))
    reference = probe.reference(2048)
    video = reference.dim() == 5
    real, real2 = probe.features(reference[:1024]), probe.features(reference[1024:])
    results: dict[str, Any] = {"fd_real_vs_real": frechet_distance(real2, real), "runs": []}
    print(f"FD-probe real vs real (1024 vs 1024): {results['fd_real_vs_real']:.2f}")
    if video:
        results["real_temporal"] = temporal_consistency(reference[:256])
        print(f"temporal consistency of real videos: {results['real_temporal']:.4f}")
    grids: list[torch.Tensor] = []
    for scale in args.guidance:
        sampler = model.sampler(weights, guidance_scale=scale)
        start = time.perf_counter()
        with torch.inference_mode():
            request = GenerateRequest(seeds, args.steps, progress=not args.no_progress)
            images = sampler(request).clamp(-1, 1).cpu()
        seconds = time.perf_counter() - start
        grids.append(images[:32])
        logits, labels = probe.logits(images), probe.labels(seeds)
        acc = class_accuracy(logits, labels)
        shape_pred, shape_true = logits.argmax(1) // len(COLORS), labels // len(COLORS)
        per_shape = {
            name: float((shape_pred[shape_true == k] == k).float().mean())
            for k, name in enumerate(SHAPES)
        }
        fd = frechet_distance(probe.features(images), real)
        run: dict[str, Any] = {
            "guidance": scale,
            "accuracy": acc,
            "shape_accuracy": per_shape,
            "fd_probe": fd,
            "seconds": seconds,
        }
        shapes = ", ".join(f"{k} {v:.2f}" for k, v in per_shape.items())
        line = f"guidance {scale}: accuracy {acc:.3f} ({shapes}), FD-probe {fd:.2f}"
        if video:
            moving = motion_direction(images) == seed_directions(seeds)
            run["direction_accuracy"] = float(moving.float().mean())
            run["temporal"] = temporal_consistency(images)
            line += f", direction {run['direction_accuracy']:.3f}, temporal {run['temporal']:.4f}"
        results["runs"].append(run)
        print(f"{line}, {seconds:.0f}s")
    if args.grid is not None:
        save_grid(grids, args.grid)
        print(f"wrote {args.grid}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
