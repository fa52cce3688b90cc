"""Checks a plugin author runs on their own model (pytest or plain asserts).

Example::

    from blockdance.testing import ArchitectureChecks

    def test_my_plugin():
        checks = ArchitectureChecks(build=make_tiny_model, call=one_step)
        checks.run_all()

``call(model, t)`` runs one denoising step of the model at integer timestep ``t`` on
inputs that depend only on ``t`` (so runs are repeatable) and returns a tensor.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from blockdance._attach import attach
from blockdance._manager import Registry, default_registry
from blockdance.errors import AlreadyAttachedError
from blockdance.policies.blockdance import window_steps


def trajectory(num_steps: int) -> list[int]:
    """Descending integer timesteps from 999 to 0, like a DDIM schedule."""
    return [int(t) for t in torch.linspace(999, 0, num_steps).round()]


@dataclass
class ArchitectureChecks:
    """The contract every architecture plugin must keep, run on a small instance.

    Args:
        build: Returns a fresh small model of the architecture (eval mode).
        call: ``call(model, t)`` runs one model call at timestep ``t`` and returns a tensor.
        num_steps: Length of the test trajectory.
        registry: Registry holding the plugin (default: installed plugins).
        architecture: Architecture name, when matching is not wanted.
    """

    build: Callable[[], nn.Module]
    call: Callable[[nn.Module, int], torch.Tensor]
    num_steps: int = 12
    registry: Registry | None = None
    architecture: str | None = None

    def _attach(self, model: nn.Module, policy: Any, **options: Any) -> Any:
        return attach(
            model,
            policy,
            architecture=self.architecture,
            num_steps=self.num_steps,
            registry=self.registry or default_registry(),
            **options,
        )

    def _run(self, model: nn.Module) -> list[torch.Tensor]:
        with torch.no_grad():
            return [self.call(model, t) for t in trajectory(self.num_steps)]

    def check_identity_under_none(self) -> None:
        """The ``none`` policy leaves every output bit-identical."""
        model = self.build()
        ref = self._run(model)
        with self._attach(model, "none") as handle:
            got = self._run(model)
        for step, (a, b) in enumerate(zip(ref, got)):
            assert torch.equal(a, b), f"output differs under 'none' at step {step}"
        assert handle.stats.block_calls > 0, "no block was seen: check the spec's blocks()"

    def check_remove_restores(self) -> None:
        """Removal restores every ``forward`` exactly; signatures are kept while attached."""
        model = self.build()
        modules = [model, *(slot.module for slot in self._slots(model))]
        before = [(inspect.signature(m.forward), "forward" in vars(m)) for m in modules]
        handle = self._attach(model, "none")
        for m, (sig, _) in zip(modules, before):
            assert inspect.signature(m.forward) == sig, f"{type(m).__name__} lost its signature"
        handle.remove()
        for m, (_, had) in zip(modules, before):
            assert ("forward" in vars(m)) == had, f"{type(m).__name__}.forward not restored"

    def check_attach_twice_raises(self) -> None:
        """A second attach on the same model is refused."""
        model = self.build()
        with self._attach(model, "none"):
            try:
                self._attach(model, "none")
            except AlreadyAttachedError:
                return
        raise AssertionError("attaching twice did not raise AlreadyAttachedError")

    def check_blockdance_schedule(self, n: int = 2) -> None:
        """BlockDance reuses exactly its schedule, and reused blocks do not run."""
        model = self.build()
        slots = self._slots(model)
        counts: Counter[int] = Counter()
        for slot in slots:
            original = slot.module.forward

            def counted(*args: Any, _i: int = slot.index, _f: Any = original, **kw: Any) -> Any:
                counts[_i] += 1
                return _f(*args, **kw)

            slot.module.forward = counted
        with self._attach(model, "blockdance", N=n) as handle:
            spec = handle.architecture
            self._run(model)
        boundary = spec.default_boundary(len(slots))
        steps = window_steps(spec.window, self.num_steps)
        reuse_steps = [s for s in steps if (s - steps.start) % n]
        expected = {(s, b) for s in reuse_steps for b in range(boundary + 1)}
        got = handle.stats.reused_pairs()
        assert got == expected, f"reused {sorted(got)}, expected {sorted(expected)}"
        calls_per_step = handle.stats.branches
        for slot in slots:
            skipped = len(reuse_steps) if slot.index <= boundary else 0
            want = (self.num_steps - skipped) * calls_per_step
            assert counts[slot.index] == want, (
                f"block {slot.index} ran {counts[slot.index]} times, expected {want}"
            )

    def _slots(self, model: nn.Module) -> list[Any]:
        registry = self.registry or default_registry()
        spec = (
            registry.architecture(self.architecture) if self.architecture else registry.match(model)
        )
        return list(spec.blocks(model))

    def run_all(self) -> None:
        """Every check above."""
        self.check_identity_under_none()
        self.check_remove_restores()
        self.check_attach_twice_raises()
        for n in (2, 3):
            self.check_blockdance_schedule(n)
