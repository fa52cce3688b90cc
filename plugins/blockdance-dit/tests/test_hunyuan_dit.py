"""The DiT plugin on diffusers' HunyuanDiT: long-skip side flows, the contract, a pipeline.

Everything is built offline from tiny random components (no text encoders: the pipeline
gets its CLIP/BERT and T5 embeddings directly).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DDPMScheduler, HunyuanDiTPipeline
from torch import nn

import blockdance
from blockdance_dit.examples import (
    HUNYUAN_DEPTH,
    HUNYUAN_TEXT,
    hunyuan_dit_call,
    tiny_hunyuan_dit,
)
from pipeline_checks import generate, none_then_blockdance, offline_pipeline, tiny_vae

STEPS = 10
BOUNDARY = 4  # round(21/28 * 6) - 1: blocks 0..4 structural, block 5 deep
# window 25%-95% of 10 steps = steps 3..9; N=2 reuses 4, 6, 8
REUSE_STEPS = (4, 6, 8)


#: The registered spec (tests/test_examples.py checks that the tiny model is matched to it).
SPEC = blockdance.default_registry().architecture("hunyuan-dit")


def test_side_flows_are_the_blocks_whose_output_feeds_a_long_skip():
    model = tiny_hunyuan_dit()
    slots = SPEC.blocks(model)
    assert [s.name for s in slots] == [f"blocks.{i}" for i in range(HUNYUAN_DEPTH)]
    outputs: dict[int, torch.Tensor] = {}
    skips: list[torch.Tensor] = []  # what the forward passes as skip=, in call order
    for slot in slots:
        slot.module.register_forward_hook(lambda m, a, out, i=slot.index: outputs.update({i: out}))
        slot.module.register_forward_pre_hook(
            lambda m, a, kw: skips.append(kw["skip"]) if kw.get("skip") is not None else None,
            with_kwargs=True,
        )
    with torch.no_grad():
        hunyuan_dit_call(model, 500)
    fed = [i for s in skips for i, out in outputs.items() if out is s]
    assert fed == [1, 0]  # blocks 4 and 5 pop blocks 1 and 0 (U-ViT order)
    assert [s.side_flow for s in slots] == [True, True, False, False, False, False]
    assert {s.form for s in slots} == {""}  # one tensor throughout


def test_side_flows_at_full_depth():
    """HunyuanDiT-v1 has 40 blocks: blocks 0..18 feed skips; 28 blocks: 0..12."""
    for depth, kept in ((40, 19), (28, 13)):
        model = nn.Module()
        model.blocks = nn.ModuleList(nn.Identity() for _ in range(depth))
        slots = SPEC.blocks(model)
        assert [s.index for s in slots if s.side_flow] == list(range(kept))
    assert SPEC.default_boundary(28) == 20
    assert SPEC.window == (0.25, 0.95)


# -- the pipeline, offline ----------------------------------------------------------------------
def hunyuan_pipe() -> HunyuanDiTPipeline:
    return offline_pipeline(
        HunyuanDiTPipeline,
        ("text_encoder", "tokenizer", "safety_checker", "feature_extractor"),
        # four levels: the VAE scale factor is 8, which the pipeline's RoPE grid assumes
        vae=tiny_vae(width=4, levels=4, groups=2, sample_size=64),
        transformer=tiny_hunyuan_dit(),
        scheduler=DDPMScheduler(),
        requires_safety_checker=False,
    )


def run_hunyuan(pipe: HunyuanDiTPipeline) -> np.ndarray:
    """64 x 64 pixels: 8 x 8 latents, 16 tokens; batched guidance (one call per step)."""
    clip_len, t5_len = HUNYUAN_TEXT
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(1, clip_len, 16, generator=g)  # (N, T_clip, C)
    embeds_2 = torch.randn(1, t5_len, 16, generator=g)  # (N, T_t5, C_t5)
    return generate(
        pipe,
        STEPS,
        prompt_embeds=embeds,
        prompt_attention_mask=torch.ones(1, clip_len),
        prompt_embeds_2=embeds_2,
        prompt_attention_mask_2=torch.ones(1, t5_len),
        negative_prompt_embeds=torch.zeros_like(embeds),
        negative_prompt_attention_mask=torch.ones(1, clip_len),
        negative_prompt_embeds_2=torch.zeros_like(embeds_2),
        negative_prompt_attention_mask_2=torch.ones(1, t5_len),
        guidance_scale=5.0,
        height=64,
        width=64,
        use_resolution_binning=False,
    )


def test_pipeline_none_identity_and_blockdance():
    runs = none_then_blockdance(hunyuan_pipe(), run_hunyuan, "hunyuan-dit")
    assert runs.ref.shape == (1, 64, 64, 3)
    stats = runs.stats
    assert stats.num_steps == STEPS  # from the pipeline call
    assert stats.branches == 1  # batched guidance
    assert stats.reused_pairs() == {(s, b) for s in REUSE_STEPS for b in range(BOUNDARY + 1)}
    reused = len(REUSE_STEPS)
    assert runs.computed == {
        i: STEPS - reused if i <= BOUNDARY else STEPS for i in range(HUNYUAN_DEPTH)
    }
