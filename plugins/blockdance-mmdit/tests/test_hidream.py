"""The MMDiT plugin on diffusers' HiDream-I1 transformer (offline, tiny).

HiDream runs double-stream blocks that return ``(image, text)`` (image first, unlike SD3
and Flux), then single-stream blocks on the joined tokens. Each block also gets one Llama
layer of its own, appended to its text (double) or joined (single) tokens.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from torch import nn

import blockdance
from blockdance.testing import trajectory
from blockdance_mmdit.examples import DEPTH, HIDREAM_TEXT, hidream_call, tiny_hidream
from blockdance_mmdit.streams import IMAGE_FIRST

STEPS = 10
IMAGE = 16  # image tokens: 8 x 8 latents in patches of 2
T5, LLAMA = HIDREAM_TEXT
# window 25%-95% of 10 steps = steps 3..9; N=2 reuses 4, 6, 8
REUSE_STEPS = (4, 6, 8)


#: The registered spec (tests/test_examples.py checks that the tiny model is matched to it).
SPEC = blockdance.default_registry().architecture("hidream")


def test_slots_kinds_forms_and_execution_order():
    model = tiny_hidream()
    slots = SPEC.blocks(model)
    assert [s.name for s in slots] == [
        "double_stream_blocks.0",
        "double_stream_blocks.1",
        "single_stream_blocks.0",
        "single_stream_blocks.1",
    ]
    assert [s.index for s in slots] == list(range(DEPTH))
    assert [s.kind for s in slots] == ["double", "double", "single", "single"]
    assert [s.form for s in slots] == ["two-stream", "two-stream", "joined", "joined"]
    assert not any(s.side_flow for s in slots)
    assert SPEC.default_boundary(DEPTH) == 2  # single-stream block 0
    order: list[int] = []
    for slot in slots:
        slot.module.register_forward_pre_hook(lambda m, a, i=slot.index: order.append(i))
    with torch.no_grad():
        hidream_call(model, 999)
    assert order == list(range(DEPTH))


def test_double_stream_io_reads_and_rebuilds_image_first():
    model = tiny_hidream()
    block = model.double_stream_blocks[0]
    seen: dict[str, Any] = {}

    def before(m: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        seen["state_in"] = IMAGE_FIRST.read_input(args, kwargs)
        seen["kwargs"] = kwargs

    block.register_forward_pre_hook(before, with_kwargs=True)
    block.register_forward_hook(lambda m, a, out: seen.update(out=out))
    with torch.no_grad():
        hidream_call(model, 500)
    image, text = seen["state_in"]
    assert image is seen["kwargs"]["hidden_states"]
    assert text is seen["kwargs"]["encoder_hidden_states"]
    assert image.shape == (2, IMAGE, 16)
    assert text.shape == (2, T5 + 2 * LLAMA, 16)  # T5 + last Llama layer + the block's own
    out_image, out_text = IMAGE_FIRST.to_state(seen["out"])
    assert out_image is seen["out"][0] and out_text is seen["out"][1]
    assert out_image.shape == image.shape and out_text.shape == text.shape
    rebuilt = IMAGE_FIRST.to_output((out_image, out_text), (), seen["kwargs"])
    assert rebuilt[0] is out_image and rebuilt[1] is out_text
    with pytest.raises(TypeError, match="HiDream double-stream block must return"):
        IMAGE_FIRST.to_state(out_image)


@pytest.mark.parametrize("boundary", [1, 2], ids=["two-stream", "joined"])
def test_reuse_substitutes_the_cached_state(boundary):
    """Hand recomputation: the unhooked model with the boundary's output replaced."""
    model = tiny_hidream()
    target = SPEC.blocks(model)[boundary].module
    kept: dict[str, Any] = {}
    where = {"step": -1}

    def substitute(module: nn.Module, args: Any, output: Any) -> Any:
        if where["step"] not in REUSE_STEPS:
            kept["output"] = output
            return None
        return kept["output"]

    hook = target.register_forward_hook(substitute)
    ref = []
    with torch.no_grad():
        for step, t in enumerate(trajectory(STEPS)):
            where["step"] = step
            ref.append(hidream_call(model, t))
    hook.remove()
    options = {"N": 2, "boundary": boundary, "num_steps": STEPS}
    with torch.no_grad(), blockdance.attach(model, "blockdance", **options) as handle:
        got = [hidream_call(model, t) for t in trajectory(STEPS)]
        cache = dict(handle.runtime.cache)
    for step, (a, b) in enumerate(zip(ref, got)):
        assert torch.equal(a, b), f"step {step} differs from the hand recomputation"
    assert handle.stats.reused_pairs() == {(s, b) for s in REUSE_STEPS for b in range(boundary + 1)}
    state = cache[(0, boundary)]
    if boundary == 1:  # (image, text), image first as the block returns them
        assert torch.equal(state[0], kept["output"][0]) and torch.equal(state[1], kept["output"][1])
        assert state[0].shape[1] == IMAGE and state[1].shape[1] == T5 + 2 * LLAMA
    else:  # one joined sequence: image, T5, last Llama layer, the block's own Llama layer
        assert torch.equal(state[0], kept["output"])
        assert state[0].shape[1] == IMAGE + T5 + 2 * LLAMA


def _names(message: str, slot: blockdance.BlockSlot) -> bool:
    """True when ``message`` names the slot, by name or by index (``block 3``, ``1..3``)."""
    by_index = re.search(rf"(?<!\w)(?<![A-Za-z_]\.){slot.index}(?!\w)", message)
    return slot.name in message or by_index is not None


@pytest.mark.parametrize(
    ("policy", "run"),
    [
        ({"kind": "fora", "N": 2, "reuse": "residual"}, (0, 3)),  # double 0 .. single 1
        ({"kind": "deepcache", "interval": 2, "reuse": "residual"}, (0, 1)),  # double blocks
        ({"kind": "delta-dit"}, (2, 3)),  # rear run single 0..1 early; front run 0..1 late
        ({"kind": "first-block-cache", "threshold": 10.0}, (1, 3)),  # double 1 .. single 1
    ],
    ids=["fora", "deepcache", "delta-dit", "first-block-cache"],
)
def test_residual_policies_run_or_refuse_a_change_of_form(policy, run):
    """Residual reuse over a run from a two-stream to a joined block cannot add one to the other.

    Either the policy runs (and reuses, with finite outputs), or blockdance refuses it with
    its own error when the generation starts, naming the run's first and last block and
    their two forms.
    """
    model = tiny_hidream()
    slots = SPEC.blocks(model)
    first, last = (slots[i] for i in run)
    outs: list[torch.Tensor] = []
    try:
        with torch.no_grad(), blockdance.attach(model, policy, num_steps=STEPS) as handle:
            for t in trajectory(STEPS):
                outs.append(hidream_call(model, t))
    except blockdance.BlockDanceError as error:
        message = str(error)
        assert not outs, "refused after the generation started"
        assert first.form != last.form, f"refused a run of one form: {message}"
        assert _names(message, first) and _names(message, last), message
        assert first.form in message and last.form in message, message
        return
    assert handle.stats.reused_blocks > 0
    assert all(torch.isfinite(out).all() for out in outs)
