"""The shipped tiny DiT: loads as its card says, is really trained, and BlockDance keeps it."""

from __future__ import annotations

import json
from functools import cache

import pytest
import torch

import blockdance
from blockdance_lab.evaluation.metrics import class_accuracy, frechet_distance, ssim
from blockdance_lab.workload import GenerateRequest, QualityProbe
from blockdance_lab.zoo.dit.sampling import make_scheduler
from blockdance_lab.zoo.dit.tiny import DEFAULT_WEIGHTS, TinyDiTConfig, load_tiny_dit, save_tiny_dit
from blockdance_lab.zoo.dit.workloads import TINY_GUIDANCE, DiTSampler, tiny_shapes_probe

CARD = DEFAULT_WEIGHTS.parent / "TINY_DIT_CARD.md"


@cache
def _probe() -> QualityProbe:
    return tiny_shapes_probe()


def _sample(seeds, steps, policy=None, model=None):
    sampler = DiTSampler(
        model or load_tiny_dit(), make_scheduler("ddim"), guidance_scale=TINY_GUIDANCE
    )
    request = GenerateRequest(tuple(seeds), steps)
    if policy is None:
        with torch.inference_mode():
            return sampler(request).clamp(-1, 1), None
    with blockdance.attach(sampler, policy) as handle, torch.inference_mode():
        images = sampler(request).clamp(-1, 1)
    return images, handle.stats


def test_shipped_weights_match_their_card():
    model = load_tiny_dit()
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert len(model.blocks) == meta["config"]["depth"] >= 8
    assert (model.input_size // model.patch_size) ** 2 >= 64
    assert model.num_classes == 16 and not model.learn_sigma
    assert meta["log"]["wall_minutes"] <= 40 and meta["log"]["device"] == "cpu"
    assert DEFAULT_WEIGHTS.stat().st_size < 20 * 2**20
    card = CARD.read_text()
    assert meta["command"] in card
    assert f"{meta['log']['steps_run']} steps" in card


def test_missing_weights_say_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"scripts/train_tiny_dit\.py"):
        load_tiny_dit(tmp_path / "absent.safetensors")


def test_save_load_round_trip(tmp_path):
    cfg = TinyDiTConfig(depth=2, hidden_size=32, num_heads=2)
    torch.manual_seed(0)
    model = cfg.build().eval()
    save_tiny_dit(model, cfg, tmp_path / "m.safetensors", {"note": "test"})
    loaded = load_tiny_dit(tmp_path / "m.safetensors")
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(b, a.half().float(), msg=k)


def test_trained_model_draws_the_asked_class():
    """An untrained model gives about 1/16; the shipped one is far above that."""
    seeds = list(range(32))
    images, _ = _sample(seeds, 20)
    acc = class_accuracy(_probe().logits(images), _probe().labels(seeds))
    assert acc >= 0.5
    config = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())["config"]
    untrained = TinyDiTConfig(**config)
    torch.manual_seed(0)
    noise_images, _ = _sample(seeds[:16], 5, model=untrained.build().eval())
    assert class_accuracy(_probe().logits(noise_images), _probe().labels(seeds[:16])) <= 0.25


@pytest.mark.slow
def test_blockdance_n2_keeps_the_baseline():
    """Issue-3 bars on 64 seeds, DDIM-50: SSIM >= 0.95, FD-probe within 10% of the baseline."""
    seeds = list(range(64))
    base, _ = _sample(seeds, 50)
    fast, stats = _sample(seeds, 50, {"kind": "blockdance", "N": 2})
    assert stats is not None and stats.saved_fraction > 0.2
    assert float(ssim(fast, base).mean()) >= 0.95
    real = _probe().features(_probe().reference(1024))
    fd_base = frechet_distance(_probe().features(base), real)
    fd_fast = frechet_distance(_probe().features(fast), real)
    assert fd_fast <= 1.10 * fd_base
