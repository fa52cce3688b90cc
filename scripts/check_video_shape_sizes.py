"""How the shipped probes and the motion reader see real videos of each shape size.

    python scripts/check_video_shape_sizes.py --videos 512 --threads 1

For ``make_video_batch(..., shape_size=s)`` with ``s`` in ``SHAPE_SIZES`` (held-out seed
1000003, as the probe cards): the image probe's and the video probe's class accuracy on
single frames and on whole videos (log-probabilities averaged over the frames, as
:func:`blockdance_lab.evaluation.shapes_probe.video_shapes_probe` scores them), the share of
videos :func:`blockdance_lab.evaluation.motion.motion_direction` reads in the captioned
direction, the pixels travelled, the temporal consistency (mean SSIM of adjacent frames,
on 256 clips), and FD-probe (video probe) between two disjoint real sets
and against the other size's videos. Writes a JSON beside the printout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from blockdance_lab.data.shapes import (
    DIRECTIONS,
    SHAPE_SIZES,
    ShapeSize,
    ShapesVideoDataset,
    make_video_batch,
)
from blockdance_lab.evaluation.metrics import frechet_distance
from blockdance_lab.evaluation.motion import motion_direction
from blockdance_lab.evaluation.probe import (
    DEFAULT_PROBE_PATH,
    DEFAULT_VIDEO_PROBE_PATH,
    ProbeNet,
    load_probe,
    probe_features,
)
from blockdance_lab.report import temporal_consistency

HELD_OUT_SEED = 1_000_003


def _frame_logits(probe: ProbeNet, videos: torch.Tensor) -> torch.Tensor:
    """Per-frame logits ``(N, F, K)``."""
    n, f = videos.shape[:2]
    with torch.inference_mode():
        out = torch.cat([probe(c) for c in videos.flatten(0, 1).split(512)])
    return out.view(n, f, -1)


def _features(probe: ProbeNet, videos: torch.Tensor) -> torch.Tensor:
    n, f = videos.shape[:2]
    return probe_features(probe, videos.flatten(0, 1)).view(n, f, -1).mean(1)


def measure(shape_size: ShapeSize, n: int, probes: dict[str, ProbeNet]) -> dict[str, Any]:
    """The numbers of one shape size on ``n`` held-out clips."""
    videos, labels, captions = make_video_batch(n, seed=HELD_OUT_SEED, shape_size=shape_size)
    out: dict[str, Any] = {}
    for name, probe in probes.items():
        logits = _frame_logits(probe, videos)  # (N, F, K)
        frame_acc = (logits.argmax(-1) == labels[:, None]).float().mean()
        video_acc = (logits.log_softmax(-1).mean(1).argmax(-1) == labels).float().mean()
        out[f"{name}_probe_frame_accuracy"] = float(frame_acc)
        out[f"{name}_probe_video_accuracy"] = float(video_acc)
    truth = torch.tensor(
        [next(i for i, d in enumerate(DIRECTIONS) if f"moving {d}" in c) for c in captions]
    )
    out["direction_accuracy"] = float((motion_direction(videos) == truth).float().mean())
    out["temporal"] = temporal_consistency(videos[:256])
    ds = ShapesVideoDataset(n, seed=HELD_OUT_SEED, shape_size=shape_size)
    travel = torch.stack([ds[i].centers[-1] - ds[i].centers[0] for i in range(min(n, 256))])
    dist = travel.norm(dim=-1)
    out["travel_px"] = {
        "min": float(dist.min()),
        "median": float(dist.median()),
        "max": float(dist.max()),
    }
    return out


def main(argv: list[str] | None = None) -> None:
    """Prints and saves the measurements."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=512, help="held-out clips per shape size")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("outputs/video18/check_shape_sizes.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    probes = {
        "image": load_probe(DEFAULT_PROBE_PATH),
        "video": load_probe(DEFAULT_VIDEO_PROBE_PATH),
    }
    results: dict[str, Any] = {"videos": args.videos, "seed": HELD_OUT_SEED, "sizes": {}}
    for size in SHAPE_SIZES:
        results["sizes"][size] = measure(size, args.videos, probes)
        print(size, json.dumps(results["sizes"][size]))
    # FD-probe (video probe, as the STDiT's evaluation): each size against its own second set
    # and against the other size, at the same count.
    video_probe = probes["video"]
    feats = {
        (size, seed): _features(
            video_probe, make_video_batch(args.videos, seed=seed, shape_size=size)[0]
        )
        for size in SHAPE_SIZES
        for seed in (HELD_OUT_SEED, HELD_OUT_SEED + 1)
    }
    fd = {
        f"{a}_vs_{b}": frechet_distance(feats[(a, HELD_OUT_SEED)], feats[(b, HELD_OUT_SEED + 1)])
        for a in SHAPE_SIZES
        for b in SHAPE_SIZES
    }
    results["fd_probe"] = fd
    results["seconds"] = time.perf_counter() - start
    print("FD-probe", json.dumps(fd))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out} ({results['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
