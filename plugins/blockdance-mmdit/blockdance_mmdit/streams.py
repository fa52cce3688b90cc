"""Two-stream blocks: how the runtime reads and rebuilds an MMDiT block's hidden states.

MMDiT blocks (SD3's ``JointTransformerBlock``, Flux's double- and single-stream blocks)
are called as ``block(hidden_states=image, encoder_hidden_states=text, temb=..., ...)``
and return ``(encoder_hidden_states, hidden_states)``; HiDream's double-stream blocks
return them the other way round. The state the runtime caches and passes through is
``(image, text)``: both streams, so a reuse step resumes the deep blocks exactly where a
cache step left them. Where a model joins the streams into one token sequence (HiDream's
single-stream blocks, Flux's in old diffusers releases), the state is that one tensor and
the slot's form is ``"joined"`` instead of ``"two-stream"``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from blockdance import BlockIO, BlockSlot, State, TensorIO

#: Slot forms (``BlockSlot.form``): separate image and text streams, or one joined sequence.
TWO_STREAM = "two-stream"
JOINED = "joined"


def _argument(args: tuple[Any, ...], kwargs: dict[str, Any], name: str, position: int) -> Any:
    """The block argument ``name``, passed by keyword or at ``position``."""
    if len(args) > position:
        return args[position]
    try:
        return kwargs[name]
    except KeyError:
        raise TypeError(
            f"MMDiT block call has no {name!r} argument (position {position}); got "
            f"{len(args)} positional arguments and keywords {sorted(kwargs)}"
        ) from None


def _streams(image: torch.Tensor, text: torch.Tensor | None) -> State:
    """``(image, text)``; ``text`` is None where a block drops the text stream.

    The runtime treats non-tensor items of a state as placeholders (no shape check, no
    arithmetic), so ``None`` stands for "no text stream" in caches and pass-throughs.
    """
    return (image, text)


@dataclass(frozen=True)
class JointIO:
    """A two-stream block; its state is ``(image, text)``.

    Called with ``hidden_states`` and ``encoder_hidden_states`` (positions 0 and 1), it
    returns ``(encoder_hidden_states, hidden_states)``.

    Args:
        text_out: False for a block that returns no text stream (SD3's last block,
            ``context_pre_only``, returns ``(None, hidden_states)``): its state is
            ``(image, None)``, on input as on output, so states always fit.
    """

    text_out: bool = True

    def read_input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> State:
        image = _argument(args, kwargs, "hidden_states", 0)  # (N, T_img, D)
        if not self.text_out:
            return _streams(image, None)
        text = _argument(args, kwargs, "encoder_hidden_states", 1)  # (N, T_txt, D)
        return _streams(image, text)

    def to_state(self, output: Any) -> State:
        if not (isinstance(output, tuple) and len(output) == 2):
            raise TypeError(
                "an MMDiT block must return (encoder_hidden_states, hidden_states); got "
                f"{type(output).__name__}. Is the model an SD3/Flux transformer of a supported "
                "diffusers version?"
            )
        text, image = output
        return _streams(image, text)

    def to_output(self, state: State, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        image, text = state
        return text, image


JOINT = JointIO()
IMAGE_ONLY = JointIO(text_out=False)


@dataclass(frozen=True)
class ImageFirstIO:
    """A two-stream block that returns ``(hidden_states, encoder_hidden_states)``, image first.

    HiDream's double-stream blocks are called as ``block(hidden_states, hidden_states_masks,
    encoder_hidden_states, temb, image_rotary_emb)`` (the model passes keywords). Their text
    stream is the model's running text tokens followed by the block's own Llama layer; the
    model cuts that layer off after the block, so a state passed through or substituted
    fits the same way. The state is ``(image, text)``, as for :class:`JointIO`.
    """

    def read_input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> State:
        image = _argument(args, kwargs, "hidden_states", 0)  # (N, T_img, D)
        text = _argument(args, kwargs, "encoder_hidden_states", 2)  # (N, T_txt + T_llama, D)
        return _streams(image, text)

    def to_state(self, output: Any) -> State:
        if not (isinstance(output, tuple) and len(output) == 2):
            raise TypeError(
                "a HiDream double-stream block must return (hidden_states, "
                f"encoder_hidden_states); got {type(output).__name__}. Is the model a "
                "HiDreamImageTransformer2DModel of a supported diffusers version?"
            )
        image, text = output
        return _streams(image, text)

    def to_output(self, state: State, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        image, text = state
        return image, text


IMAGE_FIRST = ImageFirstIO()


def module_list(model: nn.Module, attr: str, architecture: str) -> nn.ModuleList:
    """``model.<attr>`` as an ``nn.ModuleList``, or a clear error naming the architecture."""
    modules = getattr(model, attr, None)
    if not isinstance(modules, nn.ModuleList):
        raise TypeError(
            f"architecture {architecture!r} expects {type(model).__name__}.{attr} to be an "
            f"nn.ModuleList of MMDiT blocks, found {type(modules).__name__}; is this model "
            "really a diffusers SD3/Flux/HiDream transformer?"
        )
    return modules


def takes_text_stream(block: nn.Module) -> bool:
    """True when ``block.forward`` takes ``encoder_hidden_states`` (a two-stream call)."""
    return "encoder_hidden_states" in inspect.signature(type(block).forward).parameters


def _require_joint(block: nn.Module, name: str, architecture: str, attr: str | None) -> None:
    """Refuse a block that is not a two-stream MMDiT block (e.g. a forced wrong spec)."""
    if takes_text_stream(block) and (attr is None or hasattr(block, attr)):
        return
    raise TypeError(
        f"architecture {architecture!r} expects {name} to be a two-stream MMDiT block "
        "(forward(hidden_states, encoder_hidden_states, temb, ...) returning "
        f"(encoder_hidden_states, hidden_states)), found {type(block).__name__}"
    )


def sd3_blocks(model: nn.Module) -> list[BlockSlot]:
    """SD3's joint blocks in execution order; the last one returns no text stream."""
    blocks = module_list(model, "transformer_blocks", "sd3")
    for i, block in enumerate(blocks):
        _require_joint(block, f"transformer_blocks.{i}", "sd3", "context_pre_only")
    return [
        BlockSlot(
            index=i,
            module=block,
            io=IMAGE_ONLY if getattr(block, "context_pre_only", False) else JOINT,
            kind="joint",
            name=f"transformer_blocks.{i}",
            form=TWO_STREAM,
        )
        for i, block in enumerate(blocks)
    ]


def single_stream_io(block: nn.Module) -> BlockIO:
    """How a Flux single-stream block passes its hidden states.

    Current diffusers passes both streams in and out, like the double-stream blocks; older
    releases passed one concatenated ``(text, image)`` tensor, which one state carries.
    """
    return JOINT if takes_text_stream(block) else TensorIO()


def flux_blocks(model: nn.Module) -> list[BlockSlot]:
    """Flux's double-stream blocks, then its single-stream blocks, in execution order."""
    double = module_list(model, "transformer_blocks", "flux")
    single = module_list(model, "single_transformer_blocks", "flux")
    for i, block in enumerate(double):
        _require_joint(block, f"transformer_blocks.{i}", "flux", None)
    slots = [
        BlockSlot(
            index=i,
            module=block,
            io=JOINT,
            kind="joint",
            name=f"transformer_blocks.{i}",
            form=TWO_STREAM,
        )
        for i, block in enumerate(double)
    ]
    for j, block in enumerate(single):
        io = single_stream_io(block)
        slots.append(
            BlockSlot(
                index=len(double) + j,
                module=block,
                io=io,
                kind="single",
                name=f"single_transformer_blocks.{j}",
                form=TWO_STREAM if io is JOINT else JOINED,
            )
        )
    return slots


def hidream_blocks(model: nn.Module) -> list[BlockSlot]:
    """HiDream's double-stream blocks (two streams), then its single-stream blocks (joined).

    The single-stream blocks take and return one tensor: the image tokens and the text
    tokens the double blocks left, joined, followed by the block's own Llama layer.
    """
    double = module_list(model, "double_stream_blocks", "hidream")
    single = module_list(model, "single_stream_blocks", "hidream")
    slots = [
        BlockSlot(
            index=i,
            module=block,
            io=IMAGE_FIRST,
            kind="double",
            name=f"double_stream_blocks.{i}",
            form=TWO_STREAM,
        )
        for i, block in enumerate(double)
    ]
    slots += [
        BlockSlot(
            index=len(double) + j,
            module=block,
            io=TensorIO(),  # (N, T_img + T_txt + T_llama, D)
            kind="single",
            name=f"single_stream_blocks.{j}",
            form=JOINED,
        )
        for j, block in enumerate(single)
    ]
    return slots
