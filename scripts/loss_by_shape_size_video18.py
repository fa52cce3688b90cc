"""How well tiny STDiT weights already fit each video shape size: their ε loss on held-out clips.

    python scripts/loss_by_shape_size_video18.py outputs/video18/p0_image_stage.safetensors \\
        lab/blockdance_lab/zoo/stdit/assets/tiny_stdit_shapes8x32.safetensors --clips 128

For each weights file and each ``shape_size``, the video stage's loss (ε-prediction on DiT's
linear β schedule, captions kept) on the same ``--clips`` held-out clips (seed 1000003),
the same timesteps and the same noise: the mean squared error in three timestep bands and
overall, and the min-SNR-5 weighted mean the training minimises. An image stage whose
knowledge carries over frame by frame starts the video stage with a lower loss.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from blockdance_lab.data.shapes import SHAPE_SIZES, make_video_batch
from blockdance_lab.training import linear_alphas_cumprod, min_snr_mean
from blockdance_lab.zoo.stdit.tiny import load_tiny_stdit

HELD_OUT_SEED = 1_000_003
BANDS = ((0, 200), (200, 600), (600, 1000))


def main(argv: list[str] | None = None) -> None:
    """Prints the losses and writes them as JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", type=Path, nargs="+")
    p.add_argument("--clips", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("outputs/video18/loss_by_shape_size.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = args.clips
    abar = linear_alphas_cumprod()
    gen = torch.Generator().manual_seed(0)
    t = torch.randint(0, len(abar), (n,), generator=gen)
    noise = torch.randn((n, 3, 8, 32, 32), generator=gen)
    a = abar[t].view(-1, 1, 1, 1, 1)
    results: dict[str, Any] = {"clips": n, "seed": HELD_OUT_SEED, "losses": {}}
    for path in args.weights:
        model = load_tiny_stdit(path)
        for size in SHAPE_SIZES:
            videos, _, captions = make_video_batch(n, seed=HELD_OUT_SEED, shape_size=size)
            x0 = videos.permute(0, 2, 1, 3, 4)  # (N, 3, T, H, W)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
            with torch.inference_mode():
                eps = torch.cat(
                    [
                        model(xt[i : i + 16], t[i : i + 16], captions[i : i + 16])
                        for i in range(0, n, 16)
                    ]
                )
            per = F.mse_loss(eps, noise, reduction="none").mean((1, 2, 3, 4))
            row = {
                "mse": float(per.mean()),
                "min_snr5": float(min_snr_mean(per, a, 5.0)),
                **{f"mse_t{lo}-{hi}": float(per[(t >= lo) & (t < hi)].mean()) for lo, hi in BANDS},
            }
            results["losses"][f"{path.name}:{size}"] = row
            print(path.name, size, json.dumps({k: round(v, 5) for k, v in row.items()}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
