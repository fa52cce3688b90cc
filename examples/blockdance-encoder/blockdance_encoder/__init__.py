"""blockdance plugin for :class:`EncoderDenoiser` (the plugin tutorial's finished example).

The ``blockdance`` entry point names this module, so blockdance registers it as a plugin
and calls the hook implementations below when it builds its registry.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

import blockdance
from blockdance import (
    ArchitectureExample,
    ArchitectureSpec,
    TensorIO,
    module_list_blocks,
    timestep_argument,
)
from blockdance_encoder.model import EncoderDenoiser, encoder_tiny, sample

__all__ = ["ENCODER", "EncoderDenoiser", "encoder_tiny", "sample"]


def _build_tiny() -> EncoderDenoiser:
    torch.manual_seed(0)
    return encoder_tiny().eval()


def _one_step(model: nn.Module, t: int) -> torch.Tensor:
    """One denoising call at timestep ``t`` on inputs that depend only on ``t``."""
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(t))  # (N, C, H, W)
    return model(x, torch.full((2,), t))


def _example() -> ArchitectureExample:
    return ArchitectureExample(build=_build_tiny, call=_one_step)


ENCODER = ArchitectureSpec(
    name="encoder",
    description="denoiser built from nn.TransformerEncoderLayer (examples/blockdance-encoder)",
    matches=lambda model: isinstance(model, EncoderDenoiser),
    # TransformerEncoderLayer.forward(src, src_mask=None, ...) returns one tensor.
    blocks=module_list_blocks("layers", TensorIO(name="src", position=0)),
    timestep=timestep_argument("t"),
    window=(0.25, 0.95),
    example=_example,  # a tiny instance and a one-step call, for the contract checks
)


@blockdance.hookimpl
def blockdance_register_architectures(register: Callable[[ArchitectureSpec], None]) -> None:
    register(ENCODER)


@blockdance.hookimpl
def blockdance_register_models(register: Callable[[str, Callable[..., nn.Module]], None]) -> None:
    register("Encoder-Tiny", encoder_tiny)


# The workload hook is the lab's (blockdance-lab): optional, so the plugin loads without it.
@blockdance.hookimpl(optionalhook=True)
def blockdance_register_workloads(register: Callable[..., None]) -> None:
    from blockdance_lab.workload import GenerateRequest, Workload

    def generate(model: EncoderDenoiser, request: GenerateRequest) -> torch.Tensor:
        return sample(model, request.seeds, request.num_steps)

    register(
        Workload(
            name="encoder-tiny",
            description="Encoder-Tiny, random weights, Euler loop: latency and schedule only",
            build=_build_tiny,
            generate=generate,
            num_steps=50,
            scheduler="Euler",
        )
    )
