"""Run one workload under several policies, side by side in one process."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch

from blockdance._attach import PolicyLike, attach
from blockdance._manager import Registry, default_registry
from blockdance._runtime import Runtime
from blockdance.stats import GenerationStats
from blockdance_lab.external import (
    ExternalCache,
    apply_external_cache,
    is_external,
    parse_external,
)
from blockdance_lab.workload import GenerateRequest, Workload


@dataclass
class PolicyRun:
    """One policy's result on a workload.

    Args:
        label: Row label, e.g. ``"blockdance N=2"``.
        latencies: Wall time of each repeat, in seconds.
        stats: Statistics of the last generation.
        samples: The generated samples (one per seed).
        metrics: Numbers computed afterwards (SSIM, reduction, ...).
        external: The row ran a diffusers cache (:mod:`blockdance_lab.external`) under the
            ``none`` policy, so ``stats`` records no reuse decisions.
    """

    label: str
    latencies: list[float]
    stats: GenerationStats
    samples: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    external: bool = False

    @property
    def latency(self) -> float:
        """Median latency in seconds."""
        return statistics.median(self.latencies)


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_of(target: Any) -> torch.device | None:
    module = getattr(target, "transformer", target)
    try:
        return next(module.parameters()).device
    except (AttributeError, StopIteration):
        return None


def compare_policies(
    workload: Workload,
    policies: Sequence[tuple[str, PolicyLike | ExternalCache]],
    *,
    seeds: Sequence[int],
    num_steps: int | None = None,
    repeats: int = 1,
    warmup: bool = True,
    progress: bool = False,
    registry: Registry | None = None,
    target: Any = None,
) -> list[PolicyRun]:
    """Generate the same seeds under each policy; repeats are interleaved.

    Args:
        workload: What to run.
        policies: ``(label, policy)`` pairs; the first is the reference (usually ``"none"``).
            A policy may also be a diffusers cache (:mod:`blockdance_lab.external`): it runs
            under ``none``, with diffusers' hooks applied for each generation.
        seeds: One sample per seed.
        num_steps: Denoising steps (default: the workload's).
        repeats: Timed repeats per policy; latency is their median.
        warmup: Run one untimed generation of the same seeds first (lazy initialisation,
            the memory allocator and caches warm for the timed shapes).
        progress: Show a progress bar per generation.
        registry: Registry to resolve policies and architectures.
        target: A model or pipeline already built by ``workload.build()``.
    """
    registry = registry or default_registry()
    target = workload.build() if target is None else target
    request = GenerateRequest(
        seeds=tuple(seeds), num_steps=num_steps or workload.num_steps, progress=progress
    )
    device = _device_of(target)
    if warmup:  # the full batch: allocator and kernels warm for the shapes that are timed
        with (
            attach(target, "none", registry=registry, num_steps=request.num_steps),
            torch.inference_mode(),
        ):
            workload.generate(target, GenerateRequest(request.seeds, request.num_steps))
    runs: dict[str, PolicyRun] = {}
    for _ in range(repeats):
        for label, policy in policies:
            external = parse_external(policy) if is_external(policy) else None  # type: ignore[arg-type]
            own: PolicyLike = "none" if external is not None else policy  # type: ignore[assignment]
            with ExitStack() as stack:
                h = stack.enter_context(
                    attach(target, own, registry=registry, num_steps=request.num_steps)
                )
                if external is not None:
                    timestep = functools.partial(_timestep, h.runtime)
                    stack.enter_context(apply_external_cache(external, h.runtime.model, timestep))
                _sync(device)
                start = time.perf_counter()
                with torch.inference_mode():
                    samples = workload.generate(target, request)
                _sync(device)
                elapsed = time.perf_counter() - start
            if label in runs:
                runs[label].latencies.append(elapsed)
            else:
                runs[label] = PolicyRun(
                    label, [elapsed], h.stats, samples.detach().cpu(), external=bool(external)
                )
    return list(runs.values())


def _timestep(runtime: Runtime) -> float:
    """The timestep of the model call in progress (diffusers' PAB asks for it)."""
    t = runtime.ctx.timestep if runtime.ctx is not None else None
    if t is None:
        raise RuntimeError("the model call carries no timestep for the diffusers cache")
    return float(t)
