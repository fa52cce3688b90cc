"""MagCache's magnitude ratios, calibrated on a workload: ``blockdance magcache-calibrate``.

diffusers' MagCache (the ``diffusers:magcache`` bench kind, :mod:`blockdance_lab.external`)
skips steps while the product of the magnitude ratios predicts a small accumulated error.
The ratios belong to the model and the sampler, so they are measured on the workload: its
model runs in full on a few calibration seeds, under diffusers' own calibration mode
(``MagCacheConfig(calibrate=True)``), which records, for each model call of a generation,

    ratio_t = mean over samples and tokens of ||r_t|| / ||r_{t-1}||   (ratio_0 = 1)

where ``r_t`` is the residual of the transformer's block stack at call ``t`` (the last
block's image stream minus the first block's input). The calibration seeds start at 10000 by
default, apart from the bench's seeds 0..n-1.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blockdance import Registry, default_registry
from blockdance_lab.workload import GenerateRequest, Workload, get_workload

__all__ = ["CALIBRATION_SEED_OFFSET", "add_commands", "calibrate_magcache", "write_ratios"]

#: First calibration seed: far from the bench's seeds 0..n-1.
CALIBRATION_SEED_OFFSET = 10000


def _transformer(target: Any) -> nn.Module:
    model = target if isinstance(target, nn.Module) else getattr(target, "transformer", None)
    if not isinstance(model, nn.Module):
        raise TypeError(f"{type(target).__name__} has no transformer for MagCache to calibrate")
    return model


def calibrate_magcache(
    workload: Workload,
    seeds: Sequence[int],
    num_steps: int | None = None,
    target: Any = None,
) -> list[float]:
    """Measure MagCache's ratios: one full generation of ``seeds`` (one batch) under
    diffusers' calibration mode.

    Args:
        workload: Whose model and sampler.
        seeds: Calibration seeds (keep them apart from the seeds the bench measures).
        num_steps: Denoising steps (default: the workload's).
        target: The workload's model or pipeline, if already built.

    Returns:
        One ratio per model call of the generation, the first 1.0.

    Raises:
        TypeError: diffusers cannot hook the workload's model (e.g. a non-diffusers DiT).
    """
    from diffusers.hooks import HookRegistry, MagCacheConfig, apply_mag_cache
    from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK, _MAG_CACHE_LEADER_BLOCK_HOOK
    from diffusers.models.cache_utils import CacheMixin

    steps = num_steps or workload.num_steps
    target = workload.build() if target is None else target
    model = _transformer(target)
    # one more call than the generation makes: diffusers resets (and prints) the ratios
    # after its last call, so the hook's own state still holds them afterwards
    config = MagCacheConfig(calibrate=True, num_inference_steps=steps + 1)
    apply_mag_cache(model, config)
    registry = HookRegistry.check_if_exists_or_initialize(model)
    registry.invalidate_child_registries_cache()
    registries: list[Any] = [getattr(m, "_diffusers_hook", None) for m in model.modules()]
    leaders = [
        r.get_hook(_MAG_CACHE_LEADER_BLOCK_HOOK)
        for r in registries
        if r is not None and r.get_hook(_MAG_CACHE_LEADER_BLOCK_HOOK) is not None
    ]
    try:
        if not leaders:
            raise TypeError(
                f"diffusers' MagCache found no transformer blocks in {type(model).__name__}; "
                "it needs a diffusers transformer (e.g. SD3Transformer2DModel)"
            )
        request = GenerateRequest(tuple(seeds), steps)
        with (
            CacheMixin.cache_context(model, "blockdance-calibrate"),  # type: ignore[arg-type]
            torch.inference_mode(),
        ):
            workload.generate(target, request)
            ratios = list(leaders[0].state_manager.get_state().calibration_ratios)
    finally:
        for name in (_MAG_CACHE_LEADER_BLOCK_HOOK, _MAG_CACHE_BLOCK_HOOK):
            registry.remove_hook(name, recurse=True)
        registry.invalidate_child_registries_cache()
    if len(ratios) != steps:
        raise RuntimeError(
            f"MagCache recorded {len(ratios)} ratios for {steps} steps: the sampler makes "
            f"{len(ratios)} model calls per generation; calibrate with --steps to match"
        )
    return [float(r) for r in ratios]


def write_ratios(
    path: Path, ratios: Sequence[float], workload: Workload, seeds: Sequence[int], steps: int
) -> Path:
    """Write a ratios file the ``diffusers:magcache`` kind reads (``ratios: FILE``)."""
    import diffusers

    data = {
        "mag_ratios": [round(r, 6) for r in ratios],
        "workload": workload.name,
        "steps": steps,
        "scheduler": workload.scheduler,
        "seeds": list(seeds),
        "diffusers": diffusers.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def cmd_magcache_calibrate(args: argparse.Namespace, registry: Registry | None = None) -> int:
    registry = registry or default_registry()
    workload = get_workload(args.workload, registry)
    steps = args.steps or workload.num_steps
    seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))
    torch.set_num_threads(args.threads) if args.threads else None
    print(
        f"workload {workload.name}: MagCache ratios over {len(seeds)} seeds "
        f"({seeds[0]}..{seeds[-1]}), {steps} {workload.scheduler} steps"
    )
    ratios = calibrate_magcache(workload, seeds, steps)
    path = write_ratios(Path(args.out), ratios, workload, seeds, steps)
    low, high = min(ratios[1:] or ratios), max(ratios[1:] or ratios)
    print(f"{len(ratios)} ratios, {low:.4f}..{high:.4f} after the first; wrote {path}")
    return 0


def add_commands(sub: Any) -> None:
    """Add ``magcache-calibrate`` to the ``blockdance`` command line's subparsers."""
    p = sub.add_parser(
        "magcache-calibrate",
        help="measure diffusers' MagCache ratios on a workload (for diffusers:magcache)",
    )
    p.add_argument("--workload", required=True, help="registered workload")
    p.add_argument("--out", required=True, help="the ratios file to write (.json)")
    p.add_argument("--seeds", type=int, default=4, help="calibration samples (default 4)")
    p.add_argument(
        "--seed-offset",
        type=int,
        default=CALIBRATION_SEED_OFFSET,
        help=f"first calibration seed (default {CALIBRATION_SEED_OFFSET}, apart from the "
        "bench's seeds)",
    )
    p.add_argument("--steps", type=int, default=None, help="denoising steps (the bench's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=cmd_magcache_calibrate)
