"""A tiny denoiser with a plain block list, and a test plugin describing it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch
from torch import nn

import blockdance
from blockdance import (
    ArchitectureSpec,
    TensorIO,
    call_argument,
    module_list_blocks,
    timestep_argument,
)
from blockdance.testing import make_registry


class ToyBlock(nn.Module):
    """x + tanh(W x) * c."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.lin(x)) * c


class ToyDenoiser(nn.Module):
    """Embeds t, runs the blocks, projects back."""

    def __init__(self, depth: int = 8, dim: int = 16) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ToyBlock(dim) for _ in range(depth))
        self.t_proj = nn.Linear(1, dim)
        self.head = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tf = t.reshape(-1, 1).to(self.t_proj.weight.dtype) / 1000  # (N, 1)
        c = torch.sigmoid(self.t_proj(tf))[:, None, :]  # (N, 1, D)
        for block in self.blocks:
            x = block(x, c)
        return self.head(x)


TOY_SPEC = ArchitectureSpec(
    name="toy",
    description="test denoiser (tests/toymodel.py)",
    matches=lambda m: isinstance(m, ToyDenoiser),
    blocks=module_list_blocks("blocks", TensorIO(name="x")),
    timestep=timestep_argument("t"),
    latent=call_argument("x"),
    window=(0.25, 0.95),
)


class SpecsPlugin:
    """A plugin registering the architecture specs it is given."""

    def __init__(self, *specs: ArchitectureSpec) -> None:
        self.specs = specs

    @blockdance.hookimpl
    def blockdance_register_architectures(
        self, register: Callable[[ArchitectureSpec], None]
    ) -> None:
        for spec in self.specs:
            register(spec)


class ToyPlugin(SpecsPlugin):
    """Registers the toy architecture."""

    def __init__(self) -> None:
        super().__init__(TOY_SPEC)


def toy_registry() -> blockdance.Registry:
    """The built-in policies and the toy architecture, no installed plugin."""
    return make_registry(("toy-plugin", ToyPlugin()))


def registry_of(*specs: ArchitectureSpec) -> blockdance.Registry:
    """The built-in policies and ``specs``, no installed plugin."""
    return make_registry(SpecsPlugin(*specs))


def timesteps(num_steps: int) -> list[int]:
    """Descending integer timesteps like a DDIM schedule."""
    return [int(t) for t in torch.linspace(999, 0, num_steps).round()]


def run(
    model: nn.Module,
    x: torch.Tensor,
    num_steps: int,
    update: Callable | None = None,
    *,
    stop: int | None = None,
) -> list[torch.Tensor]:
    """A fake sampling loop: one call per step, outputs of every step.

    Args:
        stop: Run only the first ``stop`` steps of the ``num_steps`` schedule.
    """
    outs = []
    with torch.no_grad():
        for t in timesteps(num_steps)[:stop]:
            tt = torch.full((x.shape[0],), t)
            out = model(x, tt)
            outs.append(out)
            x = x - 0.05 * out if update is None else update(x, out)
    return outs


def run_by_hand(
    model: nn.Module,
    x: torch.Tensor,
    num_steps: int,
    boundary: int,
    front: Callable[[int, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]], torch.Tensor],
) -> list[torch.Tensor]:
    """:func:`run` of a toy-shaped model (``t_proj``, ``blocks``, ``head``) written out by hand.

    No blockdance: the conditioning, the blocks after ``boundary`` and the head are computed
    here as the model's forward does. What enters block ``boundary + 1`` at each step is
    ``front(step, x, compute)``, where ``compute(h)`` runs blocks ``0..boundary`` on ``h``:
    a test computes it, or gives what a policy should have kept.
    """

    def through(h: torch.Tensor, blocks: nn.Module, c: torch.Tensor) -> torch.Tensor:
        for block in blocks:
            h = block(h, c)
        return h

    front_blocks, rest = model.blocks[: boundary + 1], model.blocks[boundary + 1 :]
    outs = []
    with torch.no_grad():
        for step, t in enumerate(timesteps(num_steps)):
            tf = torch.full((x.shape[0], 1), float(t)) / 1000  # (N, 1)
            c = torch.sigmoid(model.t_proj(tf))[:, None, :]  # (N, 1, D)
            h = front(step, x, lambda h, c=c: through(h, front_blocks, c))
            out = model.head(through(h, rest, c))
            outs.append(out)
            x = x - 0.05 * out
    return outs


def count_computes(model: ToyDenoiser) -> Counter[int]:
    """Wrap each block's forward (before attach) to count real executions."""
    counts: Counter[int] = Counter()
    for i, block in enumerate(model.blocks):
        original = block.forward

        def counted(x: torch.Tensor, c: torch.Tensor, i: int = i, f=original) -> torch.Tensor:
            counts[i] += 1
            return f(x, c)

        block.forward = counted
    return counts
