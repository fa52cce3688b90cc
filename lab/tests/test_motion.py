"""Reading the direction of motion from moving-shape videos."""

from __future__ import annotations

import pytest
import torch

from blockdance_lab.data.shapes import DIRECTIONS, caption_for, make_video_batch, opposite_direction
from blockdance_lab.evaluation.motion import motion_direction, shape_centroids


def _truth(captions: list[str]) -> torch.Tensor:
    return torch.tensor([next(i for i, d in enumerate(DIRECTIONS) if f"moving {d}" in c)
                         for c in captions])  # fmt: skip


def test_reads_the_captioned_direction_of_real_videos():
    videos, _, captions = make_video_batch(128, seed=7)
    truth = _truth(captions)
    assert len(set(truth.tolist())) == 4
    assert torch.equal(motion_direction(videos), truth)


def test_played_backwards_the_direction_flips():
    videos, _, captions = make_video_batch(32, seed=8)
    opposite = torch.tensor([1, 0, 3, 2])[_truth(captions)]  # left<->right, up<->down
    assert torch.equal(motion_direction(videos.flip(1)), opposite)


def test_opposite_direction_turns_the_word_only():
    turned = {"left": "right", "right": "left", "up": "down", "down": "up"}
    for word, other in turned.items():
        caption = caption_for("cross", "blue", "striped", word)
        assert opposite_direction(caption) == caption_for("cross", "blue", "striped", other)
    with pytest.raises(ValueError, match="names no direction"):
        opposite_direction(caption_for("cross", "blue", "striped"))


def test_the_opposite_word_names_the_clip_played_backwards():
    videos, _, captions = make_video_batch(32, seed=9)
    named = _truth([opposite_direction(c) for c in captions])
    assert torch.equal(motion_direction(videos.flip(1)), named)


def test_centroid_follows_a_moving_square():
    videos = torch.zeros(1, 3, 3, 16, 16)  # (N, F, C, H, W)
    for f, x in enumerate((2, 7, 12)):
        videos[0, f, :, 5:7, x : x + 2] = 1.0
    c = shape_centroids(videos)[0]  # (F, 2)
    torch.testing.assert_close(c[:, 0], torch.tensor([2.5, 7.5, 12.5]))
    torch.testing.assert_close(c[:, 1], torch.full((3,), 5.5))
    assert DIRECTIONS[int(motion_direction(videos))] == "right"


def test_needs_frames():
    with pytest.raises(ValueError, match=r"videos \(N, F >= 2"):
        motion_direction(torch.zeros(2, 3, 16, 16))
