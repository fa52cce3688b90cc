"""The DiT plugin: the reference DiT, diffusers' DiTTransformer2DModel, PixArt-α, HunyuanDiT.

Loaded through the ``blockdance`` entry-point group, like any third-party plugin. Nothing
here imports the model code (timm) or diffusers: the examples and the model factories are
imported when first used.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

import blockdance
from blockdance import (
    ArchitectureSpec,
    BlockList,
    TensorIO,
    call_argument,
    diffusers_spec,
    imported_class,
    lazy,
    lazy_example,
    module_list_blocks,
    module_lists_blocks,
)

#: PixArt-α reuses later: 40%-95% of the trajectory (paper); DiT and Open-Sora 25%-95%.
DIT_WINDOW = (0.25, 0.95)
PIXART_WINDOW = (0.40, 0.95)

#: The official DiT model names (blockdance_dit.model.DiT_models) and their factories there.
DIT_MODELS = {
    f"DiT-{size}/{patch}": f"DiT_{size}_{patch}"
    for size in ("XL", "L", "B", "S")
    for patch in (2, 4, 8)
}
DIT_MODEL_NAMES = tuple(DIT_MODELS)

EXAMPLES = "blockdance_dit.examples"
DIFFUSERS_BLOCKS = module_list_blocks("transformer_blocks", TensorIO())

REFERENCE_DIT = ArchitectureSpec(
    name="dit",
    description="class-conditional DiT, facebookresearch layout (blockdance_dit.model.DiT)",
    matches=imported_class("blockdance_dit.model.DiT"),
    blocks=module_list_blocks("blocks", TensorIO(name="x", position=0)),
    timestep=call_argument("t"),
    latent=call_argument("x"),
    condition=call_argument("y"),
    window=DIT_WINDOW,
    example=lazy_example(EXAMPLES, "tiny_reference_dit", "reference_dit_call"),
)

DIFFUSERS_DIT = diffusers_spec(
    "diffusers-dit",
    "DiTTransformer2DModel",
    DIFFUSERS_BLOCKS,
    description="diffusers DiTTransformer2DModel (DiT-XL/2 pipelines)",
    condition="class_labels",
    example=lazy_example(EXAMPLES, "tiny_diffusers_dit", "diffusers_dit_call"),
)

PIXART_ALPHA = diffusers_spec(
    "pixart-alpha",
    "PixArtTransformer2DModel",
    DIFFUSERS_BLOCKS,
    description="diffusers PixArtTransformer2DModel (PixArt-α, PixArt-Σ)",
    condition="encoder_hidden_states",
    window=PIXART_WINDOW,
    example=lazy_example(EXAMPLES, "tiny_pixart", "pixart_call"),
)

#: ``HunyuanDiT2DModel.forward`` appends the output of every block ``i < depth // 2 - 1`` to
#: a list that the blocks ``i > depth // 2`` pop (as ``skip=``), U-ViT style: side flows.
HUNYUAN_DIT = diffusers_spec(
    "hunyuan-dit",
    "HunyuanDiT2DModel",
    module_lists_blocks(BlockList("blocks", TensorIO(), side_flow=lambda i, n: i < n // 2 - 1)),
    description="diffusers HunyuanDiT2DModel: DiT blocks with U-ViT long skips (side flows)",
    condition="encoder_hidden_states",
    example=lazy_example(EXAMPLES, "tiny_hunyuan_dit", "hunyuan_dit_call"),
)


@blockdance.hookimpl
def blockdance_register_architectures(register: Callable[[ArchitectureSpec], None]) -> None:
    for spec in (REFERENCE_DIT, DIFFUSERS_DIT, PIXART_ALPHA, HUNYUAN_DIT):
        register(spec)


@blockdance.hookimpl
def blockdance_register_models(register: Callable[[str, Callable[..., nn.Module]], None]) -> None:
    for name, factory in DIT_MODELS.items():
        register(name, lazy("blockdance_dit.model", factory))
