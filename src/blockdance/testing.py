"""Checks a plugin author runs on their own model (pytest or plain asserts).

Example::

    from blockdance.testing import ArchitectureChecks

    def test_my_plugin():
        checks = ArchitectureChecks(build=make_tiny_model, call=one_step)
        checks.run_all()

``call(model, t)`` runs one denoising step of the model at integer timestep ``t`` on
inputs that depend only on ``t`` (so runs are repeatable) and returns a tensor.

A registry of exactly the plugins under test (no installed entry points; the built-in
policies included), with misspelt hook implementations refused::

    from blockdance.testing import make_registry

    registry = make_registry(MyPlugin(), ("my-policies", my_policies_module))
    with blockdance.attach(model, "blockdance", registry=registry) as handle:
        ...
"""

from __future__ import annotations

import contextlib
import inspect
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeVar

import torch
from torch import nn

from blockdance._attach import attach
from blockdance._manager import Registry, default_registry, get_plugin_manager
from blockdance.architecture import ArchitectureSpec, BlockSlot
from blockdance.errors import AlreadyAttachedError

M = TypeVar("M", bound=nn.Module)


def _copy(value: Any) -> Any:
    """A block output with its tensors cloned (a tuple of streams stays a tuple)."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple):
        return tuple(_copy(v) for v in value)
    return value


@contextlib.contextmanager
def _forward_hooks(slots: list[Any], make: Callable[[int], Callable[..., Any]]) -> Iterator[None]:
    """Forward hooks on the slots' modules for the duration of the block."""
    handles = [slot.module.register_forward_hook(make(slot.index)) for slot in slots]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def trajectory(num_steps: int) -> list[int]:
    """Descending integer timesteps from 999 to 0, like a DDIM schedule."""
    return [int(t) for t in torch.linspace(999, 0, num_steps).round()]


def seeded_model(build: Callable[..., M], /, seed: int = 0, **config: Any) -> M:
    """``build(**config)`` in eval mode, built right after seeding torch's global generator.

    The same seed gives the same weights, so an example's ``build`` returns twins.

    Args:
        build: A model class or factory.
        seed: Seed of the initialisation.
        **config: The model's arguments.
    """
    torch.manual_seed(seed)
    return build(**config).eval()


def make_registry(*plugins: object | tuple[str, object], autoload: bool = False) -> Registry:
    """A fresh registry holding the built-in policies and ``plugins``.

    The plugin manager comes from :func:`blockdance.get_plugin_manager` (built-in policies
    registered, installed entry points only with ``autoload=True``); each plugin is
    registered, then ``check_pending()`` refuses hook implementations that match no hook
    (a misspelt name raises ``pluggy.PluginValidationError``).

    Args:
        *plugins: Modules or objects with ``@blockdance.hookimpl`` functions, named by
            pluggy's canonical name, or ``(name, plugin)`` pairs.
        autoload: Also load the installed ``blockdance`` entry-point plugins.
    """
    pm = get_plugin_manager(autoload=autoload)
    for entry in plugins:
        name, plugin = entry if isinstance(entry, tuple) else (None, entry)
        pm.register(plugin, name=name)
    pm.check_pending()
    return Registry(pm)


def blockdance_reuse_steps(window: tuple[float, float], num_steps: int, n: int) -> list[int]:
    """The steps BlockDance reuses, computed apart from the policy's own arithmetic.

    The window is read as the decimals written (``0.35`` is 35/100, not the nearest binary
    float), and a step ``i`` is inside when ``start <= i / num_steps < end`` in exact
    fractions. Inside, every step but the first of each group of ``n`` reuses.

    Args:
        window: ``(start, end)`` fractions of the trajectory.
        num_steps: Number of denoising steps.
        n: BlockDance's group size ``N``.
    """
    start, end = (Fraction(str(float(f))) for f in window)
    inside = [i for i in range(num_steps) if start <= Fraction(i, num_steps) < end]
    return [step for position, step in enumerate(inside) if position % n]


def count_block_calls(slots: Iterable[BlockSlot]) -> Counter[int]:
    """Count the real executions of each block, by slot index.

    Wraps each slot's ``forward`` before ``attach`` (call it first): the runtime then wraps
    the counter, so a block it reuses is not executed and not counted. An independent
    witness that a REUSE skips compute, beside the runtime's own statistics.

    Args:
        slots: The model's block slots (``spec.blocks(model)``).

    Returns:
        A counter that fills as the model runs.
    """
    counts: Counter[int] = Counter()
    for slot in slots:
        original = slot.module.forward

        def counted(*args: Any, _i: int = slot.index, _f: Any = original, **kw: Any) -> Any:
            counts[_i] += 1
            return _f(*args, **kw)

        slot.module.forward = counted
    return counts


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
        """BlockDance reuses exactly its schedule, and reused blocks do not run.

        The expected schedule comes from :func:`blockdance_reuse_steps`, not from the
        policy's code, so an error in the policy's window arithmetic fails the check.
        """
        model = self.build()
        slots = self._slots(model)
        counts = count_block_calls(slots)
        with self._attach(model, "blockdance", N=n) as handle:
            spec = handle.architecture
            self._run(model)
        boundary = spec.default_boundary(len(slots))
        reuse_steps = blockdance_reuse_steps(spec.window, self.num_steps, n)
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

    def check_reuse_matches_frozen_outputs(self) -> None:
        """A reuse step gives what the model gives with the reused blocks' outputs frozen.

        Runs two adjacent steps under blockdance, computing the first and reusing blocks
        ``0..boundary`` (the architecture's default boundary) at the second, and compares
        the second output with a reference built *without* blockdance: the unhooked model
        at the second timestep, with forward hooks replacing each of those blocks' outputs
        by its output at the first. Every consumer of a reused block's output must get the
        cache step's output — the next block, and any side flow (a long-skip list, a stream
        merge) the model's own code keeps — or the outputs differ. The check also asserts
        that reuse changed the output, so it cannot pass vacuously.
        """
        model = self.build()
        slots = self._slots(model)
        boundary = self._spec(model).default_boundary(len(slots))
        frozen = [slot for slot in slots if slot.index <= boundary]
        middle = self.num_steps // 2
        t0, t1 = trajectory(self.num_steps)[middle : middle + 2]
        outputs: dict[int, Any] = {}

        def record(index: int) -> Callable[..., None]:
            return lambda module, args, out: outputs.__setitem__(index, _copy(out))

        def replay(index: int) -> Callable[..., Any]:
            return lambda module, args, out: _copy(outputs[index])

        with torch.no_grad():
            with _forward_hooks(frozen, record):
                self.call(model, t0)
            with _forward_hooks(frozen, replay):
                want = self.call(model, t1)
            full = self.call(model, t1)
        reuse = {1: [f"0-{boundary}"]}
        handle = self._attach(model, "schedule", reuse=reuse)
        try:
            with handle.generation(num_steps=2), torch.no_grad():
                self.call(model, t0)
                got = self.call(model, t1)
        finally:
            handle.remove()
        expected = {(1, slot.index) for slot in frozen}
        reused = handle.stats.reused_pairs()
        assert reused == expected, f"reused {sorted(reused)}, expected {sorted(expected)}"
        assert not torch.allclose(full, want), (
            f"reusing blocks 0..{boundary} changed nothing at the second step; the check would "
            "pass vacuously: make the example's blocks matter (perturb zero-initialised weights)"
        )
        difference = (got - want).abs().max().item()
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), (
            f"the reuse step differs from the model with blocks 0..{boundary} frozen at the "
            f"cache step (max |difference| {difference:.3g}). A reused block's output is "
            "consumed somewhere other than the next block (a long-skip list, a stream merge) "
            "and that consumer got the block's input passed through instead: mark the slot "
            "side_flow=True in the architecture's blocks()."
        )

    def _spec(self, model: nn.Module) -> ArchitectureSpec:
        registry = self.registry or default_registry()
        return (
            registry.architecture(self.architecture) if self.architecture else registry.match(model)
        )

    def _slots(self, model: nn.Module) -> list[Any]:
        return list(self._spec(model).blocks(model))

    def run_all(self) -> None:
        """Every check above."""
        self.check_identity_under_none()
        self.check_remove_restores()
        self.check_attach_twice_raises()
        for n in (2, 3):
            self.check_blockdance_schedule(n)
        self.check_reuse_matches_frozen_outputs()

    @classmethod
    def for_architecture(
        cls, spec: ArchitectureSpec, registry: Registry | None = None, num_steps: int = 12
    ) -> ArchitectureChecks:
        """The checks on the tiny instance a spec provides (``ArchitectureSpec.example``).

        Args:
            spec: A registered architecture with an ``example``.
            registry: The registry it is registered in (default: installed plugins).
            num_steps: Length of the test trajectory.
        """
        if spec.example is None:
            raise ValueError(
                f"architecture {spec.name!r} has no example; give its ArchitectureSpec an "
                "example=... returning ArchitectureExample(build=..., call=...)"
            )
        example = spec.example()
        return cls(
            build=example.build,
            call=example.call,
            num_steps=num_steps,
            registry=registry,
            architecture=spec.name,
        )
