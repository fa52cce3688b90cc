"""Procedural shape data, quality metrics and the shipped probe."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pytest
import torch
from torch.utils.data import DataLoader

from blockdance_lab.data.shapes import (
    BACKGROUNDS,
    CLASS_NAMES,
    COLORS,
    DIRECTIONS,
    SHAPES,
    ShapesDataset,
    ShapesVideoDataset,
    caption_for,
    class_index,
    make_batch,
    make_video_batch,
    num_classes,
)
from blockdance_lab.evaluation.metrics import class_accuracy, frechet_distance, psnr, ssim
from blockdance_lab.evaluation.probe import (
    DEFAULT_PROBE_PATH,
    ProbeNet,
    evaluate_probe,
    load_probe,
    probe_features,
    save_probe,
)

if TYPE_CHECKING:
    from pathlib import Path

# Nominal class colours in [0, 1] (the renderer jitters them by ±0.06 and shades by ≤ 18 %).
_RGB = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.75, 0.15),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.10),
}

# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------


def test_classes() -> None:
    assert num_classes >= 10
    assert len(CLASS_NAMES) == num_classes == len(set(CLASS_NAMES))
    for shape in SHAPES:
        for color in COLORS:
            assert CLASS_NAMES[class_index(shape, color)] == f"{color} {shape}"


def test_dataset_is_deterministic_and_order_independent() -> None:
    ds = ShapesDataset(100, seed=3)
    a, b = ds[17], ShapesDataset(100, seed=3)[17]
    assert torch.equal(a.image, b.image)
    assert (a.label, a.caption) == (b.label, b.caption)
    images, labels, captions = ds.batch([40, 17, 3])
    assert torch.equal(images[1], a.image)
    assert int(labels[1]) == a.label and captions[1] == a.caption
    batch, _, _ = make_batch(20, seed=3, start=10)
    assert torch.equal(batch[7], a.image)
    other = ShapesDataset(100, seed=4)[17]
    assert not torch.equal(other.image, a.image)
    assert not torch.equal(ds[18].image, a.image)


def test_image_format_and_captions() -> None:
    ds = ShapesDataset(64, seed=0)
    seen_backgrounds = set()
    for i in range(len(ds)):
        s = ds[i]
        assert s.image.shape == (3, 32, 32) and s.image.dtype == torch.float32
        assert float(s.image.min()) >= -1.0 and float(s.image.max()) <= 1.0
        assert s.label == class_index(s.shape, s.color)
        assert s.color in s.caption and s.shape in s.caption and s.background in s.caption
        assert s.caption == caption_for(s.shape, s.color, s.background)
        seen_backgrounds.add(s.background)
    assert seen_backgrounds == set(BACKGROUNDS)
    assert ShapesDataset(4, seed=0, image_size=48)[0].image.shape == (3, 48, 48)
    with pytest.raises(IndexError):
        ds[64]


def test_labels_are_balanced_and_collate() -> None:
    _, labels, _ = make_batch(4000, seed=1)
    counts = torch.bincount(labels, minlength=num_classes).float()
    assert counts.min() > 0.6 * counts.mean()
    batch = next(iter(DataLoader(ShapesDataset(8, seed=1), batch_size=4)))
    assert batch.image.shape == (4, 3, 32, 32) and len(batch.caption) == 4


# --------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------


def test_video_shape_determinism_and_caption() -> None:
    ds = ShapesVideoDataset(32, seed=5)
    v = ds[3]
    assert v.video.shape == (8, 3, 32, 32)
    assert torch.equal(v.video, ShapesVideoDataset(32, seed=5)[3].video)
    assert not torch.equal(v.video, ShapesVideoDataset(32, seed=6)[3].video)
    assert v.caption == caption_for(v.shape, v.color, v.background, v.direction)
    assert f"moving {v.direction}" in v.caption
    videos, labels, captions = make_video_batch(6, seed=5, frames=10)
    assert videos.shape == (6, 10, 3, 32, 32) and labels.shape == (6,) and len(captions) == 6


@pytest.mark.parametrize("index", range(12))
def test_video_motion_is_straight_and_matches_caption(index: int) -> None:
    v = ShapesVideoDataset(12, seed=11)[index]
    frames = v.video
    for t in range(1, frames.shape[0]):
        assert not torch.equal(frames[t], frames[t - 1])
    steps = v.centers[1:] - v.centers[:-1]  # (T-1, 2) constant velocity
    assert torch.allclose(steps, steps[0].expand_as(steps), atol=1e-4)
    dx, dy = (v.centers[-1] - v.centers[0]).tolist()
    expected = {"left": -dx, "right": dx, "up": -dy, "down": dy}
    assert v.direction in DIRECTIONS
    assert expected[v.direction] > 2.0  # pixels travelled along the caption's direction
    assert expected[v.direction] > 2.0 * min(abs(dx), abs(dy))  # mostly along that axis
    # The shape is drawn where the record says it is: its colour sits at every centre.
    rgb = torch.tensor(_RGB[v.color])
    for t in range(frames.shape[0]):
        x, y = v.centers[t].long().tolist()
        pixel = (frames[t, :, y, x] + 1.0) / 2.0
        assert (pixel - rgb).abs().max() < 0.3, (t, pixel, rgb)


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


def test_ssim() -> None:
    a, _, _ = make_batch(8, seed=2)
    assert torch.allclose(ssim(a, a), torch.ones(8), atol=1e-5)
    noisy = (a + 0.2 * torch.randn(a.shape, generator=torch.Generator().manual_seed(0))).clamp(
        -1, 1
    )
    s = ssim(a, noisy)
    assert s.shape == (8,)
    assert (s < 0.95).all() and (s > -1).all()
    assert torch.allclose(s, ssim(noisy, a), atol=1e-6)
    noisier = (a + 0.5 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))).clamp(
        -1, 1
    )
    assert (ssim(a, noisier) < s).all()
    small = a[:, :, :8, :8]  # under the 11-px window: the window shrinks
    assert torch.allclose(ssim(small, small), torch.ones(8), atol=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        ssim(a, a[:, :, :16])


def test_psnr() -> None:
    a, _, _ = make_batch(4, seed=2)
    assert torch.isinf(psnr(a, a)).all()
    assert torch.equal(psnr(a, a, max_db=100.0), torch.full((4,), 100.0))
    expected = 10 * math.log10(4.0 / 0.01)  # constant error 0.1, range 2
    assert torch.allclose(psnr(a, a + 0.1), torch.full((4,), expected), atol=1e-3)
    gen = torch.Generator().manual_seed(0)
    low = psnr(a, a + 0.05 * torch.randn(a.shape, generator=gen))
    high = psnr(a, a + 0.2 * torch.randn(a.shape, generator=gen))
    assert (high < low).all()


def test_frechet_distance() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 4, generator=gen)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    y = torch.randn(20000, 4, generator=gen)
    shift = torch.tensor([1.0, 2.0, 0.0, -0.5])
    assert frechet_distance(x, y + shift) == pytest.approx(float(shift.pow(2).sum()), abs=0.1)
    # N(0, I) vs N(0, 4 I): per dimension (1 + 4 − 2·2) = 1.
    assert frechet_distance(x, 2.0 * y) == pytest.approx(4.0, abs=0.2)
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-6, abs=1e-9)
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(x, y[:, :3])


def test_class_accuracy() -> None:
    labels = torch.arange(100) % 16
    logits = torch.nn.functional.one_hot(labels, 16).float()
    assert class_accuracy(logits, labels) == 1.0
    assert class_accuracy(labels, labels) == 1.0
    shuffled = labels[torch.randperm(100, generator=torch.Generator().manual_seed(0))]
    assert class_accuracy(logits, shuffled) < 0.3


# --------------------------------------------------------------------------------------
# Probe
# --------------------------------------------------------------------------------------


def test_shipped_probe_accuracy() -> None:
    assert DEFAULT_PROBE_PATH.stat().st_size < 1_000_000
    probe = load_probe()
    assert evaluate_probe(probe, n=512, seed=424242) >= 0.98
    images, _, _ = make_batch(16, seed=424242)
    assert probe_features(probe, images).shape == (16, probe.config["feature_dim"])


def test_probe_save_load_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ProbeNet().eval()
    path = save_probe(model, tmp_path / "p.safetensors", metadata={"note": "test"})
    loaded = load_probe(path)
    x, _, _ = make_batch(4, seed=0)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=1e-2)
    with pytest.raises(FileNotFoundError, match="expected probe weights"):
        load_probe(tmp_path / "missing.safetensors")


def test_request_noise_is_per_seed_whatever_the_batch():
    from blockdance_lab.workload import GenerateRequest

    like = torch.zeros(1, dtype=torch.float64)
    both = GenerateRequest((3, 7), 1).noise((2, 4), like=like)
    alone = GenerateRequest((7,), 1).noise((2, 4), like=like)
    assert both.shape == (2, 2, 4) and both.dtype == torch.float64
    assert torch.equal(both[1], alone[0]) and not torch.equal(both[0], both[1])
