"""The tiny STDiT's code: captions, training step, save/load and its sampler under blockdance.

The weights are not shipped yet (see docs/stdit.md); these tests run on a small random model.
"""

from __future__ import annotations

import json

import pytest
import torch

import blockdance
from blockdance.data.shapes import CLASS_NAMES, make_video_batch
from blockdance.workload import GenerateRequest
from blockdance_stdit.tiny import (
    TinySTDiTConfig,
    TrainConfig,
    load_tiny_stdit,
    save_tiny_stdit,
    seed_captions,
    train_tiny_stdit,
)
from blockdance_stdit.workloads import STDiTSampler, ddim_linear

SMALL = TinySTDiTConfig(frames=4, image_size=16, hidden_size=32, depth=4, num_heads=2, text_dim=16)


def _sampler(model) -> STDiTSampler:
    return STDiTSampler(model, ddim_linear(), guidance_scale=3.0)


def test_seed_captions_name_class_background_and_direction():
    captions = seed_captions(list(range(0, 400, 37)))
    for seed, caption in zip(range(0, 400, 37), captions):
        color, shape = CLASS_NAMES[seed % 16].split()
        assert caption.startswith(f"a {color} {shape} moving ")
    assert len({c.split()[4] for c in seed_captions(range(0, 320, 80))}) == 4  # directions


def test_training_runs_and_weights_round_trip(tmp_path):
    def batch(n, seed, start):
        videos, _, captions = make_video_batch(n, seed, 16, frames=4, start=start)
        return videos, captions

    model, log = train_tiny_stdit(SMALL, TrainConfig(steps=3, batch_size=2, warmup=1), batch,
                                  progress=False)  # fmt: skip
    assert log["steps_run"] == 3 and torch.isfinite(torch.tensor(log["final_loss_avg100"]))
    save_tiny_stdit(model, tmp_path / "m.safetensors", {"log": log})
    loaded = load_tiny_stdit(tmp_path / "m.safetensors")
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(b, a.half().float(), msg=k)
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["config"]["depth"] = 5
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(blockdance.CheckpointMismatchError, match=r"blocks\.4"):
        load_tiny_stdit(tmp_path / "m.safetensors")
    with pytest.raises(FileNotFoundError, match=r"scripts/train_tiny_stdit\.py"):
        load_tiny_stdit(tmp_path / "absent.safetensors")


def test_sampler_makes_videos_and_blockdance_skips_blocks():
    torch.manual_seed(0)
    model = SMALL.build().eval()
    with torch.no_grad():  # adaLN-single and zeroed outputs: give the blocks an effect
        for p in model.stdit.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    request = GenerateRequest((0, 1), 8)
    base = _sampler(model)(request)
    assert base.shape == (2, 4, 3, 16, 16)
    sampler = _sampler(model)
    with blockdance.attach(sampler, "none") as handle:
        assert handle.architecture.name == "stdit"
        assert torch.equal(sampler(request), base)
    with blockdance.attach(sampler, "blockdance", N=2, boundary=1) as handle:
        fast = sampler(request)
    assert handle.stats.num_steps == 8 and handle.stats.saved_fraction > 0
    assert not torch.equal(fast, base)
