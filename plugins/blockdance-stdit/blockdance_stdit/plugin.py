"""The STDiT plugin: Open-Sora's STDiT and diffusers' LatteTransformer3DModel (video).

Loaded through the ``blockdance`` entry-point group, like any third-party plugin.

An Open-Sora v1 STDiT block holds both its spatial and its temporal attention, so the 28
blocks of STDiT-XL/2 are 28 slots (kind ``"spatial-temporal"``) and the paper's boundary,
block 20 of 28, applies as is. Latte keeps them apart: ``transformer_blocks[i]`` (spatial,
tokens (B * F, S, D)) and ``temporal_transformer_blocks[i]`` (temporal, (B * S, F, D))
run alternately, the model's forward reshaping the hidden states between them. Its slots
are in execution order (spatial 0, temporal 0, spatial 1, …) and the default boundary ends
a (spatial, temporal) pair. Reuse is exact across the reshapes because every block keeps
its input's shape: a skipped slot returns its input, and a reused boundary slot returns
the state it produced at the cache step, in its own layout, which the model then reshapes
as usual. Latte called with ``enable_temporal_attentions=False`` skips its temporal slots;
a policy whose boundary is a temporal slot then fails with a ``ReuseError``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

import blockdance
from blockdance import (
    ArchitectureExample,
    ArchitectureSpec,
    BlockIO,
    BlockSlot,
    TensorIO,
    default_boundary,
    diffusers_class,
    lazy,
    module_list_blocks,
    timestep_argument,
)

#: Open-Sora (paper): reuse window 25%-95% of the steps; Latte borrows it. The paper samples
#: Open-Sora with DDIM, 100 steps.
STDIT_WINDOW = (0.25, 0.95)

#: The official STDiT model names (blockdance_stdit.model.STDiT_models), listed here so
#: that building the registry does not import the model code (and timm).
STDIT_MODEL_NAMES = ("STDiT-XL/2",)


def _example(attr: str) -> Callable[[], ArchitectureExample]:
    return lazy("blockdance_stdit.examples", attr)


def _is_stdit(model: nn.Module) -> bool:
    """The reference STDiT, or Open-Sora's own when it is imported (same layout)."""
    for name in ("blockdance_stdit.model", "opensora.models.stdit.stdit"):
        module = sys.modules.get(name)  # not imported: cannot be an instance
        cls = getattr(module, "STDiT", None)
        if cls is not None and isinstance(model, cls):
            return True
    return False


@dataclass(frozen=True)
class InterleavedSpec(ArchitectureSpec):
    """An architecture whose slots alternate spatial and temporal blocks, pair by pair.

    The default boundary is the temporal slot that ends pair ``default_boundary(pairs)``,
    so the paper's "block 20 of 28" is slot 41 of 56 (temporal block 20).
    """

    def default_boundary(self, num_blocks: int) -> int:
        """Index of the slot ending the last structural pair, for ``num_blocks`` slots."""
        if num_blocks % 2 or num_blocks < 4:
            return super().default_boundary(num_blocks)
        return 2 * default_boundary(num_blocks // 2, self.boundary_fraction) + 1


def interleaved_blocks(
    spatial: str, temporal: str, io: BlockIO
) -> Callable[[nn.Module], list[BlockSlot]]:
    """Slots spatial 0, temporal 0, spatial 1, … from two ``nn.ModuleList`` attributes.

    Args:
        spatial: Attribute holding the spatial blocks (dotted paths allowed).
        temporal: Attribute holding the temporal blocks, one per spatial block.
        io: How every block reads and returns its hidden state.
    """

    def blocks(model: nn.Module) -> list[BlockSlot]:
        lists: list[nn.ModuleList] = []
        for attr in (spatial, temporal):
            modules = model.get_submodule(attr)
            if not isinstance(modules, nn.ModuleList):
                raise TypeError(f"{type(model).__name__}.{attr} is not an nn.ModuleList")
            lists.append(modules)
        if len(lists[0]) != len(lists[1]):
            raise ValueError(
                f"{type(model).__name__} has {len(lists[0])} {spatial} but {len(lists[1])} "
                f"{temporal}; interleaved slots need one temporal block per spatial block"
            )
        slots = []
        for i, pair in enumerate(zip(*lists)):
            for j, (attr, kind) in enumerate(((spatial, "spatial"), (temporal, "temporal"))):
                slots.append(
                    BlockSlot(index=2 * i + j, module=pair[j], io=io, kind=kind, name=f"{attr}.{i}")
                )
        return slots

    return blocks


REFERENCE_STDIT = ArchitectureSpec(
    name="stdit",
    description="Open-Sora v1 STDiT (blockdance_stdit.model.STDiT): spatial+temporal blocks",
    matches=_is_stdit,
    blocks=module_list_blocks("blocks", TensorIO(name="x", position=0), kind="spatial-temporal"),
    timestep=timestep_argument("timestep"),
    window=STDIT_WINDOW,
    example=_example("stdit_example"),
)

LATTE = InterleavedSpec(
    name="latte",
    description="diffusers LatteTransformer3DModel: spatial and temporal blocks interleaved",
    matches=diffusers_class("LatteTransformer3DModel"),
    blocks=interleaved_blocks("transformer_blocks", "temporal_transformer_blocks", TensorIO()),
    timestep=timestep_argument("timestep"),
    window=STDIT_WINDOW,
    example=_example("latte_example"),
)


def _build_stdit(name: str, **kwargs: Any) -> nn.Module:
    from blockdance_stdit.model import STDiT_models

    return STDiT_models[name](**kwargs)


@blockdance.hookimpl
def blockdance_register_architectures(register: Callable[[ArchitectureSpec], None]) -> None:
    register(REFERENCE_STDIT)
    register(LATTE)


@blockdance.hookimpl
def blockdance_register_models(register: Callable[[str, Callable[..., nn.Module]], None]) -> None:
    for name in STDIT_MODEL_NAMES:
        register(name, functools.partial(_build_stdit, name))
