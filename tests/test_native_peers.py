"""magcache and dbcache: the peers' mechanisms as native policies, checked against sampling
loops written out by hand on the toy model (no blockdance in the reference)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

import blockdance
from blockdance.policies.magcache import (
    MagnitudeRecorder,
    load_ratios,
    magcache_table,
    ratios_from_norms,
    resample_ratios,
)
from blockdance.testing import make_registry
from forecast_reference import lagrange
from toymodel import ToyDenoiser, ToyPlugin, count_computes, run, run_by_hand, timesteps

T, DEPTH = 20, 8
STATE = 2 * 4 * 16 * 4  # bytes of one (2, 4, 16) float32 state


def _x(seed: int) -> torch.Tensor:
    return torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(seed))


def _attached(model: ToyDenoiser, policy: dict) -> tuple[list[torch.Tensor], blockdance.Handle]:
    with blockdance.attach(model, policy, registry=make_registry(ToyPlugin())) as h:
        with h.generation(num_steps=T):
            got = run(model, _x(1), T)
        return got, h


# -- magcache ---------------------------------------------------------------------------


def test_magcache_table_worked_out_by_hand() -> None:
    """10 steps, retention 0.2 (steps 0, 1 compute), K=2, threshold 0.05, one ratio of 0.9:
    steps 2, 3 reuse (error 0), 4 is the third in a row and computes; at 5 the error is
    |1 - 0.9| = 0.1 and it computes; 6, 7 reuse, 8 computes, 9 reuses."""
    ratios = [1.0] * 10
    ratios[5] = 0.9
    table = magcache_table(ratios, 10, threshold=0.05, max_skip_steps=2, retention_ratio=0.2)
    assert [s for s, skip in enumerate(table) if skip] == [2, 3, 6, 7, 9]


def test_magcache_accumulates_the_error_of_the_product() -> None:
    """Ratio 0.98 every step from step 1: the products since the last compute are 0.98,
    0.9604, so the error after two reuses is 0.02 + 0.0396 = 0.0596."""
    ratios = [1.0] + [0.98] * 9
    skips = magcache_table(ratios, 10, threshold=0.05, max_skip_steps=5, retention_ratio=0.0)
    # step 0 computes (nothing cached); 1 reuses (0.02); 2 would be 0.0596 > 0.05: computes
    assert [s for s, skip in enumerate(skips) if skip] == [1, 3, 5, 7, 9]
    skips = magcache_table(ratios, 10, threshold=0.06, max_skip_steps=5, retention_ratio=0.0)
    # 0.02, 0.0596, then + |1 - 0.98**3| = 0.0588 -> 0.118: computes
    assert [s for s, skip in enumerate(skips) if skip] == [1, 2, 4, 5, 7, 8]


def test_ratios_are_resampled_as_diffusers_does() -> None:
    mag_cache = pytest.importorskip("diffusers.hooks.mag_cache")
    source = [1.0 + 0.01 * i for i in range(28)]
    for steps in (1, 10, 20, 28, 50):
        expected = mag_cache.nearest_interp(torch.tensor(source), steps).tolist()
        assert resample_ratios(source, steps) == pytest.approx(expected)


def test_magcache_matches_a_loop_written_by_hand(tmp_path: Path) -> None:
    """Reused steps add the stack's change at the last computed step to the current input;
    the ratios come from a file, as diffusers' MagCacheConfig(mag_ratios=...) takes them."""
    ratios = [1.0, 1.05, 1.0, 0.99, 0.97, 1.0, 1.0, 0.995, 0.98, 1.01] * 2
    path = tmp_path / "ratios.json"
    path.write_text(json.dumps(ratios))
    policy = {"kind": "magcache", "mag_ratios": str(path), "threshold": 0.03}
    reuse = {s for s, skip in enumerate(magcache_table(ratios, T, 0.03, 3, 0.2)) if skip}
    assert 3 <= len(reuse) <= T - 6
    model = ToyDenoiser(depth=DEPTH, dim=16)
    kept: list[torch.Tensor] = []

    def front(step: int, h: torch.Tensor, compute) -> torch.Tensor:
        if step in reuse:
            return h + kept[-1]
        out = compute(h)
        kept.append(out - h)
        return out

    expected = run_by_hand(model, _x(1), T, DEPTH - 1, front)
    counts = count_computes(model)
    got, h = _attached(model, policy)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert counts[0] == counts[DEPTH - 1] == T - len(reuse)
    stats = h.stats
    assert stats is not None and {s for s, _ in stats.reused_pairs()} == reuse
    assert stats.peak_policy_bytes == 0  # the table holds no tensor


def test_magcache_resamples_a_shorter_list() -> None:
    model = ToyDenoiser(depth=DEPTH, dim=16)
    counts = count_computes(model)
    ratios = [1.0, 1.0, 0.99, 0.98, 0.97]  # 5 ratios for 20 steps
    _attached(model, {"kind": "magcache", "mag_ratios": ratios, "threshold": 0.05})
    table = magcache_table(resample_ratios(ratios, T), T, 0.05, 3, 0.2)
    assert counts[0] == T - sum(table) < T


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({}, "mag_ratios"),
        ({"mag_ratios": []}, "non-empty"),
        ({"mag_ratios": [1.0, -0.5]}, "entry 1"),
        ({"mag_ratios": [1.0, "x"]}, "mag_ratios"),
        ({"mag_ratios": [1.0], "threshold": -0.1}, "threshold"),
        ({"mag_ratios": [1.0], "retention_ratio": 1.5}, "retention_ratio"),
        ({"mag_ratios": "/nonexistent/ratios.json"}, "does not exist"),
    ],
)
def test_magcache_config_is_validated(options: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        blockdance.default_registry().make_policy({"kind": "magcache", **options})


def test_a_ratios_file_that_is_not_a_list_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"ratios": [1.0]}')
    with pytest.raises(ValidationError, match=r"bad\.json.*list"):
        blockdance.default_registry().make_policy({"kind": "magcache", "mag_ratios": str(bad)})
    bad.write_text('{"mag_ratios": [1.0, 0.5], "workload": "w"}')  # magcache-calibrate's file
    assert load_ratios(bad) == [1.0, 0.5]
    bad.write_text("[1.0,")
    with pytest.raises(ValueError, match="cannot be read as JSON"):
        load_ratios(bad)


def test_ratios_from_norms() -> None:
    assert ratios_from_norms([2.0, 1.0, 0.5]) == pytest.approx([1.0, 0.5, 0.5])
    per_token = [torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0])]
    assert ratios_from_norms(per_token) == pytest.approx([1.0, (2.0 + 0.5) / 2])
    assert ratios_from_norms([]) == []


def test_magnitude_recorder_measures_the_stack_residual(tmp_path: Path) -> None:
    """The recorder's ratios are those of the stack's change ``output(last) - input(0)``
    computed by hand: per-token norms, mean of their ratios to the previous step's."""
    model = ToyDenoiser(depth=DEPTH, dim=16)
    norms: list[torch.Tensor] = []

    def front(step: int, h: torch.Tensor, compute) -> torch.Tensor:
        out = compute(h)
        norms.append((out - h).norm(dim=-1))
        return out

    run_by_hand(model, _x(1), T, DEPTH - 1, front)
    expected = [1.0] + [float((norms[i] / (norms[i - 1] + 1e-8)).mean()) for i in range(1, T)]
    recorder = MagnitudeRecorder()
    counts = count_computes(model)
    with blockdance.attach(model, recorder, registry=make_registry(ToyPlugin())) as h:
        for _ in range(2):  # two generations of the same seed: the same ratios, averaged
            with h.generation(num_steps=T):
                run(model, _x(1), T)
    assert counts[0] == 2 * T
    assert recorder.ratios() == pytest.approx(expected, rel=1e-5)
    written = recorder.write(tmp_path / "r.json")
    assert load_ratios(tmp_path / "r.json") == pytest.approx(written)


def test_magnitude_recorder_refuses_to_average_nothing() -> None:
    with pytest.raises(ValueError, match="no generation"):
        MagnitudeRecorder().ratios()


# -- dbcache ----------------------------------------------------------------------------


def dbcache_by_hand(
    model: ToyDenoiser,
    x: torch.Tensor,
    *,
    fn: int,
    bn: int,
    threshold: float,
    warmup: int,
    max_in_a_row: int | None = None,
    max_cached: int | None = None,
    order: int = 0,
) -> tuple[list[torch.Tensor], list[int]]:
    """DBCache written out: the outputs of every step and the steps that reused."""
    blocks = list(model.blocks)
    end = len(blocks) - bn  # the middle run is blocks[fn:end]
    reference: torch.Tensor | None = None
    changes: list[tuple[int, torch.Tensor]] = []
    outs, reused = [], []
    in_a_row = 0
    with torch.no_grad():
        for step, t in enumerate(timesteps(T)):
            tf = torch.full((x.shape[0], 1), float(t)) / 1000
            c = torch.sigmoid(model.t_proj(tf))[:, None, :]
            h = x
            for block in blocks[:fn]:
                h = block(h, c)
            residual = h - x
            reuse = (
                reference is not None
                and step >= warmup
                and (max_in_a_row is None or in_a_row < max_in_a_row)
                and (max_cached is None or len(reused) < max_cached)
                and float((residual - reference).abs().mean() / reference.abs().mean()) < threshold
            )
            if reuse:
                recent = changes[-(order + 1) :]
                h = h + (lagrange(recent, float(step)) if len(recent) >= 2 else changes[-1][1])
                reused.append(step)
                in_a_row += 1
            else:
                reference, in_a_row = residual, 0
                before = h
                for block in blocks[fn:end]:
                    h = block(h, c)
                changes.append((step, h - before))
            for block in blocks[end:]:
                h = block(h, c)
            out = model.head(h)
            outs.append(out)
            x = x - 0.05 * out
    return outs, reused


@pytest.mark.parametrize(
    ("fn", "bn", "threshold", "warmup", "extra"),
    [
        (1, 0, 0.08, 2, {}),  # first-block-cache comparing residuals
        (2, 2, 0.1, 3, {}),
        (1, 1, 0.2, 2, {"max_continuous_cached_steps": 2}),
        (1, 0, 0.3, 2, {"max_cached_steps": 4}),
    ],
)
def test_dbcache_matches_a_loop_written_by_hand(
    fn: int, bn: int, threshold: float, warmup: int, extra: dict
) -> None:
    model = ToyDenoiser(depth=DEPTH, dim=16)
    expected, reused = dbcache_by_hand(
        model,
        _x(1),
        fn=fn,
        bn=bn,
        threshold=threshold,
        warmup=warmup,
        max_in_a_row=extra.get("max_continuous_cached_steps"),
        max_cached=extra.get("max_cached_steps"),
    )
    assert 2 <= len(reused) <= T - warmup - 2  # the case exercises both outcomes
    counts = count_computes(model)
    policy = {
        "kind": "dbcache",
        "Fn": fn,
        "Bn": bn,
        "residual_diff_threshold": threshold,
        "max_warmup_steps": warmup,
        **extra,
    }
    got, h = _attached(model, policy)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert counts[fn - 1] == T  # the first Fn blocks always compute
    if bn:
        assert counts[DEPTH - bn] == T  # and the last Bn
    assert counts[fn] == counts[DEPTH - 1 - bn] == T - len(reused)
    stats = h.stats
    assert stats is not None
    assert sorted({s for s, _ in stats.reused_pairs()}) == reused
    assert {b for _, b in stats.reused_pairs()} == set(range(fn, DEPTH - bn))
    assert stats.peak_policy_bytes == STATE  # the Fn residual of the last full step


@pytest.mark.parametrize("order", [1, 2])
def test_dbcache_taylorseer_forecasts_the_middle_change(order: int) -> None:
    model = ToyDenoiser(depth=DEPTH, dim=16)
    options = {"fn": 1, "bn": 1, "threshold": 0.2, "warmup": 2}
    expected, reused = dbcache_by_hand(model, _x(1), order=order, **options)  # type: ignore[arg-type]
    plain, _ = dbcache_by_hand(model, _x(1), **options)  # type: ignore[arg-type]
    assert len(reused) >= 3
    assert not torch.allclose(expected[-1], plain[-1])  # the forecast changes the result
    policy = {
        "kind": "dbcache",
        "Fn": 1,
        "Bn": 1,
        "residual_diff_threshold": 0.2,
        "max_warmup_steps": 2,
        "taylorseer": True,
        "taylorseer_order": order,
    }
    got, h = _attached(model, policy)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    stats = h.stats
    assert stats is not None
    # the Fn residual, and the middle run's changes at the last order + 1 full steps
    assert stats.peak_policy_bytes == STATE + (order + 1) * STATE


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"Fn": 0}, "Fn"),
        ({"Bn": -1}, "Bn"),
        ({"residual_diff_threshold": -0.1}, "residual_diff_threshold"),
        ({"taylorseer_order": 3}, "taylorseer_order"),
        ({"max_continuous_cached_steps": 0}, "max_continuous_cached_steps"),
        ({"Fm": 2}, "Fm"),
    ],
)
def test_dbcache_config_is_validated(options: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        blockdance.default_registry().make_policy({"kind": "dbcache", **options})


def test_dbcache_refuses_a_split_with_no_middle_block() -> None:
    model = ToyDenoiser(depth=DEPTH, dim=16)
    with pytest.raises(ValueError, match=r"Fn \+ Bn must be at most 7"):
        _attached(model, {"kind": "dbcache", "Fn": 4, "Bn": 4})


# -- magcache against diffusers' own MagCache --------------------------------------------


def _diffusers_sd3() -> tuple:
    pytest.importorskip("diffusers.hooks.mag_cache")
    import tiny_diffusers

    return tiny_diffusers.sd3_pipe(), tiny_diffusers.run_sd3, tiny_diffusers.STEPS


def test_recorder_and_magcache_agree_with_diffusers_magcache() -> None:
    """On a tiny diffusers SD3 pipeline: the recorder's ratios are those diffusers'
    ``MagCacheConfig(calibrate=True)`` prints, and ``magcache`` on them gives the latents
    diffusers' MagCache gives with the same ratios (diffusers is the reference here)."""
    import contextlib
    import io

    from diffusers.hooks import HookRegistry, MagCacheConfig, apply_mag_cache, mag_cache
    from diffusers.models.cache_utils import CacheMixin

    pipe, run_sd3, steps = _diffusers_sd3()
    recorder = MagnitudeRecorder()
    with blockdance.attach(pipe, recorder):
        run_sd3(pipe, steps)
    ratios = recorder.ratios()
    policy = {"kind": "magcache", "mag_ratios": ratios, "threshold": 1.0, "max_skip_steps": 2}
    with blockdance.attach(pipe, policy) as h:
        ours = run_sd3(pipe, steps, output_type="latent")
        stats = h.stats
    assert stats is not None
    assert {s for s, _ in stats.reused_pairs()} == {2, 3, 5, 6, 8, 9}  # retention: 0, 1

    transformer = pipe.transformer
    printed = io.StringIO()
    apply_mag_cache(transformer, MagCacheConfig(calibrate=True, num_inference_steps=steps))
    with contextlib.redirect_stdout(printed), CacheMixin.cache_context(transformer, "a"):
        run_sd3(pipe, steps)
    lines = printed.getvalue().splitlines()
    line = next(s for s in lines if s.startswith("[") and not s.startswith("[MagCache]"))
    assert ratios == pytest.approx(json.loads(line), rel=1e-5)
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    for name in (mag_cache._MAG_CACHE_LEADER_BLOCK_HOOK, mag_cache._MAG_CACHE_BLOCK_HOOK):
        registry.remove_hook(name, recurse=True)
    config = MagCacheConfig(
        mag_ratios=ratios, threshold=1.0, max_skip_steps=2, num_inference_steps=steps
    )
    apply_mag_cache(transformer, config)
    with CacheMixin.cache_context(transformer, "b"):
        theirs = run_sd3(pipe, steps, output_type="latent")
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("order", [0, 1])
def test_dbcache_matches_cache_dit(order: int) -> None:
    """On a tiny diffusers SD3 pipeline, ``dbcache`` (F2B1) reuses the steps cache-dit's
    DBCache reuses and gives its latents, with and without TaylorSeer order 1 (cache-dit is
    the reference). The warm-up is 4 steps: cache-dit's TaylorSeer takes no derivative from
    full steps before step 3, so earlier reuse steps would differ."""
    cache_dit = pytest.importorskip("cache_dit")
    pipe, run_sd3, _ = _diffusers_sd3()
    steps, threshold = 20, 0.2
    policy = {
        "kind": "dbcache",
        "Fn": 2,
        "Bn": 1,
        "residual_diff_threshold": threshold,
        "max_warmup_steps": 4,
        "taylorseer": bool(order),
        "taylorseer_order": max(order, 1),
    }
    with blockdance.attach(pipe, policy) as h:
        ours = run_sd3(pipe, steps, output_type="latent")
        stats = h.stats
    assert stats is not None
    reused = sorted({s for s, _ in stats.reused_pairs()})
    assert 4 <= len(reused) <= 14
    config = cache_dit.DBCacheConfig(
        Fn_compute_blocks=2,
        Bn_compute_blocks=1,
        residual_diff_threshold=threshold,
        max_warmup_steps=4,
        num_inference_steps=steps,
    )
    seer = cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=order) if order else None
    cache_dit.enable_cache(pipe, cache_config=config, calibrator_config=seer)
    try:
        theirs = run_sd3(pipe, steps, output_type="latent")
        (summary, *_) = cache_dit.summary(pipe)
    finally:
        cache_dit.disable_cache(pipe)
    assert list(summary.cached_steps) == reused
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
