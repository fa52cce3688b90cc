"""Other libraries' caches (diffusers' hooks, cache-dit) as external bench baselines, on a
tiny random SD3 pipeline."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from pydantic import ValidationError

import blockdance
from blockdance.testing import make_registry
from blockdance_lab.bench import (
    BenchSpec,
    format_bench_table,
    load_bench_spec,
    result_rows,
    run_bench,
)
from blockdance_lab.compare import compare_policies
from blockdance_lab.external import (
    FirstBlockCacheBaseline,
    PyramidAttentionBroadcastBaseline,
    is_external,
    parse_external,
)
from blockdance_lab.report import add_consistency_metrics, format_table
from blockdance_lab.workload import GenerateRequest, Workload
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


# --- diffusers 0.42's other hooks and cache-dit -----------------------------------------------


class WorkCounter:
    """Forward hooks on the tiny SD3's blocks and attentions, apart from blockdance's own
    counting: ``norm1`` runs first in a block that computes, ``to_q`` in an attention that
    computes (a hook that skips them never calls the block's or the attention's forward).
    Counts calls and the batch rows they ran on."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.blocks = self.block_rows = self.attentions = self.attention_rows = 0
        self.handles = []
        for block in transformer.transformer_blocks:
            self.handles.append(block.norm1.register_forward_pre_hook(self._block))
            self.handles.append(block.attn.to_q.register_forward_pre_hook(self._attention))

    def _block(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        self.blocks += 1
        self.block_rows += args[0].shape[0]

    def _attention(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        self.attentions += 1
        self.attention_rows += args[0].shape[0]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def run_counted(pipe: SD3Sampler, policies: list[tuple[str, Any]], seeds=(0, 1)):
    """Each row of ``compare_policies`` with its own :class:`WorkCounter`; then a last
    unhooked run, which must equal the first row (the baseline)."""
    out = []
    for label, policy in [*policies, ("again", "none")]:
        counter = WorkCounter(pipe.transformer)
        try:
            (run,) = compare_policies(
                WORKLOAD, [(label, policy)], seeds=list(seeds), warmup=False, target=pipe
            )
        finally:
            counter.remove()
        out.append((run, counter))
    assert torch.equal(out[-1][0].samples, out[0][0].samples)  # hooks gone: model as before
    assert _hooked(pipe.transformer) == []
    return out[:-1]


#: blockdance warns when a generation that raised made fewer calls than steps; the tests
#: check the peer's own error, which the warning would replace under ``-W error``


@pytest.fixture
def ratios_file(tmp_path):
    """MagCache ratios of the tiny random SD3 (10 steps), from calibration seeds."""
    from blockdance_lab.magcache import calibrate_magcache, write_ratios

    ratios = calibrate_magcache(WORKLOAD, [10000, 10001], target=tiny_sd3_pipe())
    return write_ratios(tmp_path / "ratios.json", ratios, WORKLOAD, [10000, 10001], 10)


def test_new_kinds_validate(ratios_file):
    from blockdance_lab.external import (
        FasterCacheBaseline,
        MagCacheBaseline,
        TaylorSeerBaseline,
    )

    mag = parse_external({"kind": "diffusers:magcache", "ratios": str(ratios_file)})
    assert mag == MagCacheBaseline(ratios=str(ratios_file), threshold=0.06)
    assert parse_external("diffusers:fastercache") == FasterCacheBaseline()
    assert parse_external("diffusers:taylorseer") == TaylorSeerBaseline(cache_interval=5)
    assert is_external("cache-dit:dbcache") and is_external({"kind": "diffusers:magcache"})
    with pytest.raises(ValidationError, match="MagCache ratios file not found"):
        parse_external({"kind": "diffusers:magcache", "ratios": "missing.json"})
    with pytest.raises(ValidationError, match="ratios"):
        parse_external("diffusers:magcache")  # the ratios are required
    with pytest.raises(ValidationError, match="threshold"):
        parse_external({"kind": "diffusers:magcache", "ratios": str(ratios_file), "threshold": 0})
    with pytest.raises(ValidationError, match="uncond_skip"):
        parse_external({"kind": "diffusers:fastercache", "uncond_skip": 0})
    with pytest.raises(ValidationError, match="extra"):
        parse_external({"kind": "diffusers:taylorseer", "interval": 2})


def test_magcache_calibration_matches_residual_norms_measured_by_hooks():
    """The ratios are mean(||r_t|| / ||r_t-1||) over samples and tokens, r = the last block's
    image output minus the first block's input, measured here with plain forward hooks."""
    from blockdance_lab.magcache import calibrate_magcache

    pipe = tiny_sd3_pipe()
    ratios = calibrate_magcache(WORKLOAD, [10000, 10001], target=pipe)
    blocks = pipe.transformer.transformer_blocks
    inputs, residuals = [], []
    first = blocks[0].register_forward_pre_hook(
        lambda m, a, kw: inputs.append(kw["hidden_states"]), with_kwargs=True
    )
    last = blocks[-1].register_forward_hook(lambda m, a, out: residuals.append(out[1] - inputs[-1]))
    try:
        with torch.inference_mode():
            WORKLOAD.generate(pipe, GenerateRequest((10000, 10001), 10))
    finally:
        first.remove()
        last.remove()
    norms = [r.float().norm(dim=-1) for r in residuals]
    expected = [1.0] + [float((b / (a + 1e-8)).mean()) for a, b in pairwise(norms)]
    assert ratios == pytest.approx(expected, rel=1e-5)
    assert _hooked(pipe.transformer) == []


def test_magcache_skips_whole_steps_counted_as_block_calls(ratios_file):
    pipe = tiny_sd3_pipe()
    mag = {"kind": "diffusers:magcache", "ratios": str(ratios_file), "threshold": 10.0,
           "max_skip_steps": 3, "retention_ratio": 0.2}  # fmt: skip
    (base, base_count), (run, count) = run_counted(pipe, [("b", "none"), ("mag", mag)])
    # MagCache's rule: steps 0-1 retained; then at most 3 skipped in a row: computes 0, 1, 5, 9
    assert count.blocks == 4 * 4 == run.stats.block_calls
    assert base_count.blocks == base.stats.block_calls == 40
    assert not torch.equal(run.samples, base.samples)


def test_magcache_ratios_for_another_step_count_fail_the_row(ratios_file):
    pipe = tiny_sd3_pipe()
    mag = {"kind": "diffusers:magcache", "ratios": str(ratios_file)}
    runs = compare_policies(
        WORKLOAD, [("b", "none"), ("mag", mag)], seeds=[0], num_steps=6, warmup=False,
        target=pipe, keep_going=True,
    )  # fmt: skip
    assert runs[1].error is not None
    assert "calibrated for 10 model calls per generation, and this generation made 6" in (
        runs[1].error
    )
    assert _hooked(pipe.transformer) == []


@pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning")  # in diffusers' FFT split
def test_fastercache_skips_the_unconditional_half_and_attention():
    pipe = tiny_sd3_pipe()
    always = (-1, 2000)  # every timestep of the flow-matching schedule (1000..100)
    fc = {"kind": "diffusers:fastercache", "uncond_skip": 2, "spatial_skip": 2,
          "uncond_timestep_range": always, "spatial_timestep_range": always}  # fmt: skip
    (base, base_count), (run, count) = run_counted(pipe, [("b", "none"), ("fc", fc)])
    # every block runs, on the whole [uncond, cond] batch (4 rows) at even steps and on the
    # conditional half (2 rows) at odd steps; the attentions compute on the even steps only
    assert run.stats.block_calls == count.blocks == base.stats.block_calls == 40
    assert base_count.block_rows == 40 * 4
    assert count.block_rows == 5 * 4 * 4 + 5 * 4 * 2
    assert count.attentions == 5 * 4
    assert not torch.equal(run.samples, base.samples)


def test_taylorseer_forecasts_attention_outputs():
    pipe = tiny_sd3_pipe()
    ts = {"kind": "diffusers:taylorseer", "cache_interval": 2, "disable_cache_before_step": 2}
    (base, _), (run, count) = run_counted(pipe, [("b", "none"), ("ts", ts)])
    # computed at steps 0, 1 (warm-up), then every 2nd step from step 3: 0, 1, 3, 5, 7, 9
    assert run.stats.block_calls == count.blocks == 40
    assert count.attentions == 6 * 4
    assert not torch.equal(run.samples, base.samples)


def test_taylorseer_lite_fails_on_sd3_as_a_failed_row():
    pipe = tiny_sd3_pipe()
    lite = {"kind": "diffusers:taylorseer", "lite": True, "cache_interval": 2,
            "disable_cache_before_step": 2}  # fmt: skip
    runs = compare_policies(
        WORKLOAD, [("b", "none"), ("lite", lite), ("again", "none")], seeds=[0], warmup=False,
        target=pipe, keep_going=True,
    )  # fmt: skip
    assert runs[1].error is not None
    assert runs[1].error.startswith(
        "RuntimeError: 'diffusers:taylorseer' failed on SD3Transformer2DModel: AttributeError: "
    )
    assert "\n" not in runs[1].error
    assert torch.equal(runs[2].samples, runs[0].samples)
    assert _hooked(pipe.transformer) == []


def _sd3_registry():
    class SD3Workload:
        @blockdance.hookimpl
        def blockdance_register_workloads(self, register):
            register(WORKLOAD)

    return make_registry(("sd3-workload", SD3Workload()), autoload=True)


def test_bench_records_a_failing_peer_and_goes_on(ratios_file, tmp_path):
    bench = tmp_path / "sub" / "bench.yaml"
    bench.parent.mkdir()
    (tmp_path / "sub" / "ratios.json").write_text(ratios_file.read_text())
    bench.write_text(
        "workload: sd3-random-small\nseeds: 2\npolicies:\n"
        "  - {kind: 'diffusers:first-block-cache', label: fbc}\n"
        "  - {kind: 'diffusers:magcache', ratios: ratios.json, threshold: 10.0, label: mag}\n"
    )
    spec = load_bench_spec(bench)
    assert spec.policies[1]["ratios"] == str(tmp_path / "sub" / "ratios.json")
    result = run_bench(spec, registry=_sd3_registry(), progress=False)
    assert result is not None
    rows = result_rows(result.runs, result.reference)
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert rows[1]["error"] == (
        "RuntimeError: 'diffusers:first-block-cache' failed on SD3Transformer2DModel: "
        "TypeError: unsupported operand type(s) for -: 'NoneType' and 'Tensor'"
    )
    assert rows[2]["ideal"] == pytest.approx(1 - 16 / 40) and rows[2]["ssim"] > 0
    table = format_bench_table(rows, result.meta)
    assert "fbc" in table and "FAILED: RuntimeError: 'diffusers:first-block-cache'" in table


def test_magcache_calibrate_command_writes_the_ratios_file(tmp_path):
    import argparse

    from blockdance_lab.external import read_mag_ratios
    from blockdance_lab.magcache import cmd_magcache_calibrate

    out = tmp_path / "r.json"
    args = argparse.Namespace(
        workload="sd3-random-small", out=str(out), seeds=2, seed_offset=10000, steps=4,
        threads=None,
    )  # fmt: skip
    assert cmd_magcache_calibrate(args, registry=_sd3_registry()) == 0
    ratios, data = read_mag_ratios(out)
    assert len(ratios) == 4 and ratios[0] == 1.0
    assert data["seeds"] == [10000, 10001] and data["workload"] == "sd3-random-small"


def test_cache_dit_dbcache_skips_middle_blocks_and_is_removed():
    pytest.importorskip("cache_dit")
    pipe = tiny_sd3_pipe()
    # 4 warm-up steps: cache-dit's TaylorSeer has its first derivative after the 4th
    f1b0 = {"kind": "cache-dit:dbcache", "Fn": 1, "Bn": 0, "residual_diff_threshold": 10.0,
            "max_warmup_steps": 4}  # fmt: skip
    f1b1 = dict(f1b0, Bn=1)
    ts = dict(f1b0, taylorseer=True, encoder_taylorseer=False)
    (base, _), (r0, c0), (r1, c1), (rts, cts) = run_counted(
        pipe, [("b", "none"), ("f1b0", f1b0), ("f1b1", f1b1), ("ts", ts)]
    )
    # 4 warm-up steps run all 4 blocks; the 6 others the first (and last) block only
    assert r0.stats.block_calls == c0.blocks == 4 * 4 + 6 * 1
    assert r1.stats.block_calls == c1.blocks == 4 * 4 + 6 * 2
    assert rts.stats.block_calls == cts.blocks == 4 * 4 + 6 * 1
    assert not torch.equal(r0.samples, base.samples)
    assert not torch.equal(rts.samples, r0.samples)  # forecast, not reused
    assert "forward" not in vars(pipe.transformer)  # blockdance's and cache-dit's wrappers gone


def test_cache_dit_taylorseer_on_the_text_stream_fails_on_sd3_as_a_failed_row():
    pytest.importorskip("cache_dit")
    pipe = tiny_sd3_pipe()
    ts = {"kind": "cache-dit:dbcache", "residual_diff_threshold": 10.0, "max_warmup_steps": 3,
          "taylorseer": True}  # fmt: skip
    runs = compare_policies(
        WORKLOAD, [("b", "none"), ("ts", ts), ("again", "none")], seeds=[0], warmup=False,
        target=pipe, keep_going=True,
    )  # fmt: skip
    assert runs[1].error == (
        "RuntimeError: 'cache-dit:dbcache' failed on SD3Transformer2DModel: AssertionError: "
        "State 'transformer_blocks_Bn_residual' not found."
    )
    assert torch.equal(runs[2].samples, runs[0].samples)
    assert "forward" not in vars(pipe.transformer)


@pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning")
def test_count_work_counts_the_batch_rows_that_ran():
    from blockdance_lab.external import count_work

    pipe = tiny_sd3_pipe()
    always = (-1, 2000)
    fc = {"kind": "diffusers:fastercache", "uncond_timestep_range": always,
          "spatial_timestep_range": always}  # fmt: skip
    counter = WorkCounter(pipe.transformer)
    try:
        with count_work(pipe.transformer) as work:
            compare_policies(WORKLOAD, [("fc", fc)], seeds=[0, 1], warmup=False, target=pipe)
    finally:
        counter.remove()
    assert (work.blocks, work.attentions) == (4, 4)
    assert work.model_rows == 10 * 4  # every call sees the whole [uncond, cond] batch
    assert (work.block_rows, work.attention_rows) == (counter.block_rows, counter.attention_rows)
    assert work.blocks_skipped == pytest.approx(0.25)  # half the batch on 5 of 10 steps
    assert work.attention_skipped == pytest.approx(0.5)  # attention on the 5 full steps only


def test_diffusers_hooks_that_find_nothing_to_hook_fail_when_applied(ratios_file):
    """diffusers only warns when it finds no block or attention it knows; the bench must not
    run such a row as if it were cached. (TaylorSeer matches layers by name, ``blocks.N.attn``,
    so it does hook the reference DiT.)"""
    from blockdance_dit.model import DiT_models
    from blockdance_lab.external import apply_external_cache

    torch.manual_seed(0)
    model = DiT_models["DiT-S/2"](input_size=8, num_classes=4, learn_sigma=False)
    kinds = [
        "diffusers:pyramid-attention-broadcast",
        "diffusers:fastercache",
        {"kind": "diffusers:magcache", "ratios": str(ratios_file)},
    ]
    for kind in kinds:
        config = parse_external(kind)
        with pytest.raises(TypeError, match=f"diffusers cannot apply '{config.kind}' to DiT"):
            with apply_external_cache(config, model, lambda: 500.0):
                pass
        assert _hooked(model) == []


def test_cache_dit_kind_validates_and_says_how_to_install(monkeypatch):
    import importlib.util

    from blockdance_lab.external import CacheDiTDBCacheBaseline

    if importlib.util.find_spec("cache_dit") is not None:
        entry = {"kind": "cache-dit:dbcache", "Fn": 2, "taylorseer": True}
        assert parse_external(entry) == CacheDiTDBCacheBaseline(Fn=2, taylorseer=True)
        with pytest.raises(ValidationError, match="residual_diff_threshold"):
            parse_external({"kind": "cache-dit:dbcache", "residual_diff_threshold": 0})
    find = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "cache_dit" else find(name)
    )
    with pytest.raises(ValidationError, match=r"pip install 'blockdance-lab\[peers\]'"):
        parse_external("cache-dit:dbcache")


def test_the_peers_bench_file_is_valid_and_finds_its_ratios():
    pytest.importorskip("cache_dit")
    from pathlib import Path

    from blockdance_lab.policy_entries import check_policies

    bench = Path(__file__).parents[2] / "benchmarks" / "peers_tiny_sd3.yaml"
    spec = load_bench_spec(bench)
    check_policies(blockdance.default_registry(), spec.labelled()[1:])  # every row validates
    ratios = {p["ratios"] for p in spec.policies if isinstance(p, dict) and "ratios" in p}
    assert ratios == {str(bench.parent / "magcache_tiny_sd3.json")}
