"""The shipped probe and the procedural shapes as a :class:`~blockdance.workload.QualityProbe`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from blockdance.data.shapes import make_batch
from blockdance.evaluation.probe import load_probe, probe_features
from blockdance.workload import QualityProbe

#: Seed of the real images FD-probe compares against (disjoint from training seeds).
REFERENCE_SEED = 2_000_003


def shapes_probe(
    labels: Callable[[Sequence[int]], torch.Tensor], image_size: int = 32
) -> QualityProbe:
    """Judge shape images with the shipped probe.

    Args:
        labels: Seeds -> the class each seed was asked to generate.
        image_size: Side of the images in pixels.
    """
    probe = load_probe()

    def logits(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([probe(chunk.float()) for chunk in images.split(512)])

    def reference(n: int) -> torch.Tensor:
        return make_batch(n, seed=REFERENCE_SEED, image_size=image_size)[0]

    return QualityProbe(
        features=lambda images: probe_features(probe, images.float()),
        logits=logits,
        labels=labels,
        reference=reference,
    )
