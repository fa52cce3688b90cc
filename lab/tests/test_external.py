"""diffusers' own caches as external bench baselines, on a tiny random SD3 pipeline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from pydantic import ValidationError

import blockdance
from blockdance.testing import make_registry
from blockdance_lab.bench import BenchSpec, result_rows, run_bench
from blockdance_lab.compare import compare_policies
from blockdance_lab.external import (
    FirstBlockCacheBaseline,
    PyramidAttentionBroadcastBaseline,
    is_external,
    parse_external,
)
from blockdance_lab.report import add_consistency_metrics, format_table
from blockdance_lab.workload import Workload
from blockdance_lab.zoo.sd3.tiny import TinySD3Config
from blockdance_lab.zoo.sd3.workloads import SD3Sampler, generate_images
from tiny_diffusers import TXT, flux_pipe

SMALL = TinySD3Config(num_layers=4, attention_head_dim=8, num_attention_heads=2, text_dim=16)


def tiny_sd3_pipe() -> SD3Sampler:
    torch.manual_seed(0)
    model = SMALL.build().eval()
    return SD3Sampler(model, FlowMatchEulerDiscreteScheduler(), guidance_scale=3.0)


def random_small(model: str, build: Callable[[], Any], generate: Any, **options: Any) -> Workload:
    """A workload ``{model}-random-small`` of a tiny random pipeline: 10 steps, no probe."""
    return Workload(
        name=f"{model}-random-small",
        description=f"tiny random {model}",
        build=build,
        generate=generate,
        num_steps=10,
        **options,
    )


WORKLOAD = random_small("sd3", tiny_sd3_pipe, generate_images, images=True)


def generate_flux(pipe, request) -> torch.Tensor:
    """One image per seed from the tiny Flux pipeline (fixed random prompt embeddings)."""
    n, g = len(request.seeds), torch.Generator().manual_seed(0)
    embeds = torch.randn(1, TXT, 12, generator=g).expand(n, -1, -1)
    pooled = torch.randn(1, 8, generator=g).expand(n, -1)
    out = pipe(
        prompt_embeds=embeds,
        pooled_prompt_embeds=pooled,
        num_inference_steps=request.num_steps,
        height=8,
        width=8,
        output_type="pt",
        generator=[torch.Generator().manual_seed(s) for s in request.seeds],
    )
    return out.images * 2 - 1  # (N, 3, 8, 8) in [-1, 1]


FLUX = random_small("flux", flux_pipe, generate_flux)


def _hooked(module: torch.nn.Module) -> list[str]:
    return [
        name for name, m in module.named_modules() if getattr(m, "_diffusers_hook", None) and
        m._diffusers_hook.hooks
    ]  # fmt: skip


def test_parse_and_validate_external_entries():
    assert is_external("diffusers:first-block-cache")
    assert is_external({"kind": "diffusers:pyramid-attention-broadcast", "spatial_skip": 3})
    assert not is_external({"kind": "first-block-cache"}) and not is_external("blockdance")
    fbc = parse_external({"kind": "diffusers:first-block-cache", "threshold": 0.1})
    assert fbc == FirstBlockCacheBaseline(threshold=0.1)
    assert parse_external("diffusers:pyramid-attention-broadcast") == (
        PyramidAttentionBroadcastBaseline()
    )
    with pytest.raises(ValidationError, match="threshold"):
        parse_external({"kind": "diffusers:first-block-cache", "threshold": -1})
    with pytest.raises(ValidationError, match="extra"):
        parse_external({"kind": "diffusers:first-block-cache", "N": 2})
    with pytest.raises(ValidationError, match="diffusers:first-block-cache"):
        parse_external({"kind": "diffusers:teacache"})  # the error lists the known kinds


def test_first_block_cache_skips_blocks_and_is_removed_afterwards():
    pipe = flux_pipe()
    policies = [
        ("baseline", "none"),
        ("fbc", {"kind": "diffusers:first-block-cache", "threshold": 1e6}),  # always reuse
        ("again", "none"),
    ]
    runs = compare_policies(FLUX, policies, seeds=[0, 1], warmup=False, target=pipe)
    base, fbc, again = runs
    assert fbc.external and not base.external
    # 2 double- and 2 single-stream blocks; after the first step only the first block runs
    assert base.stats.block_calls == 10 * 4
    assert fbc.stats.block_calls == 4 + 9 * 1
    assert not torch.equal(fbc.samples, base.samples)
    assert torch.equal(again.samples, base.samples)  # hooks gone: the model is as before
    assert _hooked(pipe.transformer) == []
    add_consistency_metrics(runs)
    assert fbc.metrics["ideal"] == pytest.approx(1 - 13 / 40)
    assert "ideal" not in runs[2].metrics or runs[2].metrics["ideal"] == 0


def test_first_block_cache_on_sd3_fails_with_the_model_named():
    """diffusers' First Block Cache cannot handle SD3's last, context-pre-only block."""
    pipe = tiny_sd3_pipe()
    with pytest.raises(RuntimeError, match=r"'diffusers:first-block-cache' failed on SD3"):
        compare_policies(
            WORKLOAD,
            [("b", "none"), ("fbc", "diffusers:first-block-cache")],
            seeds=[0],
            warmup=False,
            target=pipe,
        )
    assert _hooked(pipe.transformer) == []


def test_pyramid_attention_broadcast_runs_on_the_timestep_blockdance_tracks():
    pipe = tiny_sd3_pipe()
    seen: list[float] = []
    timestep_range = (0, 2000)
    policies = [
        ("baseline", "none"),
        ("pab", {"kind": "diffusers:pyramid-attention-broadcast", "spatial_skip": 2,
                 "timestep_range": timestep_range}),
    ]  # fmt: skip
    attn = pipe.transformer.transformer_blocks[0].attn
    original = attn.processor.__class__.__call__

    def counting(self, *args, **kwargs):
        seen.append(1.0)
        return original(self, *args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(attn.processor.__class__, "__call__", counting)
    try:
        runs = compare_policies(WORKLOAD, policies, seeds=[0], warmup=False, target=pipe)
    finally:
        mp.undo()
    base, pab = runs
    per_block = [len(seen)]
    # every processor of this class counts: 4 blocks x 10 steps for the baseline, and PAB
    # computes the attention on every other call
    assert per_block[0] == 4 * 10 + 4 * 5
    assert not torch.equal(pab.samples, base.samples)
    assert pab.stats.block_calls == base.stats.block_calls  # blocks run; attention is reused
    assert _hooked(pipe.transformer) == []


def test_bench_runs_external_caches_beside_policies():
    spec = BenchSpec(
        workload="flux-random-small",
        seeds=2,
        steps=6,
        policies=[{"kind": "blockdance", "N": 2}, {"kind": "diffusers:first-block-cache"}],
    )

    class FluxWorkload:
        @blockdance.hookimpl
        def blockdance_register_workloads(self, register):
            register(FLUX)

    registry = make_registry(("flux-workload", FluxWorkload()), autoload=True)
    result = run_bench(spec, registry=registry, progress=False)
    assert result is not None
    runs = result.runs
    assert [r.label for r in runs] == [
        "baseline",
        "blockdance N=2",
        "diffusers:first-block-cache",
    ]
    assert runs[2].external and 0 < runs[2].metrics["ssim"] <= 1
    rows = result_rows(runs)
    assert rows[2]["cache_bytes"] is None and rows[1]["cache_bytes"] > 0  # not blockdance's
    table = format_table(runs).splitlines()[-1]
    assert table.startswith("diffusers:first-block-cache") and table.rstrip().endswith("-")


def test_bench_rejects_bad_external_config_before_generating():
    spec = BenchSpec(policies=[{"kind": "diffusers:first-block-cache", "threshold": 0}])
    with pytest.raises(ValidationError, match="threshold"):
        run_bench(spec, progress=False)


def test_external_cache_on_a_model_diffusers_does_not_know():
    from blockdance_lab.zoo.dit.workloads import random_dit_s2

    workload = Workload(
        name="dit",
        description="",
        build=random_dit_s2,
        generate=lambda pipe, req: pipe(req),
    )
    with pytest.raises(TypeError, match="diffusers cannot apply 'diffusers:first-block-cache'"):
        compare_policies(
            workload,
            [("b", "none"), ("x", "diffusers:first-block-cache")],
            seeds=[0],
            num_steps=3,
            warmup=False,
        )
