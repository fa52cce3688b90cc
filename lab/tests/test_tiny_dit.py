"""The shipped tiny DiT: loads as its card says, saves and loads its weights
(test_workload_quality.py judges its samples)."""

from __future__ import annotations

import json

import pytest
import torch

from blockdance_lab.zoo.dit.tiny import DEFAULT_WEIGHTS, TinyDiTConfig, load_tiny_dit, save_tiny_dit

CARD = DEFAULT_WEIGHTS.parent / "TINY_DIT_CARD.md"


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
