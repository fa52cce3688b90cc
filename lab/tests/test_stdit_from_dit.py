"""Initialising an STDiT from a DiT (PixArt-α's re-parametrisation)."""

from __future__ import annotations

import pytest
import torch

from blockdance_dit.model import DiT
from blockdance_lab.zoo.stdit.from_dit import stdit_from_dit_state
from blockdance_stdit.model import STDiT


def _pair(depth: int = 3, frames: int = 1) -> tuple[DiT, STDiT]:
    torch.manual_seed(0)
    dit = DiT(16, 4, 3, hidden_size=32, depth=depth, num_heads=2, mlp_ratio=2.0,
              num_classes=5, learn_sigma=False)  # fmt: skip
    stdit = STDiT((frames, 16, 16), 3, (1, 4, 4), hidden_size=32, depth=3, num_heads=2,
                  mlp_ratio=2.0, pred_sigma=False, caption_channels=8,
                  model_max_length=4)  # fmt: skip
    with torch.no_grad():
        for p in dit.parameters():
            if p.requires_grad:  # not the fixed sin-cos table
                p.normal_(0, 0.1)
    return dit.eval(), stdit.eval()


@pytest.mark.parametrize("frames", [1, 3])
def test_equals_the_null_class_dit_frame_by_frame_when_the_fit_is_exact(frames):
    # The adaLN-single fit is exact when the blocks share their modulation weights (their
    # biases may differ) and the timestep embedding is constant: then the STDiT must equal
    # the DiT's null-class prediction on every frame, whatever the caption.
    dit, stdit = _pair(frames=frames)
    with torch.no_grad():
        w = dit.blocks[0].adaLN_modulation[1].weight
        for block in dit.blocks:
            block.adaLN_modulation[1].weight.copy_(w)
        dit.t_embedder.mlp[2].weight.zero_()
    stdit_from_dit_state(stdit, dit.state_dict())
    x = torch.randn(2, 3, frames, 16, 16)  # (B, C, T, H, W)
    t = torch.tensor([10, 700])
    y = torch.randn(2, 1, 4, 8)
    with torch.no_grad():
        out = stdit(x, t, y)  # (B, C, T, H, W)
        for f in range(frames):
            want = dit(x[:, :, f], t, torch.full((2,), 5))  # null class
            torch.testing.assert_close(out[:, :, f], want, atol=1e-5, rtol=1e-4)


def test_general_dit_converts_and_stays_close_to_its_modulation_fit():
    dit, stdit = _pair()
    stdit_from_dit_state(stdit, dit.state_dict())
    torch.testing.assert_close(stdit.blocks[1].attn.qkv.weight, dit.blocks[1].attn.qkv.weight)
    assert stdit.x_embedder.proj.weight.shape == (32, 3, 1, 4, 4)
    # the table holds each block's mean offset from the shared map
    offsets = torch.stack([b.scale_shift_table for b in stdit.blocks])  # (depth, 6, D)
    torch.testing.assert_close(offsets.sum(0), torch.zeros(6, 32), atol=1e-4, rtol=0)


def test_mismatched_dit_is_named():
    dit, stdit = _pair(depth=2)
    with pytest.raises(ValueError, match="the DiT has 2 blocks, the STDiT 3"):
        stdit_from_dit_state(stdit, dit.state_dict())
    state = dict(_pair()[0].state_dict())
    state["blocks.0.mlp.fc1.weight"] = torch.zeros(48, 32)
    with pytest.raises(ValueError, match=r"blocks\.0\.mlp\.fc1\.weight"):
        stdit_from_dit_state(stdit, state)
