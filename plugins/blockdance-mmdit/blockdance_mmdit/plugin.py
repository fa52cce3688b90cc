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
from blockdance import (
    ArchitectureExample,
    ArchitectureSpec,
    diffusers_class,
    lazy,
    timestep_argument,
)
from blockdance_mmdit.streams import flux_blocks, hidream_blocks, sd3_blocks

#: The paper's DiT and Open-Sora window (25%-95% of the steps). On the tiny SD3
#: (sd3-tiny-shapes, 8 joint blocks) `blockdance calibrate` kept it with the scaled boundary
#: at N=2 and preferred boundary 6 with 24%-88% at N=3 (docs/analysis.md); full-size SD3,
#: Flux and HiDream are not measured.
MMDIT_WINDOW = (0.25, 0.95)


def _example(attr: str) -> Callable[[], ArchitectureExample]:
    return lazy("blockdance_mmdit.examples", attr)


SD3 = ArchitectureSpec(
    name="sd3",
    description="diffusers SD3Transformer2DModel (SD3, SD3.5): joint two-stream blocks",
    matches=diffusers_class("SD3Transformer2DModel"),
    blocks=sd3_blocks,
    timestep=timestep_argument("timestep"),
    window=MMDIT_WINDOW,
    example=_example("sd3_example"),
)

FLUX = ArchitectureSpec(
    name="flux",
    description="diffusers FluxTransformer2DModel: double-stream then single-stream blocks",
    matches=diffusers_class("FluxTransformer2DModel"),
    blocks=flux_blocks,
    timestep=timestep_argument("timestep"),
    window=MMDIT_WINDOW,
    example=_example("flux_example"),
)

HIDREAM = ArchitectureSpec(
    name="hidream",
    description="diffusers HiDreamImageTransformer2DModel: double-stream then joined "
    "single-stream blocks",
    matches=diffusers_class("HiDreamImageTransformer2DModel"),
    blocks=hidream_blocks,
    timestep=timestep_argument("timesteps"),
    window=MMDIT_WINDOW,
    example=_example("hidream_example"),
)


@blockdance.hookimpl
def blockdance_register_architectures(register: Callable[[ArchitectureSpec], None]) -> None:
    register(SD3)
    register(FLUX)
    register(HIDREAM)
