"""What the plugins' tests share: counting block executions, tiny offline diffusers parts,
one pipeline generation, and the check every pipeline test starts with.

Importable from every test folder (pytest's ``pythonpath`` holds ``tests/``); diffusers is
imported only by the functions that build its parts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import blockdance
from blockdance.testing import count_block_calls


def tiny_vae(
    width: int = 8, levels: int = 1, groups: int = 8, sample_size: int = 8, **config: Any
) -> Any:
    """A seeded diffusers ``AutoencoderKL`` of ``levels`` levels of ``width`` channels, in eval
    mode; ``config`` adds or overrides its other arguments (``latent_channels`` is 4)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(width,) * levels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        norm_num_groups=groups,
        layers_per_block=1,
        sample_size=sample_size,
        **config,
    ).eval()


def offline_pipeline(pipeline_class: type, absent: Iterable[str], **parts: Any) -> Any:
    """A diffusers pipeline of tiny ``parts``, the ``absent`` ones (text encoders, tokenizers:
    tests pass embeddings) given as None, its progress bar off."""
    pipe = pipeline_class(**parts, **dict.fromkeys(absent))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe: Any, steps: int, seed: int = 1, output_type: str = "np", **inputs: Any) -> Any:
    """One generation of ``pipe``: numpy images (or a video's frames; latents with
    ``output_type="latent"``), its noise drawn from a generator seeded with ``seed``."""
    out = pipe(
        **inputs,
        num_inference_steps=steps,
        output_type=output_type,
        generator=torch.Generator().manual_seed(seed),
    )
    return out.frames if hasattr(out, "frames") else out.images


@dataclass
class PipelineRuns:
    """A pipeline's output without blockdance and under BlockDance N=2.

    Args:
        ref: The unhooked pipeline's output.
        fast: The output under BlockDance N=2.
        stats: The statistics of that BlockDance generation.
        computed: Real executions of each block (by slot index) during it.
    """

    ref: np.ndarray
    fast: np.ndarray
    stats: blockdance.GenerationStats
    computed: Counter[int]


def none_then_blockdance(
    pipe: Any,
    run: Callable[[Any], np.ndarray],
    architecture: str,
    registry: blockdance.Registry | None = None,
    then: Callable[[blockdance.Handle], None] | None = None,
) -> PipelineRuns:
    """Runs ``run(pipe)`` unhooked, under ``none``, then under BlockDance N=2.

    Asserts that ``attach`` matches ``pipe.transformer`` to ``architecture``, that ``none``
    leaves the output bit-identical, that BlockDance changes it (and keeps it finite), and
    that removal leaves neither a ``forward`` on the transformer nor a ``set_timesteps`` on
    the scheduler. ``then(handle)`` runs while BlockDance is still attached, after its
    generation (for a second generation).
    """
    registry = registry or blockdance.default_registry()
    ref = run(pipe)
    with blockdance.attach(pipe, "none", registry=registry) as handle:
        assert handle.architecture.name == architecture
        assert np.array_equal(run(pipe), ref), "the output changed under 'none'"
    counts = count_block_calls(registry.architecture(architecture).blocks(pipe.transformer))
    with blockdance.attach(pipe, "blockdance", N=2, registry=registry) as handle:
        fast = run(pipe)
        stats, computed = handle.stats, counts.copy()
        if then is not None:
            then(handle)
    assert np.isfinite(fast).all() and not np.array_equal(fast, ref)
    assert "forward" not in vars(pipe.transformer)
    assert "set_timesteps" not in vars(pipe.scheduler)
    return PipelineRuns(ref, fast, stats, computed)
