"""The predicted clean sample x̂₀ from one model call, by the scheduler's own formula.

Two families of diffusers schedulers are understood:

- **noise-schedule schedulers** with ``alphas_cumprod`` (DDIM, DDPM, DPM-Solver, PNDM,
  UniPC …): with ``ᾱ = alphas_cumprod[t]`` and ``config.prediction_type``

  - ``"epsilon"``: ``x̂₀ = (x_t − √(1−ᾱ) ε) / √ᾱ``
  - ``"v_prediction"``: ``x̂₀ = √ᾱ x_t − √(1−ᾱ) v``
  - ``"sample"``: ``x̂₀`` is the output;

- **flow matching** (``FlowMatchEulerDiscreteScheduler``): ``x_t = (1−σ) x₀ + σ ε`` and the
  model predicts ``v = ε − x₀``, so ``x̂₀ = x_t − σ_t v`` with ``σ_t`` looked up from the
  scheduler's ``timesteps``/``sigmas``.

A model that learns its variance (DiT with ``learn_sigma``) returns twice the input's channels;
the first half is the prediction and is the part used.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from blockdance.errors import BlockDanceError

__all__ = ["UnsupportedSchedulerError", "model_prediction", "predicted_x0"]


class UnsupportedSchedulerError(BlockDanceError, TypeError):
    """x̂₀ cannot be computed for this scheduler or prediction type."""


def model_prediction(output: Any) -> Tensor:
    """The prediction tensor in a model's return value.

    Accepts a tensor, a diffusers output object with ``.sample``, or a tuple whose first
    element is the prediction (``return_dict=False``).
    """
    if isinstance(output, Tensor):
        return output
    sample = getattr(output, "sample", None)
    if isinstance(sample, Tensor):
        return sample
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(
        f"cannot find the prediction in a model output of type {type(output).__name__}: "
        "expected a tensor, an object with a .sample tensor, or a tuple starting with one"
    )


def _prediction_channels(x_t: Tensor, pred: Tensor) -> Tensor:
    """Drop learned-variance channels: a (N, 2C, …) output for a (N, C, …) input -> first C."""
    if pred.shape == x_t.shape:
        return pred
    if (
        pred.dim() == x_t.dim() >= 2
        and pred.shape[0] == x_t.shape[0]
        and pred.shape[1] == 2 * x_t.shape[1]
        and pred.shape[2:] == x_t.shape[2:]
    ):
        return pred[:, : x_t.shape[1]]
    raise ValueError(
        f"the model output {tuple(pred.shape)} does not fit its input x_t {tuple(x_t.shape)}: "
        "expected the same shape, or twice the channels (dim 1) for a learned-variance model. "
        "If x_t was read from the wrong argument, pass x_input= to the trace recorder."
    )


def _flow_sigma(scheduler: Any, t: float) -> float:
    """σ_t of a flow-matching scheduler, looked up from its timesteps (or t / 1000 ones)."""
    timesteps = getattr(scheduler, "timesteps", None)
    sigmas = getattr(scheduler, "sigmas", None)
    if timesteps is None or sigmas is None or len(timesteps) == 0:
        raise UnsupportedSchedulerError(
            f"{type(scheduler).__name__} has no timesteps/sigmas yet: call set_timesteps() "
            "before computing x̂₀"
        )
    ts = torch.as_tensor(timesteps, dtype=torch.float64).cpu()
    sig = torch.as_tensor(sigmas, dtype=torch.float64).cpu()
    n_train = float(getattr(scheduler.config, "num_train_timesteps", 1000))
    # Some pipelines (Flux) pass t / num_train_timesteps to the model.
    for value in (t, t * n_train):
        i = int(torch.argmin((ts - value).abs()))
        if abs(float(ts[i]) - value) <= 1e-3 * max(1.0, abs(value)):
            return float(sig[i])
    raise ValueError(
        f"timestep {t} is not one of {type(scheduler).__name__}'s timesteps "
        f"({float(ts[0]):.4g} … {float(ts[-1]):.4g}); the model was called with a timestep "
        "this scheduler did not produce"
    )


def predicted_x0(scheduler: Any, x_t: Tensor, model_output: Any, t: float | Tensor) -> Tensor:
    """The clean sample the model predicts from ``x_t`` at timestep ``t``.

    Args:
        scheduler: The diffusers scheduler driving the sampling loop (after ``set_timesteps``).
        x_t: The model's input sample ``(N, C, …)``, as the model received it.
        model_output: What the model returned (tensor, ``.sample`` object or tuple);
            learned-variance channels are dropped.
        t: The timestep the model received (a number, or a tensor whose first element is it).

    Returns:
        x̂₀ with the shape of ``x_t``, in float32 (float64 stays float64).

    Raises:
        UnsupportedSchedulerError: The scheduler is neither a noise-schedule scheduler with
            ``alphas_cumprod`` nor a flow-matching one, or its prediction type is unknown.
        ValueError: ``t`` is not a timestep of the scheduler, or shapes do not fit.
    """
    if isinstance(t, Tensor):
        t = float(t.reshape(-1)[0])
    dtype = torch.float64 if x_t.dtype == torch.float64 else torch.float32
    x = x_t.to(dtype)
    pred = _prediction_channels(x_t, model_prediction(model_output)).to(dtype)
    name = type(scheduler).__name__
    config = getattr(scheduler, "config", None)

    if "FlowMatch" in name:
        return x - _flow_sigma(scheduler, t) * pred

    alphas = getattr(scheduler, "alphas_cumprod", None)
    if alphas is None or config is None:
        raise UnsupportedSchedulerError(
            f"cannot compute x̂₀ for {name}: supported are schedulers with alphas_cumprod "
            "(DDIM, DDPM, DPM-Solver, PNDM, UniPC …; epsilon, v_prediction or sample "
            "prediction) and FlowMatchEulerDiscreteScheduler"
        )
    index = round(t)
    if abs(t - index) > 1e-4 or not 0 <= index < len(alphas):
        raise UnsupportedSchedulerError(
            f"{name}: timestep {t} is not an integer index into alphas_cumprod "
            f"(0..{len(alphas) - 1}); schedulers with fractional timesteps (Euler, Heun, "
            "Karras sigmas) are not supported"
        )
    a = float(alphas[index])
    kind = getattr(config, "prediction_type", "epsilon")
    if kind == "epsilon":
        return (x - math.sqrt(1.0 - a) * pred) / math.sqrt(a)
    if kind == "v_prediction":
        return math.sqrt(a) * x - math.sqrt(1.0 - a) * pred
    if kind == "sample":
        return pred
    raise UnsupportedSchedulerError(
        f"{name}: prediction_type {kind!r} is not supported; expected 'epsilon', "
        "'v_prediction' or 'sample'"
    )
