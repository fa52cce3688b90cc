"""The tiny SD3: its text encoder, its card, save/load, and BlockDance on both streams
(test_workload_quality.py judges the shipped model's samples)."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

import blockdance
from blockdance_lab.data.captions import VOCABULARY, ShapesTokenizer, TinyTextEncoder
from blockdance_lab.data.shapes import CLASS_NAMES
from blockdance_lab.workload import GenerateRequest
from blockdance_lab.zoo.sd3.tiny import (
    DEFAULT_WEIGHTS,
    TinySD3Config,
    load_tiny_sd3,
    save_tiny_sd3,
    seed_captions,
)
from blockdance_lab.zoo.sd3.workloads import TINY_SD3_GUIDANCE, SD3Sampler

CARD = DEFAULT_WEIGHTS.parent / "TINY_SD3_CARD.md"
SMALL = TinySD3Config(num_layers=2, attention_head_dim=8, num_attention_heads=2, text_dim=16)


def _sample(model, seeds, steps, policy=None):
    sampler = SD3Sampler(model, FlowMatchEulerDiscreteScheduler(), guidance_scale=TINY_SD3_GUIDANCE)
    request = GenerateRequest(tuple(seeds), steps)
    if policy is None:
        return sampler(request).clamp(-1, 1), None
    with blockdance.attach(sampler, policy) as handle:
        images = sampler(request).clamp(-1, 1)
    return images, handle.stats


def test_tokenizer_pads_and_rejects_unknown_words():
    tok = ShapesTokenizer(max_length=10)
    ids = tok(["a red circle on a striped background", ""])
    assert ids.shape == (2, 10)
    assert ids[1].eq(0).all() and ids[0, :7].ne(0).all() and ids[0, 7:].eq(0).all()
    assert VOCABULARY[int(ids[0, 1])] == "red"
    with pytest.raises(ValueError, match=r"'purple'.*it knows"):
        tok(["a purple circle"])
    with pytest.raises(ValueError, match="at most 10"):
        tok(["a " * 11])


def test_text_encoder_shapes_and_caption_dependence():
    torch.manual_seed(0)
    enc = TinyTextEncoder(dim=16, max_length=10).eval()
    tok = ShapesTokenizer(10)
    embeds, pooled = enc(
        tok(["a red circle on a plain background", "a blue cross on a plain background"])
    )
    assert embeds.shape == (2, 10, 16) and pooled.shape == (2, 16)
    assert not torch.allclose(pooled[0], pooled[1])


def test_seed_captions_name_the_probe_class():
    captions = seed_captions(list(range(40)))
    for seed, caption in enumerate(captions):
        color, shape = CLASS_NAMES[seed % 16].split()
        assert caption.startswith(f"a {color} {shape} on a ")
    assert captions[0] != captions[16]  # same class, next background


def test_zero_init_makes_blocks_identities():
    torch.manual_seed(0)
    model = SMALL.build()
    model.zero_init()
    x = torch.randn(2, 3, 32, 32)
    out = model(x, torch.rand(2), ["a red circle on a plain background"] * 2)
    assert out.abs().max() == 0  # proj_out is zero until trained


def test_save_load_round_trip_and_mismatch(tmp_path):
    torch.manual_seed(0)
    model = SMALL.build().eval()
    save_tiny_sd3(model, tmp_path / "m.safetensors", {"note": "test"})
    loaded = load_tiny_sd3(tmp_path / "m.safetensors")
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(b, a.half().float(), msg=k)
    sidecar = tmp_path / "m.json"
    meta = json.loads(sidecar.read_text())
    meta["config"]["num_layers"] = 3
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(blockdance.CheckpointMismatchError, match=r"transformer_blocks\.2"):
        load_tiny_sd3(tmp_path / "m.safetensors")


def test_missing_weights_say_how_to_make_them(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"scripts/train_tiny_sd3\.py"):
        load_tiny_sd3(tmp_path / "absent.safetensors")


def test_none_policy_is_bit_identical_and_blockdance_skips_both_streams():
    torch.manual_seed(0)
    model = SMALL.build().eval()
    seeds = [0, 1]
    base, _ = _sample(model, seeds, 6)
    same, stats = _sample(model, seeds, 6, {"kind": "none"})
    assert torch.equal(base, same)
    every_step = {"kind": "blockdance", "N": 2, "boundary": 0, "window": (0.0, 1.0)}
    fast, stats = _sample(model, seeds, 6, every_step)
    assert stats is not None and stats.saved_fraction > 0
    assert not torch.equal(base, fast)


def test_shipped_weights_match_their_card():
    model = load_tiny_sd3()
    meta = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert len(model.transformer.transformer_blocks) == meta["config"]["num_layers"] >= 8
    assert (model.cfg.sample_size // model.cfg.patch_size) ** 2 >= 64
    assert meta["log"]["wall_minutes"] <= 40 and meta["log"]["device"] == "cpu"
    assert DEFAULT_WEIGHTS.stat().st_size < 20 * 2**20
    card = CARD.read_text()
    assert meta["command"] in card
    assert f"{meta['log']['steps_run']} steps" in card
