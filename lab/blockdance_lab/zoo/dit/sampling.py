"""Sample latents from a class-conditional DiT with a diffusers scheduler.

This is the loop a user's pipeline runs, kept small so that what the blockdance runtime sees
is plain: ``scheduler.set_timesteps`` once per generation, then one model call per step
(``cfg_mode="batched"``) or two, conditional first (``cfg_mode="separate"``).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Literal, cast

import torch

# Import from the modules: mypy resolves the lazy top-level names to diffusers' dummy objects.
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler
from tqdm import tqdm

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from diffusers.schedulers.scheduling_utils import SchedulerMixin

    from blockdance_dit.model import DiT

__all__ = ["SCHEDULER_NAMES", "make_scheduler", "sample_dit"]


def _linear_betas(num_train_timesteps: int) -> dict[str, Any]:
    # DiT's "linear" schedule: 1e-4 to 0.02 over 1000 steps, rescaled for other lengths.
    scale = 1000 / num_train_timesteps
    return {
        "num_train_timesteps": num_train_timesteps,
        "beta_start": scale * 0.0001,
        "beta_end": scale * 0.02,
        "beta_schedule": "linear",
    }


_SCHEDULERS: dict[str, Callable[[int], DDIMScheduler | DPMSolverMultistepScheduler]] = {
    # Latents are not bounded to [-1, 1], so DDIM must not clip its x0 estimate.
    "ddim": lambda n: DDIMScheduler(**_linear_betas(n), clip_sample=False),
    "dpm-solver": lambda n: DPMSolverMultistepScheduler(**_linear_betas(n)),
}
SCHEDULER_NAMES: tuple[str, ...] = tuple(_SCHEDULERS)


def make_scheduler(
    name: str, num_train_timesteps: int = 1000
) -> DDIMScheduler | DPMSolverMultistepScheduler:
    """Build a diffusers scheduler on DiT's linear beta schedule.

    Args:
        name: ``"ddim"`` (DDIMScheduler) or ``"dpm-solver"`` (DPMSolverMultistepScheduler).
        num_train_timesteps: Length of the training noise schedule.

    Raises:
        ValueError: ``name`` is not one of :data:`SCHEDULER_NAMES`.
    """
    try:
        factory = _SCHEDULERS[name]
    except KeyError:
        raise ValueError(
            f"unknown scheduler {name!r}; supported: {', '.join(SCHEDULER_NAMES)}"
        ) from None
    return factory(num_train_timesteps)


def sample_dit(
    model: DiT,
    class_labels: Sequence[int] | torch.Tensor,
    *,
    scheduler: SchedulerMixin,
    num_inference_steps: int = 50,
    guidance_scale: float = 4.0,
    cfg_mode: Literal["batched", "separate"] = "batched",
    generator: torch.Generator | None = None,
    latents: torch.Tensor | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Denoise Gaussian noise into latents of the given classes (no VAE decoding).

    The model runs in eval mode (no label dropout) and without gradients; its mode is restored
    afterwards.

    Args:
        model: A class-conditional, eps-predicting DiT.
        class_labels: One class id per sample, each in ``[0, model.num_classes)``.
        scheduler: A diffusers scheduler, e.g. from :func:`make_scheduler`; its
            ``set_timesteps`` is called here, once, at the start.
        num_inference_steps: Number of denoising steps.
        guidance_scale: Classifier-free guidance scale ``s`` in ``uncond + s * (cond -
            uncond)``; values ``<= 1`` run the conditional branch only.
        cfg_mode: ``"batched"``: conditional and null-class inputs in one model call per
            step; ``"separate"``: two calls per step, conditional first.
        generator: Random generator for the initial noise (and stochastic schedulers).
        latents: Initial noise (N, C, H, W), before scaling by ``init_noise_sigma``; drawn
            from ``generator`` when omitted.
        progress: Show a progress bar over the steps.

    Returns:
        The final latents (N, C, H, W).
    """
    if cfg_mode not in ("batched", "separate"):
        raise ValueError(f"cfg_mode must be 'batched' or 'separate', got {cfg_mode!r}")
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    device, dtype = model.pos_embed.device, model.pos_embed.dtype
    labels = torch.as_tensor(class_labels, dtype=torch.long).reshape(-1).to(device)
    n = labels.shape[0]
    if n == 0 or labels.min() < 0 or labels.max() >= model.num_classes:
        raise ValueError(
            f"class_labels must be a non-empty list of ids in [0, {model.num_classes}), "
            f"got {labels.tolist()}"
        )
    use_cfg = guidance_scale > 1
    null_id = model.num_classes
    if use_cfg and model.y_embedder.embedding_table.num_embeddings <= null_id:
        raise ValueError(
            f"guidance_scale={guidance_scale} needs the null class (id {null_id}), but the model "
            "was built with class_dropout_prob=0 and has none; use guidance_scale=1"
        )
    shape = (n, model.in_channels, model.input_size, model.input_size)
    if latents is None:
        noise_device = generator.device if generator is not None else device
        latents = torch.randn(shape, generator=generator, device=noise_device, dtype=dtype)
    elif tuple(latents.shape) != shape:
        raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
    nulls = torch.full_like(labels, null_id)

    # SchedulerMixin does not declare the sampling API that every scheduler implements.
    sched = cast("Any", scheduler)
    sched.set_timesteps(num_inference_steps)
    step_kwargs = {"generator": generator} if _accepts(sched.step, "generator") else {}
    latents = latents.to(device=device, dtype=dtype) * sched.init_noise_sigma

    def eps(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return model(x, t, y)[:, : model.in_channels]  # drop the learned-sigma channels

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for t in tqdm(sched.timesteps, disable=not progress, desc="DiT sampling"):
                x = sched.scale_model_input(latents, t)  # (N, C, H, W)
                ts = t.reshape(1).repeat(n).to(device)  # (N,)
                if not use_cfg:
                    noise = eps(x, ts, labels)
                elif cfg_mode == "batched":
                    both = eps(torch.cat([x, x]), torch.cat([ts, ts]), torch.cat([labels, nulls]))
                    cond, uncond = both.chunk(2)
                    noise = uncond + guidance_scale * (cond - uncond)
                else:
                    cond = eps(x, ts, labels)
                    uncond = eps(x, ts, nulls)
                    noise = uncond + guidance_scale * (cond - uncond)
                latents = sched.step(noise, t, latents, **step_kwargs).prev_sample
    finally:
        model.train(was_training)
    return latents


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes a parameter called ``name``."""
    return name in inspect.signature(fn).parameters
