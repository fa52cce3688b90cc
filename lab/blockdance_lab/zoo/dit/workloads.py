"""Workloads the DiT plugin registers for ``blockdance demo`` and the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from blockdance_dit.model import DiT, DiT_models
from blockdance_lab.workload import GenerateRequest
from blockdance_lab.zoo.dit.sampling import make_scheduler, sample_dit
from blockdance_lab.zoo.workloads import image_probe


@dataclass
class DiTSampler:
    """A minimal pipeline: a reference DiT and its diffusers scheduler.

    ``blockdance.attach(sampler, ...)`` treats it as a diffusers pipeline: each call is
    one generation, and its steps are counted from the scheduler's ``step()`` calls.

    Args:
        transformer: The DiT.
        scheduler: A diffusers scheduler (see :func:`make_scheduler`).
        guidance_scale: Classifier-free guidance scale.
    """

    transformer: DiT
    scheduler: Any
    guidance_scale: float = 4.0

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Whether each model call stacks the conditional and null-class halves (as diffusers'
        pipelines say it; blockdance reads it as ``guidance_batch`` 2 or 1)."""
        return self.guidance_scale > 1

    def __call__(self, request: GenerateRequest) -> torch.Tensor:
        model = self.transformer
        param = next(model.parameters())
        shape = (model.in_channels, model.input_size, model.input_size)
        noise = request.noise(shape, like=param)  # (N, C, H, W)
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
    # adaLN-Zero makes a freshly initialised DiT's blocks identities, so reuse would change
    # nothing; give the zero-initialised weights small random values so blocks matter
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.02)
    return DiTSampler(model, make_scheduler("ddim"))


#: Guidance scale of the tiny shapes model (chosen on its probe accuracy, see its card).
TINY_GUIDANCE = 8.0


def tiny_shapes_sampler(
    model: DiT | None = None, guidance_scale: float = TINY_GUIDANCE
) -> DiTSampler:
    """The tiny DiT (default: the shipped one) with DDIM and classifier-free guidance."""
    from blockdance_lab.zoo.dit.tiny import load_tiny_dit

    return DiTSampler(
        load_tiny_dit() if model is None else model, make_scheduler("ddim"), guidance_scale
    )


#: The shipped probe on the tiny DiT's images (class ``seed % 16``, as ``DiTSampler`` draws).
tiny_shapes_probe = image_probe


def generate_latents(target: DiTSampler, request: GenerateRequest) -> torch.Tensor:
    return target(request)
