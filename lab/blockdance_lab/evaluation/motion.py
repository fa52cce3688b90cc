"""Which way the shape of a moving-shape video travels, read from the pixels.

The procedural videos (:func:`blockdance_lab.data.shapes.make_video_batch`) move one shape in a
straight line over a still background, and their captions name the direction. A video
model that follows its caption moves the shape that way; this module measures it without a
trained network: the background is the per-pixel median over time, the shape is where a
frame departs from it, and the direction is the larger axis of the shape's displacement
from the first frame to the last.
"""

from __future__ import annotations

import torch

from blockdance_lab.data.shapes import DIRECTIONS

__all__ = ["motion_direction", "shape_centroids"]


def shape_centroids(videos: torch.Tensor) -> torch.Tensor:
    """Centroid of each frame's departure from the video's still background.

    Args:
        videos: ``(N, F, C, H, W)``, any value range.

    Returns:
        ``(N, F, 2)`` centroids ``(x, y)`` in pixels.
    """
    background = videos.median(dim=1, keepdim=True).values  # (N, 1, C, H, W)
    weight = (videos - background).abs().sum(2)  # (N, F, H, W)
    h, w = weight.shape[-2:]
    ys = torch.arange(h, dtype=weight.dtype, device=weight.device).view(1, 1, h, 1)
    xs = torch.arange(w, dtype=weight.dtype, device=weight.device).view(1, 1, 1, w)
    total = weight.sum((-2, -1)).clamp(min=1e-8)  # (N, F)
    cx = (weight * xs).sum((-2, -1)) / total
    cy = (weight * ys).sum((-2, -1)) / total
    return torch.stack([cx, cy], dim=-1)


def motion_direction(videos: torch.Tensor) -> torch.Tensor:
    """Index into :data:`~blockdance_lab.data.shapes.DIRECTIONS` of each video's motion.

    Args:
        videos: ``(N, F, C, H, W)`` with ``F >= 2``.

    Returns:
        ``(N,)`` int64: left, right, up or down (image y grows downwards).
    """
    if videos.dim() != 5 or videos.shape[1] < 2:
        raise ValueError(
            f"motion_direction needs videos (N, F >= 2, C, H, W), got {tuple(videos.shape)}"
        )
    c = shape_centroids(videos.float())  # (N, F, 2)
    dx, dy = (c[:, -1] - c[:, 0]).unbind(-1)  # (N,)
    horizontal = dx.abs() >= dy.abs()
    index = {name: i for i, name in enumerate(DIRECTIONS)}
    h = torch.where(dx < 0, index["left"], index["right"])
    v = torch.where(dy < 0, index["up"], index["down"])
    return torch.where(horizontal, h, v)
