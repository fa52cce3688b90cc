"""The tiny STDiT's recipe on still-sized videos (``video_batches(cfg, "image")``) and from
saved weights (``init_weights``), as issue 18's pilots use them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from blockdance_lab.data.shapes import make_video_batch
from blockdance_lab.zoo.stdit.tiny import (
    TinySTDiTConfig,
    TrainConfig,
    load_tiny_stdit,
    save_tiny_stdit,
    train_tiny_stdit,
    video_batches,
)

SMALL = TinySTDiTConfig(frames=4, image_size=16, hidden_size=32, depth=2, num_heads=2, text_dim=16)


def test_video_batches_render_the_asked_shape_size() -> None:
    for size in ("video", "image"):
        videos, captions = video_batches(SMALL, size)(3, 5, 7, 4)
        expected, _, expected_captions = make_video_batch(3, 5, 16, 4, 7, shape_size=size)
        assert torch.equal(videos, expected) and captions == expected_captions
    assert not torch.equal(
        video_batches(SMALL)(3, 5, 7, 4)[0], video_batches(SMALL, "image")(3, 5, 7, 4)[0]
    )


def test_video_stage_starts_from_saved_weights_of_another_frame_count(tmp_path: Path) -> None:
    torch.manual_seed(3)
    image_model = TinySTDiTConfig(**{**SMALL.__dict__, "frames": 1}).build()
    with torch.no_grad():
        for p in image_model.parameters():
            p.normal_(0, 0.05)
    path = tmp_path / "image.safetensors"
    save_tiny_stdit(image_model, path, {})
    saved = load_tiny_stdit(path).state_dict()  # the fp16 weights as written
    # A learning rate of ~0: the trained model is the saved one, at 4 frames.
    cfg = TrainConfig(steps=1, batch_size=2, warmup=1, lr=1e-12, image_steps=0, init="none")
    batches = video_batches(SMALL, "image")
    model, log = train_tiny_stdit(SMALL, cfg, batches, progress=False, init_weights=path)
    assert log["video"]["steps_run"] == 1 and "image" not in log
    state = model.state_dict()
    for key, value in saved.items():
        if key != "stdit.pos_embed_temporal":  # a sin-cos table per frame count
            torch.testing.assert_close(state[key], value, atol=1e-6, rtol=0, msg=key)
    assert state["stdit.pos_embed_temporal"].shape[1] == 4


def test_weights_of_another_architecture_are_refused_before_training(tmp_path: Path) -> None:
    other = TinySTDiTConfig(**{**SMALL.__dict__, "depth": 3}).build()
    path = tmp_path / "other.safetensors"
    save_tiny_stdit(other, path, {})
    cfg = TrainConfig(init="none", image_steps=0)
    with pytest.raises(ValueError, match="differs from the one to train"):
        train_tiny_stdit(SMALL, cfg, progress=False, init_weights=path)
