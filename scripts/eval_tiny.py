"""Measure the shipped tiny DiT: probe class accuracy and FD-probe of its samples.

    python scripts/eval_tiny_dit.py --samples 256 --guidance 1.0 2.0 3.0 4.0

Samples one image per seed (class = seed % 16) with DDIM and classifier-free guidance,
and compares them with real images of the held-out reference seed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from blockdance.data.shapes import COLORS, SHAPES
from blockdance.evaluation.metrics import class_accuracy, frechet_distance
from blockdance.workload import GenerateRequest
from blockdance_dit.sampling import make_scheduler
from blockdance_dit.tiny import DEFAULT_WEIGHTS, load_tiny_dit
from blockdance_dit.workloads import DiTSampler, tiny_shapes_probe


def save_grid(rows: list[torch.Tensor], path: Path) -> None:
    """One row of samples (N, 3, H, W) in [-1, 1] per guidance scale, as a PNG."""
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    grid = make_grid(torch.cat(rows), nrow=len(rows[0]), padding=1, value_range=(-1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, ((grid.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--grid", type=Path, default=None, help="PNG of the first 32 samples per scale")
    p.add_argument("--out", type=Path, default=Path("outputs/eval_tiny_dit.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = load_tiny_dit(args.weights).to(args.device)
    probe = tiny_shapes_probe()
    seeds = tuple(range(args.samples))
    real = probe.features(probe.reference(1024))
    real2 = probe.features(probe.reference(2048)[1024:])
    results = {"fd_real_vs_real": frechet_distance(real2, real), "runs": []}
    print(f"FD-probe real vs real (1024 vs 1024): {results['fd_real_vs_real']:.2f}")
    grids: list[torch.Tensor] = []
    for scale in args.guidance:
        sampler = DiTSampler(model, make_scheduler("ddim"), guidance_scale=scale)
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
        results["runs"].append(
            {
                "guidance": scale,
                "accuracy": acc,
                "shape_accuracy": per_shape,
                "fd_probe": fd,
                "seconds": seconds,
            }
        )
        shapes = ", ".join(f"{k} {v:.2f}" for k, v in per_shape.items())
        print(f"guidance {scale}: accuracy {acc:.3f} ({shapes}), FD-probe {fd:.2f}, {seconds:.0f}s")
    if args.grid is not None:
        save_grid(grids, args.grid)
        print(f"wrote {args.grid}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
