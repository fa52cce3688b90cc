"""The policy tutorial's adaptive example (docs/examples/teacache_policy.py) on the reference
DiT, against the same sampler written out by hand without blockdance."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

import blockdance
from blockdance.testing import count_block_calls, make_registry
from repo_files import load_example
from toymodel import timesteps

STEPS = 12


def load_teacache() -> ModuleType:
    return load_example("teacache_policy")


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(2, 4, 8, 8, generator=g), torch.tensor([1, 7])  # (N, C, H, W), (N,)


def step(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return x - 0.08 * out[:, :4]


def sample_with_policy(model: nn.Module, threshold: float) -> tuple[torch.Tensor, Any]:
    from blockdance_dit import plugin as dit

    tea = load_teacache()
    registry = make_registry(dit, tea.TeaCachePlugin())
    x, y = inputs()
    with blockdance.attach(model, "teacache-dit", threshold=threshold, registry=registry) as h:
        with h.generation(num_steps=STEPS), torch.no_grad():
            for t in timesteps(STEPS):
                x = step(x, model(x, torch.full((2,), t), y))
        stats = h.stats
    return x, stats


def sample_by_hand(model: nn.Module, threshold: float) -> tuple[torch.Tensor, list[int]]:
    """The reference DiT's forward and TeaCache's rule, written out: no blockdance."""
    from blockdance_dit.model import modulate

    x, y = inputs()
    previous, accumulated, residual, reused = None, 0.0, None, []
    with torch.no_grad():
        for i, t in enumerate(timesteps(STEPS)):
            h = model.x_embedder(x) + model.pos_embed  # (N, T, D)
            c = model.t_embedder(torch.full((2,), t)) + model.y_embedder(y, False)  # (N, D)
            first = model.blocks[0]
            shift, scale = first.adaLN_modulation(c).chunk(6, dim=1)[:2]
            m = modulate(first.norm1(h), shift, scale)
            reuse = False
            if previous is not None and i >= 1:
                accumulated += float((m - previous).abs().mean() / previous.abs().mean())
                reuse = accumulated < threshold
            if not reuse:
                accumulated = 0.0
            previous = m
            if reuse:
                assert residual is not None
                h = h + residual
                reused.append(i)
            else:
                start = h
                for block in model.blocks:
                    h = block(h, c)
                residual = h - start
            out = model.unpatchify(model.final_layer(h, c))
            x = step(x, out)
    return x, reused


@pytest.fixture(scope="module")
def dit() -> nn.Module:
    from blockdance_dit.examples import tiny_reference_dit

    return tiny_reference_dit()


@pytest.mark.parametrize("threshold", [0.05, 0.3])
def test_teacache_example_matches_the_hand_written_sampler(dit: nn.Module, threshold: float):
    expected, reused = sample_by_hand(dit, threshold)
    assert reused, "the threshold should let some steps reuse on this model"
    got, stats = sample_with_policy(dit, threshold)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert stats is not None
    assert sorted({step for step, _ in stats.reused_pairs()}) == reused
    # the signal runs no block: on a reused step no block computed
    assert stats.reused_blocks == len(reused) * len(dit.blocks)
    assert stats.peak_policy_bytes == 2 * 16 * 32 * 4  # block 0's modulated input (N, T, D)


def test_teacache_example_skips_real_compute(dit: nn.Module):
    from blockdance_dit import plugin as dit_plugin

    tea = load_teacache()
    registry = make_registry(dit_plugin, tea.TeaCachePlugin())
    spec = registry.match(dit)
    counts = count_block_calls(spec.blocks(dit))
    x, y = inputs()
    with blockdance.attach(dit, "teacache-dit", threshold=0.3, registry=registry) as h:
        with h.generation(num_steps=STEPS), torch.no_grad():
            for t in timesteps(STEPS):
                x = step(x, dit(x, torch.full((2,), t), y))
        stats = h.stats
    assert stats is not None
    assert sum(counts.values()) == stats.computed_blocks < STEPS * len(dit.blocks)
