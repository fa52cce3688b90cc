"""Procedural data the embedded-default models are trained and evaluated on."""

from __future__ import annotations

from blockdance_lab.data.shapes import (
    BACKGROUNDS,
    CLASS_NAMES,
    COLORS,
    DIRECTIONS,
    SHAPES,
    ShapeSample,
    ShapesDataset,
    ShapesVideoDataset,
    VideoSample,
    caption_for,
    class_index,
    make_batch,
    make_video_batch,
    num_classes,
)

__all__ = [
    "BACKGROUNDS",
    "CLASS_NAMES",
    "COLORS",
    "DIRECTIONS",
    "SHAPES",
    "ShapeSample",
    "ShapesDataset",
    "ShapesVideoDataset",
    "VideoSample",
    "caption_for",
    "class_index",
    "make_batch",
    "make_video_batch",
    "num_classes",
]
