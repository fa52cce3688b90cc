"""How much a tiny STDiT's output depends on the frames' order and on the caption's direction word.

    python scripts/check_stdit_conditioning.py [weights] --clips 32

A model that follows "moving left" must tell the frames' order apart and must read the
direction word. On real still-sized clips noised at a few timesteps, this prints, relative to
the caption's whole effect (the squared change from the caption to the null caption):

- *order*: the output (ε or v, as the model predicts) on the frames reversed (then reversed
  back) against the output on the clip;
- *direction*: the output with the direction word swapped (left↔right, up↔down) against it;
- *gap*: how much the true direction word lowers the error of the predicted clean clip x̂₀
  against the swapped one, as a share of how much the whole caption lowers it against the
  null caption (at one timestep the same share as in ε's loss for an ε model). A model that
  follows the word has a clearly positive gap at the noisy timesteps, where motion is decided;
  one that ignores it, a gap within its standard error of 0.

Measured on 2026-11-30 (tiny STDiT card, "Run 7"): the model shipped before was nearly blind
to order, and both it and the one shipped now barely read the direction word (0.1–0.5%).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from blockdance_lab.analysis.x0 import predicted_x0
from blockdance_lab.data.shapes import (
    check_motion,
    check_shape_size,
    make_video_batch,
    opposite_direction,
)
from blockdance_lab.training import linear_alphas_cumprod
from blockdance_lab.zoo.stdit.tiny import DEFAULT_WEIGHTS, TrainConfig, load_tiny_stdit
from blockdance_lab.zoo.stdit.workloads import ddim_linear


def main(argv: list[str] | None = None) -> None:
    """Prints the two sensitivities per timestep."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", type=Path, nargs="?", default=DEFAULT_WEIGHTS)
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--timesteps", type=int, nargs="*", default=[500, 800, 950])
    p.add_argument("--seed", type=int, default=123, help="data seed of the real clips")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_tiny_stdit(args.weights)
    # the clips the weights were trained on (their sidecar), else the shipped recipe's
    shipped = TrainConfig()
    train = json.loads(args.weights.with_suffix(".json").read_text()).get("train", {})
    size = check_shape_size(train.get("shape_size", shipped.shape_size))
    n, motion = args.clips, check_motion(train.get("motion", shipped.motion))
    videos, _, captions = make_video_batch(n, args.seed, model.cfg.image_size, model.cfg.frames,
                                           shape_size=size, motion=motion)  # fmt: skip
    swapped = [opposite_direction(c) for c in captions]
    x0 = videos.permute(0, 2, 1, 3, 4)  # (N, 3, T, H, W)
    abar = linear_alphas_cumprod()
    scheduler = ddim_linear(model.cfg.prediction)  # reads the output as the model predicts it
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        y, y_swapped = model.encode(captions), model.encode(swapped)
        null = model.stdit.y_embedder.null(n)
        for t in args.timesteps:
            noise = torch.randn(x0.shape, generator=gen)
            xt = abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * noise
            ts = torch.full((n,), t)
            out, out_null = model.stdit(xt, ts, y), model.stdit(xt, ts, null)
            out_swapped = model.stdit(xt, ts, y_swapped)
            caption = (out - out_null).pow(2).mean()
            order = (out - model.stdit(xt.flip(2), ts, y).flip(2)).pow(2).mean()
            word = (out - out_swapped).pow(2).mean()
            loss = {
                k: (predicted_x0(scheduler, xt, o, t) - x0).pow(2).mean((1, 2, 3, 4))
                for k, o in (("true", out), ("null", out_null), ("swapped", out_swapped))
            }  # (N,) each
            gap = loss["swapped"] - loss["true"]  # (N,)
            gain = float((loss["null"] - loss["true"]).mean())
            print(
                f"t={t}: order {float(order / caption):.2%}, direction word "
                f"{float(word / caption):.2%} of the caption's effect ({float(caption):.2e}); "
                f"loss gap of the word {float(gap.mean()) / gain:+.2%} "
                f"(± {float(gap.std()) / n**0.5 / gain:.2%}) of the caption's"
            )


if __name__ == "__main__":
    main()
