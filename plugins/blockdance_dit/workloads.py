"""Workloads the DiT plugin registers for ``blockdance demo`` and the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from blockdance.workload import GenerateRequest
from blockdance_dit.model import DiT, DiT_models
from blockdance_dit.sampling import make_scheduler, sample_dit


@dataclass
class DiTSampler:
    """A minimal pipeline: a reference DiT and its diffusers scheduler.

    ``blockdance.attach(sampler, ...)`` hooks ``scheduler.set_timesteps``, so the step
    count and the start of each generation come from the sampling call, as with a
    diffusers pipeline.

    Args:
        transformer: The DiT.
        scheduler: A diffusers scheduler (see :func:`make_scheduler`).
        guidance_scale: Classifier-free guidance scale.
    """

    transformer: DiT
    scheduler: Any
    guidance_scale: float = 4.0

    def __call__(self, request: GenerateRequest) -> torch.Tensor:
        model = self.transformer
        param = next(model.parameters())
        shape = (model.in_channels, model.input_size, model.input_size)
        noise = torch.stack(
            [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in request.seeds]
        ).to(param.device, param.dtype)  # (N, C, H, W)
        labels = [s % model.num_classes for s in request.seeds]
        return sample_dit(
            model,
            labels,
            scheduler=self.scheduler,
            num_inference_steps=request.num_steps,
            guidance_scale=self.guidance_scale,
            latents=noise,
            progress=request.progress,
        )


def random_dit_s2() -> DiTSampler:
    """DiT-S/2 with random weights on 16x16 latents (64 tokens), DDIM."""
    torch.manual_seed(0)
    model = DiT_models["DiT-S/2"](input_size=16, num_classes=10, learn_sigma=False).eval()
    return DiTSampler(model, make_scheduler("ddim"))
