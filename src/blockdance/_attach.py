"""``attach``: put a policy on a model or a diffusers pipeline and get a handle."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from torch import nn

from blockdance._manager import Registry, default_registry
from blockdance._runtime import Runtime
from blockdance.architecture import ArchitectureSpec, BlockSlot
from blockdance.observer import Observer
from blockdance.policy import Policy, PolicyConfig
from blockdance.stats import GenerationStats

PolicyLike = Policy | PolicyConfig | Mapping[str, Any] | str | Path


def _resolve_target(obj: Any) -> tuple[nn.Module, Any]:
    """The denoiser to hook and, for a pipeline, its scheduler."""
    if isinstance(obj, nn.Module):
        return obj, None
    for attr in ("transformer", "unet"):
        model = getattr(obj, attr, None)
        if isinstance(model, nn.Module):
            scheduler = getattr(obj, "scheduler", None)
            if scheduler is None or not hasattr(scheduler, "set_timesteps"):
                raise TypeError(
                    f"{type(obj).__name__} has a .{attr} but no diffusers scheduler with "
                    "set_timesteps(); attach to the model itself and pass num_steps="
                )
            return model, scheduler
    raise TypeError(
        f"cannot attach to {type(obj).__name__}: expected a torch.nn.Module or a diffusers "
        "pipeline with a .transformer and a .scheduler"
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
    def architecture(self) -> ArchitectureSpec:
        return self._spec

    @property
    def slots(self) -> list[BlockSlot]:
        return list(self._slots)

    @property
    def stats(self) -> GenerationStats:
        """Statistics of the current (or last) generation."""
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
    def generation(self, num_steps: int | None = None) -> Iterator[Handle]:
        """Mark one generation on a bare model: fresh cache, known step count.

        Args:
            num_steps: Number of denoising steps (defaults to ``attach(num_steps=)``).
        """
        runtime = self.runtime
        runtime.begin_generation(num_steps, explicit=True)
        try:
            yield self
        finally:
            runtime.reset()

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
    registry: Registry | None = None,
    **options: Any,
) -> Handle:
    """Attach a reuse policy to a model or a diffusers pipeline.

    Args:
        model_or_pipeline: A DiT-family ``nn.Module`` or a diffusers pipeline whose
            ``.transformer`` is one.
        policy: A registered policy kind (``"blockdance"``, ``"none"`` …), a config object,
            a ``{"kind": ...}`` mapping, a JSON file path, or a policy instance.
        architecture: Registered architecture name; default: matched from the model.
        num_steps: Step count for a bare model (a pipeline supplies its own per call).
        registry: Registry to use; default: the installed plugins.
        **options: Policy options when ``policy`` is a kind name (e.g. ``N=3``).

    Returns:
        A :class:`Handle`; use it as a context manager or call ``.remove()``.
    """
    registry = registry or default_registry()
    model, scheduler = _resolve_target(model_or_pipeline)
    spec = registry.architecture(architecture) if architecture else registry.match(model)
    built = registry.make_policy(policy, **options)
    runtime = Runtime(model, spec, built, num_steps=num_steps, scheduler=scheduler)
    return Handle(runtime)
