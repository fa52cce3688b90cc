"""Observers: see what the runtime sees without deciding anything.

An observer is told when a generation starts, after each computed block, and after
each top-level model call. Analysis tools (similarity traces, calibration) are
observers; they run beside any policy, usually ``none``.
"""

from __future__ import annotations

from typing import Any

from blockdance.policy import GenerationInfo, StepContext


class Observer:
    """Base class with no-op callbacks; override the ones you need."""

    def on_generation(self, info: GenerationInfo) -> None:
        """A generation starts (the cache is empty, the step count is ``info.num_steps``)."""

    def on_block(self, ctx: StepContext, slot: int, output: Any) -> None:
        """Block ``slot`` computed at ``ctx`` and returned ``output`` (reused blocks are not
        reported)."""

    def on_model(
        self, ctx: StepContext, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        """The top-level model returned ``output`` for the call ``(args, kwargs)``."""
