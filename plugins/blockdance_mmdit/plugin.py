"""The MMDiT plugin: diffusers' SD3Transformer2DModel and FluxTransformer2DModel.

Loaded through the ``blockdance`` entry-point group, like any third-party plugin. Both
specs read the timestep from the ``timestep`` argument that the pipelines pass (SD3:
flow-matching timesteps from 1000 down; Flux: the same divided by 1000). Defaults are the
paper's DiT choice scaled to depth (docs/mmdit.md); validate them with
``blockdance calibrate``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from torch import nn

import blockdance
from blockdance import ArchitectureSpec, timestep_argument
from blockdance_mmdit.streams import flux_blocks, sd3_blocks

#: The paper's DiT and Open-Sora window (25%-95% of the steps), not yet measured on MMDiTs.
MMDIT_WINDOW = (0.25, 0.95)


def _is_diffusers(model: nn.Module, class_name: str) -> bool:
    """True when ``model`` is diffusers' ``class_name`` (without importing diffusers)."""
    if "diffusers" not in sys.modules:
        return False
    import diffusers

    cls = getattr(diffusers, class_name, None)
    return cls is not None and isinstance(model, cls)


SD3 = ArchitectureSpec(
    name="sd3",
    description="diffusers SD3Transformer2DModel (SD3, SD3.5): joint two-stream blocks",
    matches=lambda m: _is_diffusers(m, "SD3Transformer2DModel"),
    blocks=sd3_blocks,
    timestep=timestep_argument("timestep"),
    window=MMDIT_WINDOW,
)

FLUX = ArchitectureSpec(
    name="flux",
    description="diffusers FluxTransformer2DModel: double-stream then single-stream blocks",
    matches=lambda m: _is_diffusers(m, "FluxTransformer2DModel"),
    blocks=flux_blocks,
    timestep=timestep_argument("timestep"),
    window=MMDIT_WINDOW,
)


@blockdance.hookimpl
def blockdance_register_architectures(register: Callable[[ArchitectureSpec], None]) -> None:
    register(SD3)
    register(FLUX)
