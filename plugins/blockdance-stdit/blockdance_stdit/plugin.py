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

from collections.abc import Callable

from torch import nn

import blockdance
from blockdance import (
    ArchitectureSpec,
    BlockList,
    InterleavedSpec,
    TensorIO,
    call_argument,
    diffusers_class,
    imported_class,
    interleaved_blocks,
    lazy,
    lazy_example,
    module_list_blocks,
)

#: Open-Sora (paper): reuse window 25%-95% of the steps; Latte borrows it. The paper samples
#: Open-Sora with DDIM, 100 steps.
STDIT_WINDOW = (0.25, 0.95)

#: The official STDiT model names (blockdance_stdit.model.STDiT_models) and their factories.
STDIT_MODELS = {"STDiT-XL/2": "STDiT_XL_2"}
STDIT_MODEL_NAMES = tuple(STDIT_MODELS)

EXAMPLES = "blockdance_stdit.examples"

REFERENCE_STDIT = ArchitectureSpec(
    name="stdit",
    description="Open-Sora v1 STDiT (blockdance_stdit.model.STDiT): spatial+temporal blocks",
    # the reference STDiT, or Open-Sora's own when it is imported (same layout)
    matches=imported_class("blockdance_stdit.model.STDiT", "opensora.models.stdit.stdit.STDiT"),
    blocks=module_list_blocks("blocks", TensorIO(name="x", position=0), kind="spatial-temporal"),
    timestep=call_argument("timestep"),
    latent=call_argument("x"),
    condition=call_argument("y"),
    window=STDIT_WINDOW,
    example=lazy_example(EXAMPLES, "tiny_stdit", "stdit_call"),
)

LATTE = InterleavedSpec(
    name="latte",
    description="diffusers LatteTransformer3DModel: spatial and temporal blocks interleaved",
    matches=diffusers_class("LatteTransformer3DModel"),
    blocks=interleaved_blocks(
        BlockList("transformer_blocks", TensorIO(), kind="spatial"),
        BlockList("temporal_transformer_blocks", TensorIO(), kind="temporal"),
    ),
    timestep=call_argument("timestep"),
    latent=call_argument("hidden_states"),
    condition=call_argument("encoder_hidden_states"),
    window=STDIT_WINDOW,
    example=lazy_example(EXAMPLES, "tiny_latte", "latte_call"),
)


@blockdance.hookimpl
def blockdance_register_architectures(register: Callable[[ArchitectureSpec], None]) -> None:
    register(REFERENCE_STDIT)
    register(LATTE)


@blockdance.hookimpl
def blockdance_register_models(register: Callable[[str, Callable[..., nn.Module]], None]) -> None:
    for name, factory in STDIT_MODELS.items():
        register(name, lazy("blockdance_stdit.model", factory))
