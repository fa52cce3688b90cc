"""``attach``: put a policy on a model or a diffusers pipeline and get a handle."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from torch import nn

from blockdance._manager import Registry, default_registry
from blockdance._pipeline import denoiser_of
from blockdance._runtime import Runtime
from blockdance.architecture import ArchitectureSpec, BlockSlot
from blockdance.observer import Observer
from blockdance.policy import Policy, PolicyConfig
from blockdance.stats import GenerationStats

#: What :func:`attach` and the registry accept as a policy: an instance, a config, a
#: ``{"kind": ...}`` mapping, a registered kind name or a path to a JSON policy file.
PolicyLike = Policy | PolicyConfig | Mapping[str, Any] | str | Path


def _unwrap_compiled(model: nn.Module) -> nn.Module:
    """The module inside a ``torch.compile`` wrapper (its compiled code calls it)."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else model


def _resolve_target(obj: Any, scheduler: Any) -> tuple[nn.Module, Any, Any]:
    """The denoiser to hook, the pipeline whose calls are generations, the scheduler."""
    if scheduler is not None and not (
        hasattr(scheduler, "set_timesteps") and hasattr(scheduler, "step")
    ):
        raise TypeError(
            f"scheduler= must be a diffusers scheduler (with set_timesteps() and step()), "
            f"got {type(scheduler).__name__}"
        )
    if isinstance(obj, nn.Module):
        return _unwrap_compiled(obj), None, scheduler
    model = denoiser_of(obj)
    if isinstance(model, nn.Module):
        if scheduler is not None:
            raise TypeError(
                "scheduler= is for a bare model; a pipeline's own .scheduler is followed "
                "(replace pipe.scheduler to use another)"
            )
        own = getattr(obj, "scheduler", None)
        if own is None or not hasattr(own, "set_timesteps") or not hasattr(own, "step"):
            raise TypeError(
                f"{type(obj).__name__} has a denoiser but no diffusers scheduler with "
                "set_timesteps() and step(); attach to the model itself and pass num_steps= "
                "or scheduler="
            )
        if not callable(obj):  # not a pipeline to call: its scheduler alone is followed
            return _unwrap_compiled(model), None, own
        return _unwrap_compiled(model), obj, None
    raise TypeError(
        f"cannot attach to {type(obj).__name__}: expected a torch.nn.Module or a diffusers "
        "pipeline with a .transformer (or .unet) and a .scheduler"
    )


class Handle:
    """A policy attached to a model; a context manager that detaches on exit.

    Args:
        runtime: The runtime doing the work.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime: Runtime | None = runtime
        self._last = GenerationStats(num_steps=None, num_blocks=len(runtime.slots))
        self._policy = runtime.policy
        self._spec = runtime.spec
        self._slots = list(runtime.slots)
        self._model = runtime.model
        self._history: list[GenerationStats] = []

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("this handle was removed; attach again to use a policy")
        return self._runtime

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def model(self) -> nn.Module:
        """The model whose blocks are hooked: the module given, a pipeline's transformer
        (or UNet), the module inside a ``torch.compile`` wrapper."""
        return self._model

    @property
    def architecture(self) -> ArchitectureSpec:
        return self._spec

    @property
    def slots(self) -> list[BlockSlot]:
        return list(self._slots)

    @property
    def stats(self) -> GenerationStats:
        """Statistics of this thread's current (or last) generation."""
        if self._runtime is not None and self._runtime.stats is not None:
            self._last = self._runtime.stats
        return self._last

    @property
    def history(self) -> list[GenerationStats]:
        """Statistics of recent generations, oldest first (kept after removal)."""
        if self._runtime is not None:
            self._history = list(self._runtime.history)
        return list(self._history)

    @property
    def cache_bytes(self) -> int:
        """Bytes held by the cache right now."""
        return self.runtime.cache_bytes

    def add_observer(self, observer: Observer) -> None:
        """Tell ``observer`` about generations, computed blocks and model calls."""
        self.runtime.observers.append(observer)

    def remove_observer(self, observer: Observer) -> None:
        self.runtime.observers.remove(observer)

    def reset(self) -> None:
        """Free the cache and end the current generation; the next call starts a new one."""
        self.runtime.reset()

    @contextlib.contextmanager
    def generation(
        self, num_steps: int | None = None, *, schedule_offset: int = 0
    ) -> Iterator[Handle]:
        """Mark one generation on a bare model: fresh cache, known step count.

        Inside it a step is read from the timestep values (same value: next guidance branch;
        new value: next step); a rising timestep, or a step with more calls than the first,
        raises :class:`~blockdance.GenerationError` rather than being misread. For exact
        steps from a diffusers scheduler, attach with ``scheduler=`` instead.

        Args:
            num_steps: Number of denoising steps this run makes (defaults to
                ``attach(num_steps=)``).
            schedule_offset: Where in a longer schedule the run starts: a trajectory resumed
                at step ``k`` of ``s`` is ``generation(num_steps=s - k, schedule_offset=k)``.
                Steps are numbered from 0 over the steps that run, as for an img2img
                pipeline; policies read the offset from
                :attr:`~blockdance.GenerationInfo.schedule_offset`.
        """
        runtime = self.runtime
        runtime.begin_generation(num_steps, schedule_offset)
        try:
            yield self
        finally:
            runtime.reset()

    def end_step(self) -> None:
        """Mark the end of a denoising step in your own sampling loop (bare models).

        From the first mark on, this generation counts steps by these marks: the model
        calls between two marks are one step's guidance branches, whatever their
        timesteps. Use it where timestep values cannot tell steps apart (low-precision
        timesteps, several evaluations per timestep, guidance that switches on or off).
        """
        self.runtime.end_step()

    def remove(self) -> None:
        """Detach: restore every wrapped ``forward`` and free the cache. Idempotent."""
        if self._runtime is not None:
            self.stats  # noqa: B018  (keep the statistics readable after removal)
            self.history  # noqa: B018
            self._runtime.remove()
            self._runtime = None

    @property
    def attached(self) -> bool:
        return self._runtime is not None

    def __enter__(self) -> Handle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def __repr__(self) -> str:
        if self._runtime is None:
            return "<blockdance.Handle (removed)>"
        rt = self._runtime
        return (
            f"<blockdance.Handle policy={rt.policy.name!r} architecture={rt.spec.name!r} "
            f"blocks={len(rt.slots)}>"
        )


def attach(
    model_or_pipeline: Any,
    policy: PolicyLike,
    *,
    architecture: str | None = None,
    num_steps: int | None = None,
    scheduler: Any = None,
    guidance_batch: int | None = None,
    registry: Registry | None = None,
    **options: Any,
) -> Handle:
    """Attach a reuse policy to a model or a diffusers pipeline.

    With a pipeline, each pipeline call is one generation and its steps are counted from
    the pipeline's scheduler. With a bare model, pass the diffusers ``scheduler`` your loop
    drives (exact steps), or use ``handle.generation(num_steps=...)`` (steps read from
    timestep values), or only ``num_steps`` (the fallback rules of docs/concepts.md).

    Args:
        model_or_pipeline: A DiT-family ``nn.Module`` (``torch.compile``d or not) or a
            diffusers pipeline whose ``.transformer`` is one.
        policy: A registered policy kind (``"blockdance"``, ``"none"`` …), a config object,
            a ``{"kind": ...}`` mapping, a JSON file path, or a policy instance.
        architecture: Registered architecture name; default: matched from the model.
        num_steps: Step count for a bare model (a pipeline supplies its own per call).
        scheduler: The diffusers scheduler a bare model's sampling loop drives: its
            ``set_timesteps`` starts a generation and each ``step()`` ends a step.
        guidance_batch: How many copies of each sample a model call stacks in its batch: 2
            when classifier-free guidance runs both branches in one call, 1 when it does not.
            Policies that decide per sample read it (``ModelCall.samples``); a pipeline's
            ``do_classifier_free_guidance`` supplies it when not given.
        registry: Registry to use; default: the installed plugins.
        **options: Policy options when ``policy`` is a kind name (e.g. ``N=3``).

    Returns:
        A :class:`Handle`; use it as a context manager or call ``.remove()``.
    """
    registry = registry or default_registry()
    model, pipeline, scheduler = _resolve_target(model_or_pipeline, scheduler)
    spec = registry.architecture(architecture) if architecture else registry.match(model)
    built = registry.make_policy(policy, **options)
    runtime = Runtime(
        model,
        spec,
        built,
        num_steps=num_steps,
        scheduler=scheduler,
        pipeline=pipeline,
        guidance_batch=guidance_batch,
    )
    return Handle(runtime)
