"""The workload the STDiT plugin registers: the tiny STDiT with DDIM and guidance."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from tqdm import tqdm

from blockdance_lab.workload import GenerateRequest
from blockdance_lab.zoo.stdit.tiny import TinySTDiT, load_tiny_stdit, seed_captions
from blockdance_lab.zoo.workloads import video_probe
from blockdance_stdit.model import STDiT

#: Guidance scale of the tiny STDiT (chosen on its probe accuracy, see its card).
TINY_STDIT_GUIDANCE = 6.0


def ddim_linear(prediction_type: str = "epsilon") -> DDIMScheduler:
    """DDIM on the linear β schedule the model was trained with (no x₀ clipping).

    Args:
        prediction_type: What the model predicts (``TinySTDiTConfig.prediction``).
    """
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        clip_sample=False,
        prediction_type=prediction_type,
    )


@dataclass
class STDiTSampler:
    """Open-Sora's sampling loop for the tiny STDiT: DDIM, batched classifier-free guidance
    with the model's null caption. ``blockdance.attach(sampler, ...)`` treats it as a
    pipeline: each call is a generation, its steps counted from the scheduler.

    Args:
        model: The tiny STDiT (transformer and text encoder).
        scheduler: A diffusers DDIM scheduler.
        guidance_scale: Classifier-free guidance scale.
        captions: Seeds -> the caption each seed generates.
    """

    model: TinySTDiT
    scheduler: DDIMScheduler
    guidance_scale: float = TINY_STDIT_GUIDANCE
    captions: Callable[[Sequence[int]], list[str]] = field(default=seed_captions)

    def __post_init__(self) -> None:
        told = self.scheduler.config.get("prediction_type")
        if told != self.model.cfg.prediction:
            raise ValueError(
                f"the model predicts {self.model.cfg.prediction!r} but the scheduler reads its "
                f"output as {told!r}; build the scheduler with "
                f"ddim_linear({self.model.cfg.prediction!r})"
            )

    @property
    def transformer(self) -> STDiT:
        return self.model.stdit

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Each model call stacks the conditional and null-caption halves."""
        return True

    @torch.no_grad()
    def __call__(self, request: GenerateRequest) -> torch.Tensor:
        """Videos ``(N, F, 3, H, W)``, one per seed."""
        cfg = self.model.cfg
        param = next(self.model.parameters())
        shape = (3, cfg.frames, cfg.image_size, cfg.image_size)
        x = request.noise(shape, like=param)  # (N, 3, T, H, W)
        n = x.shape[0]
        self.scheduler.set_timesteps(request.num_steps, device=param.device)
        # a model in training mode drops captions at random (caption dropout): sample in eval
        was_training = self.model.training
        self.model.eval()
        try:
            y = self.model.encode(self.captions(request.seeds))  # (N, 1, L, D)
            y = torch.cat([y, self.transformer.y_embedder.null(n).to(y)])  # (2N, 1, L, D)
            for t in tqdm(self.scheduler.timesteps, desc="sample", disable=not request.progress):
                # the prediction (ε or v): guidance is linear in either
                out = self.transformer(torch.cat([x, x]), timestep=t.expand(2 * n), y=y)
                cond, uncond = out.chunk(2)
                out = uncond + self.guidance_scale * (cond - uncond)
                x = self.scheduler.step(out, t, x).prev_sample  # type: ignore[union-attr]
        finally:
            self.model.train(was_training)
        return x.permute(0, 2, 1, 3, 4)  # (N, T, 3, H, W)


def tiny_stdit_sampler(
    model: TinySTDiT | None = None, guidance_scale: float = TINY_STDIT_GUIDANCE
) -> STDiTSampler:
    """The tiny STDiT (default: the shipped one) with DDIM, reading its output as the model
    predicts it, and classifier-free guidance."""
    model = load_tiny_stdit() if model is None else model
    return STDiTSampler(model, ddim_linear(model.cfg.prediction), guidance_scale)


#: The shipped video-frame probe on the tiny STDiT's videos (the class of each caption).
tiny_stdit_probe = video_probe
