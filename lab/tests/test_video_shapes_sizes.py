"""Videos whose shapes have the stills' sizes (``shape_size="image"``) and paths that cross
the frame (``motion="crossing"``), measured from pixels.

Sizes, positions and motion are read from the rendered frames of clips on a plain
background (one flat colour), with the shapes' areas from plane geometry, not from the
renderer's arithmetic.
"""

from __future__ import annotations

import math

import pytest
import torch

from blockdance_lab.data.shapes import (
    DIRECTIONS,
    SHAPES,
    Motion,
    ShapeSize,
    ShapesVideoDataset,
    make_batch,
    make_video_batch,
)
from blockdance_lab.evaluation.motion import motion_direction

SIZE = 32
#: Area of each shape over its half-extent squared r², from its geometry: a circle of radius
#: r; a square of side 1.7 r; an equilateral triangle of circumradius 1.2 r; a cross of two
#: 2r × 0.84r bars.
AREA_OVER_R2 = {
    "circle": math.pi,
    "square": 1.7**2,
    "triangle": 3.0 * math.sqrt(3.0) / 4.0 * 1.2**2,
    "cross": 2.0 * 2.0 * 0.84 - 0.84**2,
}
#: The stills' half-extent: 22–36% of the frame.
STILL_RANGE = (0.22 * SIZE, 0.36 * SIZE)


def _coverage(frames: torch.Tensor) -> torch.Tensor:
    """How far each pixel departs from the flat background (the top-left pixel of the first
    frame, which no shape reaches): ``(F, 3, H, W)`` -> ``(F, H, W)``."""
    background = frames[0, :, 0, 0].view(1, 3, 1, 1)
    return (frames - background).abs().amax(1)


def _masks(frames: torch.Tensor) -> torch.Tensor:
    """Pixels at least half covered by the shape: ``(F, H, W)`` bool."""
    d = _coverage(frames)
    return d > 0.5 * d.flatten(1).amax(1).view(-1, 1, 1)


def _radius(mask: torch.Tensor, shape: str) -> float:
    """Half-extent from the area of one frame's mask."""
    return math.sqrt(float(mask.sum()) / AREA_OVER_R2[shape])


def _centroids(masks: torch.Tensor) -> torch.Tensor:
    """Mask centroids ``(F, 2)``, (x, y) in pixels with pixel centres at ``i + 0.5``."""
    c = torch.arange(SIZE, dtype=torch.float32) + 0.5
    m = masks.float()
    total = m.sum((1, 2))
    return torch.stack([(m * c).sum((1, 2)) / total, (m * c[:, None]).sum((1, 2)) / total], -1)


def _plain_clips(
    n: int, seed: int, shape_size: ShapeSize, motion: Motion = "random"
) -> list[tuple[torch.Tensor, str, str]]:
    """The clips on a plain background: (frames, shape, direction)."""
    videos, _, captions = make_video_batch(n, seed=seed, shape_size=shape_size, motion=motion)
    out = []
    for video, caption in zip(videos, captions):
        if "plain background" in caption:
            shape = next(s for s in SHAPES if f" {s} " in caption)
            direction = next(d for d in DIRECTIONS if f"moving {d} " in caption)
            out.append((video, shape, direction))
    return out


def test_default_videos_are_unchanged_and_captions_do_not_depend_on_size() -> None:
    small, labels, captions = make_video_batch(16, seed=4)
    again, labels_v, captions_v = make_video_batch(16, seed=4, shape_size="video")
    large, labels_i, captions_i = make_video_batch(16, seed=4, shape_size="image")
    assert torch.equal(small, again) and torch.equal(labels, labels_v)
    assert torch.equal(labels, labels_i) and captions == captions_i == captions_v
    assert not torch.equal(small, large)
    clip = ShapesVideoDataset(16, seed=4, shape_size="image")[5]
    assert torch.equal(clip.video, large[5]) and clip.caption == captions[5]


def test_shape_sizes_match_the_stills() -> None:
    stills, labels, captions = make_batch(512, seed=3)
    still_r = [
        _radius(_masks(image[None])[0], SHAPES[int(label) // 4])
        for image, label, caption in zip(stills, labels, captions)
        if "plain background" in caption
    ]
    large = [_radius(_masks(v)[0], s) for v, s, _ in _plain_clips(512, 3, "image")]
    small = [_radius(_masks(v)[0], s) for v, s, _ in _plain_clips(512, 3, "video")]
    assert len(still_r) > 60 and len(large) > 60
    lo, hi = STILL_RANGE
    for r in still_r + large:
        assert lo - 1.0 < r < hi + 1.0  # area quantised to whole pixels: under 1 px of error
    # Both spread over the same range with the same mean (uniform: (7.0 + 11.5) / 2 = 9.3).
    mean = (lo + hi) / 2
    assert abs(sum(still_r) / len(still_r) - mean) < 0.6
    assert abs(sum(large) / len(large) - mean) < 0.6
    assert min(large) < lo + 1.0 and max(large) > hi - 1.0
    assert sum(small) / len(small) < mean - 2.5  # the default videos' shapes are smaller


def test_shapes_stay_whole_in_the_frame_and_move_the_captioned_way() -> None:
    clips = _plain_clips(256, 9, "image")
    assert {d for _, _, d in clips} == set(DIRECTIONS)
    for video, shape, direction in clips:
        d = _coverage(video)
        mass = d.sum((1, 2))  # the shape's total departure: constant while it is whole
        assert float(mass.max() / mass.min()) < 1.05
        border = torch.cat([d[:, 0], d[:, -1], d[:, :, 0], d[:, :, -1]], 1)
        assert float(border.max()) < 0.75 * float(d.max())
        c = _centroids(_masks(video))
        r = _radius(_masks(video)[0], shape)
        reach = r * (1.2 if shape == "triangle" else 1.0)
        assert float(c.min()) > reach - 1.0 and float(c.max()) < SIZE - reach + 1.0
        dx, dy = (c[-1] - c[0]).tolist()
        along, across = {
            "left": (-dx, dy),
            "right": (dx, dy),
            "up": (-dy, dx),
            "down": (dy, dx),
        }[direction]
        assert along > 1.5 and along > 2.0 * abs(across), (direction, dx, dy)
        steps = (c[1:] - c[:-1]).norm(dim=-1)
        assert float(steps.max()) < 3.0  # a few pixels per frame at most


def test_record_centres_match_the_pixels() -> None:
    ds = ShapesVideoDataset(64, seed=9, shape_size="image")
    checked = 0
    for i in range(len(ds)):
        clip = ds[i]
        if clip.background != "plain":
            continue
        c = _centroids(_masks(clip.video))
        assert (c - clip.centers).abs().max() < 0.75
        checked += 1
    assert checked > 5


def test_motion_reader_and_video_probe_on_still_sized_videos() -> None:
    from blockdance_lab.evaluation.probe import DEFAULT_VIDEO_PROBE_PATH, load_probe

    videos, labels, captions = make_video_batch(128, seed=7, shape_size="image")
    truth = torch.tensor(
        [next(i for i, d in enumerate(DIRECTIONS) if f"moving {d} " in c) for c in captions]
    )
    assert torch.equal(motion_direction(videos), truth)
    probe = load_probe(DEFAULT_VIDEO_PROBE_PATH)
    with torch.inference_mode():
        frames = probe(videos.flatten(0, 1)).view(128, 8, -1)
    predicted = frames.log_softmax(-1).mean(1).argmax(-1)
    assert float((predicted == labels).float().mean()) >= 0.95


def test_unknown_shape_size_is_refused() -> None:
    with pytest.raises(ValueError, match="shape_size must be one of"):
        make_video_batch(2, shape_size="huge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape_size must be one of"):
        ShapesVideoDataset(2, shape_size="huge")  # type: ignore[arg-type]


#: Along which axis (0: x, 1: y) and which way (+1: growing coordinates) each direction goes.
AXIS = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}


@pytest.mark.parametrize("motion", ["crossing", "fixed"])
def test_crossing_paths_go_edge_to_edge_without_drift(motion: Motion) -> None:
    crossing = _plain_clips(384, 5, "image", motion)
    random = _plain_clips(384, 5, "image")
    assert len(crossing) > 40 and [(s, d) for _, s, d in crossing] == [
        (s, d) for _, s, d in random
    ]  # same clips, same shapes and directions: only the path changes
    for (video, shape, direction), (other, _, _) in zip(crossing, random):
        axis, sign = AXIS[direction]
        masks = _masks(video)
        c, c_random = _centroids(masks), _centroids(_masks(other))
        along = sign * float(c[-1, axis] - c[0, axis])
        if motion == "crossing":  # the same shape, all of the room: at least as far
            assert along >= sign * float(c_random[-1, axis] - c_random[0, axis]) - 0.5
        assert float(c[:, 1 - axis].max() - c[:, 1 - axis].min()) < 0.5  # no drift across
        if shape == "circle":  # a circle reaches its margin: within 2 px of both edges (soft rim)
            first = masks[0].any(axis).nonzero().flatten()  # covered rows or columns
            last = masks[-1].any(axis).nonzero().flatten()
            start, end = (first.min(), last.max()) if sign > 0 else (first.max(), last.min())
            assert min(int(start), SIZE - 1 - int(start)) <= 2
            assert min(int(end), SIZE - 1 - int(end)) <= 2
    circles = [1 for _, s, _ in crossing if s == "circle"]
    assert len(circles) >= 5


def test_motion_reader_reads_crossing_paths_and_unknown_motion_is_refused() -> None:
    videos, _, captions = make_video_batch(64, seed=8, shape_size="image", motion="crossing")
    truth = torch.tensor(
        [next(i for i, d in enumerate(DIRECTIONS) if f"moving {d} " in c) for c in captions]
    )
    assert torch.equal(motion_direction(videos), truth)
    clip = ShapesVideoDataset(64, seed=8, shape_size="image", motion="crossing")[3]
    assert torch.equal(clip.video, videos[3]) and clip.caption == captions[3]
    with pytest.raises(ValueError, match="motion must be one of"):
        make_video_batch(2, motion="zigzag")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="motion must be one of"):
        ShapesVideoDataset(2, motion="zigzag")  # type: ignore[arg-type]


def test_fixed_paths_depend_on_the_caption_alone() -> None:
    clips = _plain_clips(512, 6, "image", "fixed")
    mid = sum(STILL_RANGE) / 2  # the middle of the stills' half-extents, 9.3 px
    tracks: dict[tuple[str, str], list[torch.Tensor]] = {}
    for video, shape, direction in clips:
        masks = _masks(video)
        assert abs(_radius(masks[0], shape) - mid) < 1.0
        c = _centroids(masks)  # (F, 2)
        axis, _ = AXIS[direction]
        if shape != "triangle":  # a triangle's centroid sits off its centre
            assert float((c[:, 1 - axis] - SIZE / 2).abs().max()) < 0.5  # centred across
        tracks.setdefault((shape, direction), []).append(c)
    repeated = [cs for cs in tracks.values() if len(cs) > 1]
    assert len(repeated) >= 8
    for cs in repeated:  # one path per shape and direction, whatever else the clip draws
        assert float((torch.stack(cs) - cs[0]).abs().max()) <= 0.75  # masks: whole pixels
