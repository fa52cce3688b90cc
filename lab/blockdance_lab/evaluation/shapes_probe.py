r"""The shipped probes and the procedural shapes as
:class:`~blockdance_lab.workload.QualityProbe`\ s.

:func:`shapes_probe` judges images; :func:`video_shapes_probe` judges videos by their frames
(the video probe's features and class scores, averaged over time), the FVD stand-in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from blockdance_lab.data.shapes import Motion, ShapeSize, make_batch, make_video_batch
from blockdance_lab.evaluation.probe import DEFAULT_VIDEO_PROBE_PATH, load_probe, probe_features
from blockdance_lab.workload import QualityProbe

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


def video_shapes_probe(
    labels: Callable[[Sequence[int]], torch.Tensor],
    frames: int = 8,
    image_size: int = 32,
    shape_size: ShapeSize = "video",
    motion: Motion = "random",
) -> QualityProbe:
    """Judge videos ``(N, F, 3, H, W)`` with the shipped video-frame probe.

    Features are the frames' probe features averaged over time ``(N, D)``, so FD-probe
    compares videos by what they show. Class scores are the frames' log-probabilities
    averaged over time.

    Args:
        labels: Seeds -> the class each seed was asked to generate.
        frames: Frames per reference video.
        image_size: Side of the frames in pixels.
        shape_size: The reference videos' shape sizes
            (:func:`blockdance_lab.data.shapes.make_video_batch`): those of the model judged.
        motion: How the reference videos' shapes move: as in the model's training clips.
    """
    probe = load_probe(DEFAULT_VIDEO_PROBE_PATH)

    def features(videos: torch.Tensor) -> torch.Tensor:
        n, f = videos.shape[:2]
        return probe_features(probe, videos.flatten(0, 1).float()).view(n, f, -1).mean(1)

    def logits(videos: torch.Tensor) -> torch.Tensor:
        n, f = videos.shape[:2]
        with torch.inference_mode():
            frame_logits = torch.cat([probe(c.float()) for c in videos.flatten(0, 1).split(512)])
        return frame_logits.log_softmax(-1).view(n, f, -1).mean(1)  # (N, K)

    def reference(n: int) -> torch.Tensor:
        return make_video_batch(
            n,
            seed=REFERENCE_SEED,
            image_size=image_size,
            frames=frames,
            shape_size=shape_size,
            motion=motion,
        )[0]

    return QualityProbe(features=features, logits=logits, labels=labels, reference=reference)
