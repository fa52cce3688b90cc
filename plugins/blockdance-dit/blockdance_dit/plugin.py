"""The DiT plugin: the reference DiT, diffusers' DiTTransformer2DModel, PixArt-α, HunyuanDiT.

Loaded through the ``blockdance`` entry-point group, like any third-party plugin.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable
from typing import Any

from torch import nn

import blockdance
from blockdance import (
    ArchitectureExample,
    ArchitectureSpec,
    BlockSlot,
    TensorIO,
    diffusers_class,
    lazy,
    module_list_blocks,
    timestep_argument,
)

#: PixArt-α reuses later: 40%-95% of the trajectory (paper); DiT and Open-Sora 25%-95%.
DIT_WINDOW = (0.25, 0.95)
PIXART_WINDOW = (0.40, 0.95)


def _is_reference_dit(model: nn.Module) -> bool:
    module = sys.modules.get("blockdance_dit.model")  # not imported: cannot be a DiT
    return module is not None and isinstance(model, module.DiT)


#: The official DiT model names (blockdance_dit.model.DiT_models), listed here so that
#: building the registry does not import the model code (and timm).
DIT_MODEL_NAMES = tuple(
    f"DiT-{size}/{patch}" for size in ("XL", "L", "B", "S") for patch in (2, 4, 8)
)


def _build_dit(name: str, **kwargs: Any) -> nn.Module:
    from blockdance_dit.model import DiT_models

    return DiT_models[name](**kwargs)


def _example(attr: str) -> Callable[[], ArchitectureExample]:
    return lazy("blockdance_dit.examples", attr)


def _hunyuan_blocks(model: nn.Module) -> list[BlockSlot]:
    """HunyuanDiT's blocks; those whose output the forward keeps for a long skip are side flows.

    ``HunyuanDiT2DModel.forward`` appends the output of every block ``i < depth // 2 - 1``
    to a list that the blocks ``i > depth // 2`` pop (as ``skip=``), U-ViT style.
    """
    slots = module_list_blocks("blocks", TensorIO())(model)
    kept = len(slots) // 2 - 1
    return [dataclasses.replace(slot, side_flow=slot.index < kept) for slot in slots]


REFERENCE_DIT = ArchitectureSpec(
    name="dit",
    description="class-conditional DiT, facebookresearch layout (blockdance_dit.model.DiT)",
    matches=_is_reference_dit,
    blocks=module_list_blocks("blocks", TensorIO(name="x", position=0)),
    timestep=timestep_argument("t"),
    window=DIT_WINDOW,
    example=_example("reference_dit_example"),
)

DIFFUSERS_DIT = ArchitectureSpec(
    name="diffusers-dit",
    description="diffusers DiTTransformer2DModel (DiT-XL/2 pipelines)",
    matches=diffusers_class("DiTTransformer2DModel"),
    blocks=module_list_blocks("transformer_blocks", TensorIO()),
    timestep=timestep_argument("timestep"),
    window=DIT_WINDOW,
    example=_example("diffusers_dit_example"),
)

PIXART_ALPHA = ArchitectureSpec(
    name="pixart-alpha",
    description="diffusers PixArtTransformer2DModel (PixArt-α, PixArt-Σ)",
    matches=diffusers_class("PixArtTransformer2DModel"),
    blocks=module_list_blocks("transformer_blocks", TensorIO()),
    timestep=timestep_argument("timestep"),
    window=PIXART_WINDOW,
    example=_example("pixart_example"),
)

HUNYUAN_DIT = ArchitectureSpec(
    name="hunyuan-dit",
    description="diffusers HunyuanDiT2DModel: DiT blocks with U-ViT long skips (side flows)",
    matches=diffusers_class("HunyuanDiT2DModel"),
    blocks=_hunyuan_blocks,
    timestep=timestep_argument("timestep"),
    window=DIT_WINDOW,
    example=_example("hunyuan_dit_example"),
)


@blockdance.hookimpl
def blockdance_register_architectures(register: Callable[[ArchitectureSpec], None]) -> None:
    register(REFERENCE_DIT)
    register(DIFFUSERS_DIT)
    register(PIXART_ALPHA)
    register(HUNYUAN_DIT)


@blockdance.hookimpl
def blockdance_register_models(register: Callable[[str, Callable[..., nn.Module]], None]) -> None:
    for name in DIT_MODEL_NAMES:
        register(name, functools.partial(_build_dit, name))
