"""Workloads: a model plus the loop that generates with it.

``blockdance demo`` and the benchmarks run registered workloads, so an architecture
plugin brings its own model and sampler (class labels, captions, videos …) and the core
stays model-agnostic. Register one through
:func:`~blockdance.hookspecs.blockdance_register_workloads`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


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
    """

    name: str
    description: str
    build: Callable[[], Any]
    generate: Callable[[Any, GenerateRequest], torch.Tensor]
    num_steps: int = 50
    scheduler: str = ""
