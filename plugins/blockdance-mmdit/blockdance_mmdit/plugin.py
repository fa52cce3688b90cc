"""The MMDiT plugin: diffusers' SD3, Flux and HiDream-I1 transformers.

Loaded through the ``blockdance`` entry-point group, like any third-party plugin. The
specs read the timestep from the argument the pipelines pass (SD3: ``timestep``,
flow-matching timesteps from 1000 down; Flux: the same divided by 1000; HiDream:
``timesteps``, from 1000 down). Defaults are the paper's DiT choice scaled to depth
(docs/mmdit.md); validate them with ``blockdance calibrate``.
"""

from __future__ import annotations

from collections.abc import Callable

import blockdance
from blockdance import ArchitectureSpec, diffusers_spec, lazy_example
from blockdance_mmdit.streams import flux_blocks, hidream_blocks, sd3_blocks

#: The paper's DiT and Open-Sora window (25%-95% of the steps). On the tiny SD3
#: (sd3-tiny-shapes, 8 joint blocks) `blockdance calibrate` kept it with the scaled boundary
#: at N=2 and preferred boundary 6 with 24%-88% at N=3 (docs/analysis.md); full-size SD3,
#: Flux and HiDream are not measured.
MMDIT_WINDOW = (0.25, 0.95)

EXAMPLES = "blockdance_mmdit.examples"

SD3 = diffusers_spec(
    "sd3",
    "SD3Transformer2DModel",
    sd3_blocks,
    description="diffusers SD3Transformer2DModel (SD3, SD3.5): joint two-stream blocks",
    condition="pooled_projections",
    window=MMDIT_WINDOW,
    example=lazy_example(EXAMPLES, "tiny_sd3", "sd3_call"),
)

FLUX = diffusers_spec(
    "flux",
    "FluxTransformer2DModel",
    flux_blocks,
    description="diffusers FluxTransformer2DModel: double-stream then single-stream blocks",
    condition="pooled_projections",
    window=MMDIT_WINDOW,
    example=lazy_example(EXAMPLES, "tiny_flux", "flux_call"),
)

HIDREAM = diffusers_spec(
    "hidream",
    "HiDreamImageTransformer2DModel",
    hidream_blocks,
    description="diffusers HiDreamImageTransformer2DModel: double-stream then joined "
    "single-stream blocks",
    window=MMDIT_WINDOW,
    timestep="timesteps",
    condition="pooled_embeds",
    example=lazy_example(EXAMPLES, "tiny_hidream", "hidream_call"),
)


@blockdance.hookimpl
def blockdance_register_architectures(register: Callable[[ArchitectureSpec], None]) -> None:
    for spec in (SD3, FLUX, HIDREAM):
        register(spec)
