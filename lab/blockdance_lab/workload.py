"""Workloads: a model plus the loop that generates with it.

``blockdance demo`` and the benchmarks run registered workloads, so an architecture
plugin brings its own model and sampler (class labels, captions, videos …) and the core
stays model-agnostic. Register one through
:func:`~blockdance_lab.hookspecs.blockdance_register_workloads`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from blockdance import BlockDanceError, Registrations, Registry, default_registry

#: The workload ``blockdance demo``, ``bench``, ``analyze`` and ``calibrate`` use by default.
DEFAULT_WORKLOAD = "dit-tiny-shapes"


@dataclass(frozen=True)
class GenerateRequest:
    """What to generate.

    Args:
        seeds: One sample per seed; the same seed gives the same starting noise.
        num_steps: Number of denoising steps.
        progress: Show a progress bar over the steps.
    """

    seeds: tuple[int, ...]
    num_steps: int
    progress: bool = False

    def noise(self, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """Starting noise ``(N, *shape)``: one CPU-seeded draw per seed, so a seed gives the
        same sample whatever the batch or device, then moved to ``like``'s device and dtype."""
        draws = [
            torch.randn(tuple(shape), generator=torch.Generator().manual_seed(s))
            for s in self.seeds
        ]
        return torch.stack(draws).to(like.device, like.dtype)


@dataclass(frozen=True)
class QualityProbe:
    """How to judge a workload's samples: a probe network and real reference data.

    Args:
        features: Samples ``(N, C, H, W)`` -> probe features ``(N, D)`` (for FD-probe).
        logits: Samples -> class logits ``(N, K)`` (for class accuracy).
        labels: Seeds -> the class each seed was asked to generate ``(N,)``.
        reference: ``n`` -> ``n`` real samples from the training distribution.
    """

    features: Callable[[torch.Tensor], torch.Tensor]
    logits: Callable[[torch.Tensor], torch.Tensor]
    labels: Callable[[Sequence[int]], torch.Tensor]
    reference: Callable[[int], torch.Tensor]


@dataclass(frozen=True)
class Workload:
    """A model and its sampler.

    Args:
        name: Registry name, e.g. ``"dit-s2"``.
        description: One line for listings.
        build: Returns the object to attach to (a model or a diffusers pipeline).
        generate: ``generate(target, request)`` returns samples ``(N, C, H, W)`` (images
            in [-1, 1] or latents) or ``(N, F, C, H, W)`` for video, one per seed.
        num_steps: Default number of steps.
        scheduler: Name of the sampler, for reports.
        probe: Returns a :class:`QualityProbe` (loaded lazily), or None when the samples
            cannot be judged (random weights).
        images: Whether samples are images ``(N, C, H, W)`` in [-1, 1] (shown as pictures).
        videos: Whether samples are videos ``(N, F, C, H, W)`` in [-1, 1] (shown as pictures
            and animations). Neither: latents or other tensors.
        demo_seeds: Samples ``blockdance demo`` draws by default; fewer for costly
            workloads (videos).
    """

    name: str
    description: str
    build: Callable[[], Any]
    generate: Callable[[Any, GenerateRequest], torch.Tensor]
    num_steps: int = 50
    scheduler: str = ""
    probe: Callable[[], QualityProbe] | None = None
    images: bool = False
    videos: bool = False
    demo_seeds: int = 64

    def __post_init__(self) -> None:
        if self.images and self.videos:
            raise ValueError(f"workload {self.name!r}: samples are images or videos, not both")

    @property
    def pixels(self) -> bool:
        """Whether samples are pixels in [-1, 1]: images or videos."""
        return self.images or self.videos


class UnknownWorkloadError(BlockDanceError, LookupError):
    """A workload name is not registered (the message lists the registered ones)."""


WORKLOAD_HOOK = "blockdance_register_workloads"


def workloads(registry: Registry | None = None) -> Registrations[Workload]:
    """The registered workloads, each with the plugin that registered it.

    Args:
        registry: Whose plugins to ask (default: the process-wide registry).
    """
    registry = registry or default_registry()
    return registry.collect(WORKLOAD_HOOK, "workload", lambda w: w.name, UnknownWorkloadError)


def get_workload(name: str, registry: Registry | None = None) -> Workload:
    """The workload registered as ``name``.

    Raises:
        UnknownWorkloadError: ``name`` is not registered; the message lists those that are.
    """
    return workloads(registry).get(name)
