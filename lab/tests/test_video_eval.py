"""Judging videos: the video-frame probe, temporal consistency and the side-by-side GIF."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from blockdance.stats import GenerationStats
from blockdance_lab.compare import PolicyRun
from blockdance_lab.data.shapes import make_batch, make_video_batch
from blockdance_lab.evaluation.metrics import class_accuracy, frechet_distance
from blockdance_lab.evaluation.probe import (
    DEFAULT_VIDEO_PROBE_PATH,
    evaluate_probe,
    load_probe,
    shape_batch,
)
from blockdance_lab.evaluation.shapes_probe import video_shapes_probe
from blockdance_lab.report import (
    add_consistency_metrics,
    format_table,
    save_video_gif,
    temporal_consistency,
)


def test_shape_batch_images_are_make_batch_and_frames_follow_videos():
    images, labels = shape_batch(6, seed=3, start=4)
    want, want_labels, _ = make_batch(6, 3, 32, start=4)
    assert torch.equal(images, want) and torch.equal(labels, want_labels)
    frames, frame_labels = shape_batch(16, seed=3, start=8, frames=8)
    videos, video_labels, _ = make_video_batch(2, 3, 32, 8, start=1)
    assert torch.equal(frames, videos.flatten(0, 1))
    assert torch.equal(frame_labels, video_labels.repeat_interleave(8))


def test_temporal_consistency_of_known_videos():
    still = torch.rand(2, 1, 3, 16, 16).expand(2, 5, 3, 16, 16) * 2 - 1
    assert temporal_consistency(still) == pytest.approx(1.0)
    noise = torch.rand(2, 5, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert temporal_consistency(noise) < 0.2
    moving, _, _ = make_video_batch(4, seed=0, frames=8)
    assert 0.5 < temporal_consistency(moving) < 1.0  # a shape moves over a still background


def _run(label: str, videos: torch.Tensor) -> PolicyRun:
    return PolicyRun(label, [1.0], GenerationStats(num_steps=1, num_blocks=1), videos)


def test_video_runs_get_temporal_column_and_a_gif(tmp_path):
    videos, _, _ = make_video_batch(3, seed=1, frames=6)  # (3, 6, 3, 32, 32)
    shaky = videos.clone()
    shaky[:, 1::2] = videos[:, 1::2].roll(3, dims=-1)  # every other frame jumps sideways
    runs = [_run("baseline", videos), _run("shaky", shaky)]
    add_consistency_metrics(runs)
    assert runs[0].metrics["temporal"] > runs[1].metrics["temporal"]
    assert runs[0].metrics["ssim"] == pytest.approx(1.0) and runs[1].metrics["ssim"] < 1.0
    assert "temporal" in format_table(runs).splitlines()[0]

    gif = save_video_gif(runs, tmp_path / "samples.gif", count=2)
    with Image.open(gif) as im:
        assert im.n_frames == 6
        assert im.size == (2 * 34 * 4, 2 * 34 * 4)  # 2 seeds x 2 policies, 2 px gaps, x4
    with Image.open(tmp_path / "samples_strip.png") as strip:
        assert strip.size == (6 * 2 * 34, 2 * 34)


def test_shipped_video_probe_reads_video_frames():
    probe = load_probe(DEFAULT_VIDEO_PROBE_PATH)
    assert evaluate_probe(probe, n=1024, seed=1_000_003, frames=8) >= 0.95
    judge = video_shapes_probe(labels=lambda seeds: torch.tensor([s % 16 for s in seeds]))
    real = judge.reference(128)  # (128, 8, 3, 32, 32)
    _, labels, _ = make_video_batch(128, seed=2_000_003, frames=8)
    assert judge.features(real).shape[0] == 128 and judge.logits(real).shape == (128, 16)
    assert class_accuracy(judge.logits(real), labels) >= 0.95
    other, _, _ = make_video_batch(128, seed=7, frames=8)
    recoloured = other.roll(1, dims=2)  # RGB -> BRG: same motion, wrong colours
    fd_real = frechet_distance(judge.features(other), judge.features(real))
    fd_fake = frechet_distance(judge.features(recoloured), judge.features(real))
    assert fd_real < 0.5 * fd_fake
