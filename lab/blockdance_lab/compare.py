"""Run one workload under several policies, side by side in one process."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from blockdance import Handle, PolicyLike, Registry, attach, default_registry
from blockdance.architecture import timestep_value
from blockdance.stats import GenerationStats
from blockdance_lab.external import (
    ExternalCache,
    apply_external_cache,
    is_external,
    parse_external,
)
from blockdance_lab.workload import GenerateRequest, Workload

__all__ = ["PolicyRun", "attached", "compare_policies", "failed_run", "run_order", "timed"]

T = TypeVar("T")


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
        per_seed: Metrics with one value per seed, in seed order (SSIM, PSNR, ...).
        error: Why the row failed (``"TypeName: message"``), or None; a failed row has no
            samples and no metrics.
    """

    label: str
    latencies: list[float]
    stats: GenerationStats
    samples: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)
    external: bool = False
    per_seed: dict[str, list[float]] = field(default_factory=dict)
    error: str | None = None

    @property
    def latency(self) -> float:
        """Median latency in seconds."""
        return statistics.median(self.latencies)


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], T], device: torch.device | None) -> tuple[T, float]:
    """``run()`` under inference mode, and its wall time in seconds.

    Args:
        run: One generation.
        device: Where it runs; on a GPU the clock starts and stops with the device idle.
    """
    _sync(device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = run()
    _sync(device)
    return out, time.perf_counter() - start


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
    keep_going: bool = False,
) -> list[PolicyRun]:
    """Generate the same seeds under each policy; repeats are interleaved (:func:`run_order`).

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
        keep_going: A row other than the first that raises is recorded as failed
            (:attr:`PolicyRun.error`) and the other rows still run; otherwise it raises.

    Returns:
        One run per row, in the order of ``policies``.
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
    for order in run_order(len(policies), repeats):
        for index in order:
            label, policy = policies[index]
            if label in runs and runs[label].error is not None:
                continue  # failed in an earlier repeat
            try:
                samples, elapsed, stats, external = _generate_once(
                    workload, target, policy, request, registry, device
                )
            except Exception as err:
                if not keep_going or index == 0:  # without the reference nothing compares
                    raise
                runs[label] = failed_run(label, err)
                continue
            if label in runs:
                runs[label].latencies.append(elapsed)
            else:
                runs[label] = PolicyRun(label, [elapsed], stats, samples, external=external)
    return [runs[label] for label, _ in policies]


def run_order(count: int, repeats: int) -> list[list[int]]:
    """The order the rows run in, one list per repeat.

    Repeat ``r`` starts at row ``r mod count`` and wraps around, so over ``count`` repeats
    every row runs once in each position and slow drift of the machine falls on every row
    alike. With one repeat each row runs once, in the order given.
    """
    return [[(r + i) % count for i in range(count)] for r in range(repeats)]


def failed_run(label: str, err: BaseException) -> PolicyRun:
    """A row that raised: its error as one line, no samples, no latency."""
    message = " ".join(str(err).split()) or "(no message)"
    stats = GenerationStats(num_steps=None, num_blocks=0)
    return PolicyRun(label, [], stats, torch.empty(0), error=f"{type(err).__name__}: {message}")


@contextmanager
def attached(
    target: Any, policy: PolicyLike | ExternalCache, registry: Registry, num_steps: int
) -> Iterator[Handle]:
    """``policy`` attached to ``target`` for one row; a diffusers cache is applied to the
    model under blockdance's ``none`` policy, and removed on exit."""
    external = parse_external(policy) if is_external(policy) else None  # type: ignore[arg-type]
    own: PolicyLike = "none" if external is not None else policy  # type: ignore[assignment]
    with ExitStack() as stack:
        h = stack.enter_context(attach(target, own, registry=registry, num_steps=num_steps))
        if external is not None:
            model = _denoiser(target)
            timestep = stack.enter_context(_current_timestep(h, model))
            stack.enter_context(apply_external_cache(external, model, timestep))
        yield h


def _generate_once(
    workload: Workload,
    target: Any,
    policy: PolicyLike | ExternalCache,
    request: GenerateRequest,
    registry: Registry,
    device: torch.device | None,
) -> tuple[torch.Tensor, float, GenerationStats, bool]:
    """One timed generation under ``policy``: samples (on the CPU), seconds, statistics,
    and whether it ran a diffusers cache."""
    with attached(target, policy, registry, request.num_steps) as h:
        samples, elapsed = timed(lambda: workload.generate(target, request), device)
    return samples.detach().cpu(), elapsed, h.stats, is_external(policy)


def _denoiser(target: Any) -> nn.Module:
    """The model ``attach`` hooks in ``target``: the module itself, or a pipeline's
    ``.transformer`` (the diffusers caches apply only to diffusers transformers)."""
    model = target if isinstance(target, nn.Module) else getattr(target, "transformer", None)
    if not isinstance(model, nn.Module):
        raise TypeError(f"{type(target).__name__} has no diffusers transformer to cache")
    return model


@contextmanager
def _current_timestep(handle: Handle, model: nn.Module) -> Iterator[Callable[[], float]]:
    """The timestep of ``model``'s call in progress, read as the attached policy reads it
    (diffusers' PAB asks for it)."""
    current: list[float | None] = [None]

    def before(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        current[0] = timestep_value(handle.architecture.timestep(module, args, kwargs))

    def timestep() -> float:
        if current[0] is None:
            raise RuntimeError("the model call carries no timestep for the diffusers cache")
        return current[0]

    hook = model.register_forward_pre_hook(before, with_kwargs=True)
    try:
        yield timestep
    finally:
        hook.remove()
