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

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from blockdance import (
    BlockIO,
    BlockList,
    BlockSlot,
    State,
    TensorIO,
    block_argument,
    module_lists_blocks,
)

#: Slot forms (``BlockSlot.form``): separate image and text streams, or one joined sequence.
TWO_STREAM = "two-stream"
JOINED = "joined"


@dataclass(frozen=True)
class TwoStreamIO:
    """A two-stream block; its state is ``(image, text)``.

    Called with ``hidden_states`` (position 0) and ``encoder_hidden_states``, it returns both
    streams. ``None`` stands for "no text stream" in a state: the runtime keeps non-tensor
    items as placeholders in caches and pass-throughs.

    Args:
        text_position: Position of ``encoder_hidden_states`` in the block's ``forward``.
        image_first: The block returns ``(hidden_states, encoder_hidden_states)`` (HiDream's
            double-stream blocks); else ``(encoder_hidden_states, hidden_states)``.
        text_out: False for a block that returns no text stream (SD3's last block,
            ``context_pre_only``, returns ``(None, hidden_states)``): its state is
            ``(image, None)``, on input as on output, so states always fit.
            :meth:`for_block` sets it from the block.
        block: What the block is, for messages.
        models: Which models have such blocks, for messages.
    """

    text_position: int = 1
    image_first: bool = False
    text_out: bool = True
    block: str = "an MMDiT block"
    models: str = "an SD3/Flux transformer"

    def for_block(self, block: nn.Module) -> TwoStreamIO:
        """This io for one block: without a text stream out if the block is ``context_pre_only``."""
        if getattr(block, "context_pre_only", False) and self.text_out:
            return dataclasses.replace(self, text_out=False)
        return self

    def read_input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> State:
        image = block_argument(args, kwargs, "hidden_states", 0)  # (N, T_img, D)
        if not self.text_out:
            return (image, None)
        text = block_argument(args, kwargs, "encoder_hidden_states", self.text_position)
        return (image, text)  # text: (N, T_txt, D); HiDream: (N, T_txt + T_llama, D)

    def to_state(self, output: Any) -> State:
        if not (isinstance(output, tuple) and len(output) == 2):
            streams = ("hidden_states", "encoder_hidden_states")
            returns = ", ".join(streams if self.image_first else streams[::-1])
            raise TypeError(
                f"{self.block} must return ({returns}); "
                f"got {type(output).__name__}. Is the model {self.models} of a supported "
                "diffusers version?"
            )
        image, text = output if self.image_first else output[::-1]
        return (image, text)

    def to_output(self, state: State, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        image, text = state
        return (image, text) if self.image_first else (text, image)


JOINT = TwoStreamIO()
#: HiDream's double-stream blocks: called as ``block(hidden_states, hidden_states_masks,
#: encoder_hidden_states, temb, image_rotary_emb)`` (the model passes keywords). Their text
#: stream is the model's running text tokens followed by the block's own Llama layer; the
#: model cuts that layer off after the block, so a state passed through or substituted fits
#: the same way.
IMAGE_FIRST = TwoStreamIO(
    text_position=2,
    image_first=True,
    block="a HiDream double-stream block",
    models="a HiDreamImageTransformer2DModel",
)


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


def single_stream_io(block: nn.Module) -> BlockIO:
    """How a Flux single-stream block passes its hidden states.

    Current diffusers passes both streams in and out, like the double-stream blocks; older
    releases passed one concatenated ``(text, image)`` tensor, which one state carries.
    """
    return JOINT if takes_text_stream(block) else TensorIO()


def _mmdit_blocks(
    architecture: str, *lists: BlockList, joint: bool = False, joint_attr: str = ""
) -> Callable[[nn.Module], list[BlockSlot]]:
    """Slots over ``lists`` (:func:`blockdance.module_lists_blocks`), after checks that name
    the architecture, so that forcing an MMDiT spec onto another model says what does not fit.

    Args:
        architecture: The spec's name.
        *lists: The block lists, in execution order; each must be an ``nn.ModuleList``.
        joint: Require the blocks of the first list to take ``encoder_hidden_states``.
        joint_attr: An attribute they must also have (SD3's ``context_pre_only``).
    """
    slots_of = module_lists_blocks(*lists)

    def blocks(model: nn.Module) -> list[BlockSlot]:
        first, *_ = [module_list(model, block_list.attr, architecture) for block_list in lists]
        for i, block in enumerate(first if joint else ()):
            if not takes_text_stream(block) or (joint_attr and not hasattr(block, joint_attr)):
                raise TypeError(
                    f"architecture {architecture!r} expects {lists[0].attr}.{i} to be a "
                    "two-stream MMDiT block (forward(hidden_states, encoder_hidden_states, "
                    "temb, ...) returning (encoder_hidden_states, hidden_states)), found "
                    f"{type(block).__name__}"
                )
        return slots_of(model)

    return blocks


#: SD3's joint blocks in execution order; the last one (``context_pre_only``) returns no
#: text stream (:meth:`TwoStreamIO.for_block`).
sd3_blocks = _mmdit_blocks(
    "sd3",
    BlockList("transformer_blocks", JOINT, kind="joint", form=TWO_STREAM),
    joint=True,
    joint_attr="context_pre_only",
)

#: HiDream's double-stream blocks (two streams), then its single-stream blocks, which take
#: and return one tensor (N, T_img + T_txt + T_llama, D): the image tokens and the text
#: tokens the double blocks left, joined, followed by the block's own Llama layer.
hidream_blocks = _mmdit_blocks(
    "hidream",
    BlockList("double_stream_blocks", IMAGE_FIRST, kind="double", form=TWO_STREAM),
    BlockList("single_stream_blocks", TensorIO(), kind="single", form=JOINED),
)


def flux_blocks(model: nn.Module) -> list[BlockSlot]:
    """Flux's double-stream blocks, then its single-stream blocks, in execution order.

    The single-stream blocks carry both streams in current diffusers, one joined tensor in
    older releases (:func:`single_stream_io`).
    """
    single = module_list(model, "single_transformer_blocks", "flux")
    io = single_stream_io(single[0]) if len(single) else JOINT
    blocks = _mmdit_blocks(
        "flux",
        BlockList("transformer_blocks", JOINT, kind="joint", form=TWO_STREAM),
        BlockList(
            "single_transformer_blocks",
            io,
            kind="single",
            form=TWO_STREAM if io is JOINT else JOINED,
        ),
        joint=True,
    )
    return blocks(model)
