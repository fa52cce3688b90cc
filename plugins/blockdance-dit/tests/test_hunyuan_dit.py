"""The DiT plugin on diffusers' HunyuanDiT: long-skip side flows, the contract, a pipeline.

Everything is built offline from tiny random components (no text encoders: the pipeline
gets its CLIP/BERT and T5 embeddings directly).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, HunyuanDiTPipeline
from torch import nn

import blockdance
from blockdance_dit.examples import (
    HUNYUAN_DEPTH,
    HUNYUAN_TEXT,
    hunyuan_dit_call,
    tiny_hunyuan_dit,
)

STEPS = 10
BOUNDARY = 4  # round(21/28 * 6) - 1: blocks 0..4 structural, block 5 deep
# window 25%-95% of 10 steps = steps 3..9; N=2 reuses 4, 6, 8
REUSE_STEPS = (4, 6, 8)


def spec() -> blockdance.ArchitectureSpec:
    return blockdance.default_registry().architecture("hunyuan-dit")


def count_block_calls(model: nn.Module) -> Counter[int]:
    """Wrap every block's forward (before attach) to count real executions by slot."""
    counts: Counter[int] = Counter()
    for slot in spec().blocks(model):
        original = slot.module.forward

        def counted(*args: Any, _i: int = slot.index, _f: Any = original, **kw: Any) -> Any:
            counts[_i] += 1
            return _f(*args, **kw)

        slot.module.forward = counted
    return counts


def test_side_flows_are_the_blocks_whose_output_feeds_a_long_skip():
    model = tiny_hunyuan_dit()
    assert blockdance.default_registry().match(model).name == "hunyuan-dit"
    slots = spec().blocks(model)
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
        slots = spec().blocks(model)
        assert [s.index for s in slots if s.side_flow] == list(range(kept))
    assert spec().default_boundary(28) == 20
    assert spec().window == (0.25, 0.95)


# -- the pipeline, offline ----------------------------------------------------------------------
def tiny_vae() -> AutoencoderKL:
    """Four levels: the VAE scale factor is 8, which the pipeline's RoPE grid assumes."""
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(4, 4, 4, 4),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=2,
        layers_per_block=1,
        sample_size=64,
    ).eval()


def hunyuan_pipe() -> HunyuanDiTPipeline:
    pipe = HunyuanDiTPipeline(
        vae=tiny_vae(),
        text_encoder=None,
        tokenizer=None,
        transformer=tiny_hunyuan_dit(),
        scheduler=DDPMScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_hunyuan(pipe: HunyuanDiTPipeline) -> np.ndarray:
    """64 x 64 pixels: 8 x 8 latents, 16 tokens; batched guidance (one call per step)."""
    clip_len, t5_len = HUNYUAN_TEXT
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(1, clip_len, 16, generator=g)  # (N, T_clip, C)
    embeds_2 = torch.randn(1, t5_len, 16, generator=g)  # (N, T_t5, C_t5)
    return pipe(
        prompt_embeds=embeds,
        prompt_attention_mask=torch.ones(1, clip_len),
        prompt_embeds_2=embeds_2,
        prompt_attention_mask_2=torch.ones(1, t5_len),
        negative_prompt_embeds=torch.zeros_like(embeds),
        negative_prompt_attention_mask=torch.ones(1, clip_len),
        negative_prompt_embeds_2=torch.zeros_like(embeds_2),
        negative_prompt_attention_mask_2=torch.ones(1, t5_len),
        num_inference_steps=STEPS,
        guidance_scale=5.0,
        height=64,
        width=64,
        use_resolution_binning=False,
        output_type="np",
        generator=torch.Generator().manual_seed(1),
    ).images


def test_pipeline_none_identity_and_blockdance():
    pipe = hunyuan_pipe()
    ref = run_hunyuan(pipe)
    assert ref.shape == (1, 64, 64, 3)
    with blockdance.attach(pipe, "none") as handle:
        assert handle.architecture.name == "hunyuan-dit"
        assert np.array_equal(run_hunyuan(pipe), ref)
    counts = count_block_calls(pipe.transformer)
    with blockdance.attach(pipe, "blockdance", N=2) as handle:
        fast = run_hunyuan(pipe)
    stats = handle.stats
    assert stats.num_steps == STEPS  # from the pipeline call
    assert stats.branches == 1  # batched guidance
    assert stats.reused_pairs() == {(s, b) for s in REUSE_STEPS for b in range(BOUNDARY + 1)}
    reused = len(REUSE_STEPS)
    assert counts == {i: STEPS - reused if i <= BOUNDARY else STEPS for i in range(HUNYUAN_DEPTH)}
    assert np.isfinite(fast).all() and not np.array_equal(fast, ref)
    assert "forward" not in vars(pipe.transformer)
    assert "set_timesteps" not in vars(pipe.scheduler)
