"""Run one workload under several policies, side by side in one process."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from blockdance._attach import PolicyLike, attach
from blockdance._manager import Registry, default_registry
from blockdance.stats import GenerationStats
from blockdance.workload import GenerateRequest, Workload


@dataclass
class PolicyRun:
    """One policy's result on a workload.

    Args:
        label: Row label, e.g. ``"blockdance N=2"``.
        latencies: Wall time of each repeat, in seconds.
        stats: Statistics of the last generation.
        samples: The generated samples (one per seed).
    """

    label: str
    latencies: list[float]
    stats: GenerationStats
    samples: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)

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
    policies: Sequence[tuple[str, PolicyLike]],
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
        seeds: One sample per seed.
        num_steps: Denoising steps (default: the workload's).
        repeats: Timed repeats per policy; latency is their median.
        warmup: Run one untimed generation first (lazy initialisation, caches).
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
    if warmup:
        with attach(target, "none", registry=registry, num_steps=request.num_steps):
            workload.generate(target, GenerateRequest(request.seeds[:1], request.num_steps))
    runs: dict[str, PolicyRun] = {}
    for _ in range(repeats):
        for label, policy in policies:
            with attach(target, policy, registry=registry, num_steps=request.num_steps) as h:
                _sync(device)
                start = time.perf_counter()
                with torch.inference_mode():
                    samples = workload.generate(target, request)
                _sync(device)
                elapsed = time.perf_counter() - start
            if label in runs:
                runs[label].latencies.append(elapsed)
            else:
                runs[label] = PolicyRun(label, [elapsed], h.stats, samples.detach().cpu())
    return list(runs.values())
