"""The DiT plugin on diffusers' DiT and PixArt-α transformers and pipelines (offline, tiny)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DiTPipeline,
    DPMSolverMultistepScheduler,
    PixArtAlphaPipeline,
)

import blockdance
from blockdance_dit.examples import DEPTH, tiny_diffusers_dit, tiny_pixart
from pipeline_checks import generate, none_then_blockdance, offline_pipeline, tiny_vae

STEPS = 10
BOUNDARY = 2  # round(21/28 * 4) - 1


@pytest.mark.parametrize("arch", ["diffusers-dit", "pixart-alpha"])
def test_spec_example_is_matched_with_every_block(arch):
    """The contract itself runs on the example in tests/test_architecture_contract.py."""
    example = blockdance.default_registry().architecture(arch).example
    assert example is not None
    with blockdance.attach(example().build(), "none", num_steps=1) as handle:
        assert handle.architecture.name == arch
        assert len(handle.slots) == DEPTH


def dit_pipe() -> DiTPipeline:
    return offline_pipeline(
        DiTPipeline,
        (),
        transformer=tiny_diffusers_dit(),
        vae=tiny_vae(sample_size=16),
        scheduler=DDIMScheduler(),
    )


def run_dit(pipe: DiTPipeline, steps: int = STEPS, labels=(1, 2)) -> np.ndarray:
    return generate(pipe, steps, seed=0, class_labels=list(labels), guidance_scale=4.0)


def pixart_pipe() -> PixArtAlphaPipeline:
    return offline_pipeline(
        PixArtAlphaPipeline,
        ("tokenizer", "text_encoder"),
        vae=tiny_vae(sample_size=16),
        transformer=tiny_pixart(),
        scheduler=DPMSolverMultistepScheduler(),
    )


def run_pixart(pipe: PixArtAlphaPipeline, steps: int = STEPS) -> np.ndarray:
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(1, 6, 12, generator=g)
    mask = torch.ones(1, 6)
    return generate(
        pipe,
        steps,
        prompt_embeds=embeds,
        prompt_attention_mask=mask,
        negative_prompt=None,
        negative_prompt_embeds=torch.zeros_like(embeds),
        negative_prompt_attention_mask=mask,
        height=16,
        width=16,
        use_resolution_binning=False,
    )


def reuse_counts(reuse_steps: tuple[int, ...]) -> dict[int, int]:
    """Executions of each of the DEPTH blocks in STEPS steps when those steps reuse 0..BOUNDARY."""
    return {i: STEPS - len(reuse_steps) if i <= BOUNDARY else STEPS for i in range(DEPTH)}


def test_dit_pipeline_none_identity_and_blockdance_schedule():
    pipe = dit_pipe()

    def second_generation(handle: blockdance.Handle) -> None:
        first = handle.stats
        run_dit(pipe, steps=STEPS, labels=(5, 6, 7))  # new generation, new batch size
        assert handle.stats is not first

    runs = none_then_blockdance(pipe, run_dit, "diffusers-dit", then=second_generation)
    assert runs.stats.num_steps == STEPS  # from the pipeline call
    # window 25%-95% of 10 steps = steps 3..9; N=2 reuses 4, 6, 8 (batched guidance: 1 branch)
    expected = {(s, b) for s in (4, 6, 8) for b in range(BOUNDARY + 1)}
    assert runs.stats.reused_pairs() == expected
    assert runs.stats.branches == 1
    assert runs.computed == reuse_counts((4, 6, 8))
    assert np.abs(runs.fast - runs.ref).max() < 0.5


def test_pixart_pipeline_offline_uses_pixart_window():
    runs = none_then_blockdance(pixart_pipe(), run_pixart, "pixart-alpha")
    # PixArt-α window 40%-95% of 10 steps = steps 4..9; N=2 reuses 5, 7, 9
    expected = {(s, b) for s in (5, 7, 9) for b in range(BOUNDARY + 1)}
    assert runs.stats.reused_pairs() == expected
    assert runs.stats.num_steps == STEPS
    assert runs.computed == reuse_counts((5, 7, 9))
