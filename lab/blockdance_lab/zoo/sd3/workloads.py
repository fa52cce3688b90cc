"""The workload the MMDiT plugin registers: the tiny SD3 with diffusers' flow Euler sampler."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from diffusers.models.transformers.transformer_sd3 import SD3Transformer2DModel
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)
from tqdm import tqdm

from blockdance_lab.workload import GenerateRequest
from blockdance_lab.zoo.sd3.tiny import TinySD3, load_tiny_sd3, seed_captions
from blockdance_lab.zoo.workloads import generate_pixels, image_probe

#: Guidance scale of the tiny SD3 (chosen on its probe accuracy, see its card).
TINY_SD3_GUIDANCE = 6.0


@dataclass
class SD3Sampler:
    """What ``StableDiffusion3Pipeline`` runs, in pixel space and with the tiny text encoder.

    One transformer call per step with the unconditional and conditional halves batched
    (the pipeline's classifier-free guidance), Euler steps of diffusers'
    ``FlowMatchEulerDiscreteScheduler``. ``blockdance.attach(sampler, ...)`` treats it as a
    pipeline: each call is a generation, its steps counted from the scheduler.

    Args:
        model: The tiny SD3 (transformer and text encoder).
        scheduler: A flow-matching scheduler.
        guidance_scale: Classifier-free guidance scale.
        captions: Seeds -> the caption each seed generates.
    """

    model: TinySD3
    scheduler: FlowMatchEulerDiscreteScheduler
    guidance_scale: float = TINY_SD3_GUIDANCE
    captions: Callable[[Sequence[int]], list[str]] = field(default=seed_captions)

    @property
    def transformer(self) -> SD3Transformer2DModel:
        return self.model.transformer

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Each model call stacks the unconditional and conditional halves."""
        return True

    @torch.no_grad()
    def __call__(self, request: GenerateRequest) -> torch.Tensor:
        cfg = self.model.cfg
        param = next(self.model.parameters())
        shape = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
        x = request.noise(shape, like=param)  # (N, C, H, W)
        n = x.shape[0]
        embeds, pooled = self.model.encode([""] * n + self.captions(request.seeds))  # (2N, L, D)
        self.scheduler.set_timesteps(request.num_steps, device=param.device)
        for t in tqdm(self.scheduler.timesteps, desc="sample", disable=not request.progress):
            v = self.transformer(
                hidden_states=torch.cat([x, x]),
                encoder_hidden_states=embeds,
                pooled_projections=pooled,
                timestep=t.expand(2 * n),
                return_dict=False,
            )[0]  # (2N, C, H, W)
            v_uncond, v_cond = v.chunk(2)
            v = v_uncond + self.guidance_scale * (v_cond - v_uncond)
            x = self.scheduler.step(v, t, x, return_dict=False)[0]  # type: ignore[arg-type]
        return x


def tiny_sd3_sampler(
    model: TinySD3 | None = None, guidance_scale: float = TINY_SD3_GUIDANCE
) -> SD3Sampler:
    """The tiny SD3 (default: the shipped one) with flow-matching Euler and guidance."""
    return SD3Sampler(
        load_tiny_sd3() if model is None else model,
        FlowMatchEulerDiscreteScheduler(),
        guidance_scale,
    )


#: The shipped probe on the tiny SD3's images (the class of each seed's caption).
tiny_sd3_probe = image_probe
#: Pixel-space samples, clamped to [-1, 1].
generate_images = generate_pixels
