"""The zoo's workloads: the tiny models trained here, with their samplers and probes.

Registered by the lab's plugin; each model and sampler is imported on first use. Every tiny
sampler draws class ``seed % 16`` for a seed (:func:`seed_labels`), so the shipped probes
judge them all alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from blockdance import lazy
from blockdance_lab.data.shapes import (
    BACKGROUNDS,
    COLORS,
    DIRECTIONS,
    SHAPES,
    Motion,
    ShapeSize,
    caption_for,
    num_classes,
)
from blockdance_lab.workload import GenerateRequest, QualityProbe, Workload


def seed_labels(seeds: Sequence[int]) -> torch.Tensor:
    """The class each seed asks a tiny sampler for, as a label or a caption: ``seed % 16``.

    The class follows :data:`blockdance_lab.data.shapes.CLASS_NAMES` (shape-major), so the
    shipped probes score every tiny model alike.
    """
    return torch.tensor([s % num_classes for s in seeds])


def seed_directions(seeds: Sequence[int]) -> torch.Tensor:
    """The direction each seed's video caption asks for: ``(seed + seed // 16) % 4``.

    Any 64 consecutive seeds from a multiple of 16 ask for each (class, direction) pair
    once, so the demo's and the bench's seeds ``0 .. n-1`` test every direction.
    """
    return torch.tensor([(s + s // num_classes) % len(DIRECTIONS) for s in seeds])


def seed_captions(seeds: Sequence[int], *, moving: bool = False) -> list[str]:
    """The caption each seed asks for: class ``seed % 16`` on background ``(seed // 16) % 5``,
    and with ``moving`` (videos) in the direction :func:`seed_directions` gives."""
    directions = seed_directions(seeds).tolist()
    out = []
    for s, d in zip(seeds, directions):
        k = s % num_classes
        shape, color = SHAPES[k // len(COLORS)], COLORS[k % len(COLORS)]
        background = BACKGROUNDS[(s // num_classes) % len(BACKGROUNDS)]
        out.append(caption_for(shape, color, background, DIRECTIONS[d] if moving else None))
    return out


def image_probe() -> QualityProbe:
    """The shipped probe, judging images by the class their seed asked for."""
    from blockdance_lab.evaluation.shapes_probe import shapes_probe

    return shapes_probe(labels=seed_labels)


#: The shape sizes of the tiny STDiT's training clips (its ``TrainConfig.shape_size``), and
#: so of the real videos its FD-probe compares with: the stills' sizes.
TINY_STDIT_SHAPE_SIZE: ShapeSize = "image"
#: How the shapes of those clips move (its ``TrainConfig.motion``): along the one path each
#: caption fixes.
TINY_STDIT_MOTION: Motion = "fixed"


def video_probe() -> QualityProbe:
    """The shipped video-frame probe, judging videos by the class their seed asked for,
    against real clips like the tiny STDiT's training clips."""
    from blockdance_lab.evaluation.shapes_probe import video_shapes_probe

    return video_shapes_probe(
        labels=seed_labels, shape_size=TINY_STDIT_SHAPE_SIZE, motion=TINY_STDIT_MOTION
    )


def generate_pixels(
    target: Callable[[GenerateRequest], torch.Tensor], request: GenerateRequest
) -> torch.Tensor:
    """A tiny sampler's samples, images or videos in pixels, clamped to [-1, 1]."""
    return target(request).clamp(-1, 1)


def _tiny(
    name: str,
    description: str,
    build: Callable[[], object],
    scheduler: str,
    *,
    videos: bool = False,
    demo_seeds: int = 64,
) -> Workload:
    """A trained tiny model's workload: its samples are pixels, judged by the shipped probes."""
    return Workload(
        name,
        description,
        build,
        generate=generate_pixels,
        num_steps=50,
        scheduler=scheduler,
        probe=video_probe if videos else image_probe,
        images=not videos,
        videos=videos,
        demo_seeds=demo_seeds,
    )


DIT_WORKLOADS = (
    _tiny(
        "dit-tiny-shapes",
        "tiny DiT trained here on procedural shapes (8 blocks, 64 tokens, 32 px)",
        lazy("blockdance_lab.zoo.dit.workloads", "tiny_shapes_sampler"),
        "DDIM",
    ),
    Workload(
        name="dit-s2",
        description="DiT-S/2 (12 blocks, 64 tokens), random weights: latency and schedule only",
        build=lazy("blockdance_lab.zoo.dit.workloads", "random_dit_s2"),
        generate=lazy("blockdance_lab.zoo.dit.workloads", "generate_latents"),
        num_steps=50,
        scheduler="DDIM",
    ),
)


SD3_WORKLOADS = (
    _tiny(
        "sd3-tiny-shapes",
        "tiny SD3 trained here on captioned shapes (8 joint blocks, 64+10 tokens)",
        lazy("blockdance_lab.zoo.sd3.workloads", "tiny_sd3_sampler"),
        "flow Euler",
    ),
)


STDIT_WORKLOADS = (
    _tiny(
        "stdit-tiny-shapes",
        "tiny Open-Sora STDiT trained here on captioned moving shapes "
        "(8 blocks, 8 frames x 64 tokens)",
        lazy("blockdance_lab.zoo.stdit.workloads", "tiny_stdit_sampler"),
        "DDIM",
        videos=True,
        demo_seeds=16,
    ),
)


#: Every workload of the zoo, in the order ``blockdance demo`` runs them.
WORKLOADS = DIT_WORKLOADS + SD3_WORKLOADS + STDIT_WORKLOADS
