"""The STDiT plugin: Open-Sora's STDiT (reference model, checkpoints) and diffusers' Latte."""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, LattePipeline
from safetensors.torch import save_file

import blockdance
from blockdance.policies.blockdance import window_steps
from blockdance.testing import make_registry, trajectory
from blockdance_stdit import plugin
from blockdance_stdit.checkpoint import load_official_state_dict
from blockdance_stdit.examples import (
    DEPTH,
    TINY,
    latte_call,
    stdit_call,
    stdit_inputs,
    tiny_latte,
    tiny_stdit,
)
from blockdance_stdit.model import STDiT, STDiT_models, STDiTBlock, rotate_by_position
from checkpoint_checks import (
    check_non_strict_and_missing_file,
    mismatch_message,
    official_mismatch_message,
)
from pipeline_checks import (
    count_block_calls,
    generate,
    none_then_blockdance,
    offline_pipeline,
    tiny_vae,
)

if TYPE_CHECKING:
    from pathlib import Path

STEPS = 12
# Window 25%-95% of 12 steps = steps 3..11; N=2 caches at 3, 5, 7, 9, 11 and reuses 4, 6, 8, 10.
REUSE_STEPS = (4, 6, 8, 10)


#: A registry holding only this plugin (and the built-in policies), whatever else is installed.
REGISTRY = make_registry(("stdit", plugin))


#################################################################################
#                                Reference STDiT                                #
#################################################################################


def test_forward_shape() -> None:
    for pred_sigma, channels in ((True, 8), (False, 4)):
        model = tiny_stdit(pred_sigma=pred_sigma)
        out = model(*stdit_inputs())
        assert out.shape == (2, channels, 3, 4, 4) and torch.isfinite(out).all()


def test_zero_init_outputs_zero() -> None:
    model = STDiT(**TINY).eval()
    assert torch.count_nonzero(model(*stdit_inputs())) == 0


def test_mask_hides_padding_tokens() -> None:
    model = tiny_stdit()
    x, t, y, mask = stdit_inputs()
    ref = model(x, t, y, mask)
    y2 = y.clone()
    y2[0, :, 4:] = 100.0  # padding of the first caption only
    torch.testing.assert_close(model(x, t, y2, mask)[0], ref[0])
    assert not torch.allclose(model(x, t, y2)[0], ref[0])  # without the mask it is seen
    # one mask row per caption is repeated over a CFG-doubled batch
    doubled = model(x.repeat(2, 1, 1, 1, 1), t.repeat(2), y.repeat(2, 1, 1, 1), mask)
    torch.testing.assert_close(doubled[:2], ref, rtol=1e-5, atol=1e-5)


def test_null_caption_and_wrong_extent() -> None:
    model = tiny_stdit()
    assert model.y_embedder.null(3).shape == (3, 1, 6, 12)
    x, t, _, _ = stdit_inputs()
    assert model(x, t, model.y_embedder.null(2)).shape == (2, 4, 3, 4, 4)
    with pytest.raises(ValueError, match=r"latents of extent \(3, 4, 4\)"):
        model(torch.zeros(2, 4, 2, 4, 4), t, model.y_embedder.null(2))


def _rope_reference(x: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Rotary embedding as complex multiplication: the channel pair (2i, 2i + 1) of position
    n is the complex number x_2i + j x_2i+1, turned by the angle n * theta^(-2i / d)."""
    n, d = x.shape[-2:]
    z = torch.complex(x[..., 0::2].double(), x[..., 1::2].double())  # (..., N, d / 2)
    angle = torch.arange(n).double()[:, None] * theta ** (-torch.arange(0, d, 2).double() / d)
    turned = z * torch.polar(torch.ones_like(angle), angle)
    return torch.stack((turned.real, turned.imag), dim=-1).flatten(-2).to(x.dtype)


def test_rotary_positions_match_a_complex_reference() -> None:
    x = torch.randn(2, 3, 5, 8)  # (B, H, N, head_dim)
    torch.testing.assert_close(rotate_by_position(x), _rope_reference(x), atol=1e-5, rtol=0)
    # Scores depend on the positions' difference only: shift both sequences by one.
    q, k = torch.randn(1, 1, 4, 8), torch.randn(1, 1, 4, 8)
    scores = rotate_by_position(q) @ rotate_by_position(k).transpose(-1, -2)  # (1, 1, 4, 4)
    shifted = rotate_by_position(torch.cat([q[..., :1, :], q], -2))[..., 1:, :]
    shifted_k = rotate_by_position(torch.cat([k[..., :1, :], k], -2))[..., 1:, :]
    torch.testing.assert_close(shifted @ shifted_k.transpose(-1, -2), scores, atol=1e-5, rtol=0)


def test_temporal_rope_tells_frame_order_and_keeps_the_weights() -> None:
    torch.manual_seed(0)
    v1, rope = STDiT(**TINY).eval(), STDiT(**TINY, temporal_rope=True).eval()
    assert v1.state_dict().keys() == rope.state_dict().keys()  # no weights of its own
    for model in (v1, rope):  # give the zero-initialised outputs weights
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    rope.load_state_dict(v1.state_dict())
    x, t, y, _ = stdit_inputs()  # x: (B, C, T, H, W)
    reverse = torch.arange(x.shape[2] - 1, -1, -1)
    # Without the first block's sin-cos table, v1's temporal attention cannot tell the order:
    # reversing the frames reverses its output. Rotary positions break that symmetry.
    v1.pos_embed_temporal.zero_()
    rope.pos_embed_temporal.zero_()
    with torch.no_grad():
        torch.testing.assert_close(v1(x[:, :, reverse], t, y), v1(x, t, y)[:, :, reverse])
        assert not torch.allclose(rope(x[:, :, reverse], t, y), rope(x, t, y)[:, :, reverse])
        # On one frame a rotation by position 0 is the identity: the same function as v1.
        one = x[:, :, :1]
        v1_1 = STDiT(**{**TINY, "input_size": (1, *TINY["input_size"][1:])}).eval()
        rope_1 = STDiT(**{**TINY, "input_size": (1, *TINY["input_size"][1:])}, temporal_rope=True)
        state = {k: v for k, v in v1.state_dict().items() if k != "pos_embed_temporal"}
        v1_1.load_state_dict(state, strict=False)
        rope_1.eval().load_state_dict(state, strict=False)
        torch.testing.assert_close(rope_1(one, t, y), v1_1(one, t, y))


def test_frame_embed_adds_a_learned_row_to_every_token_of_its_frame() -> None:
    torch.manual_seed(0)
    table = tiny_stdit(seed=1, frame_embed=True).eval()
    plain = tiny_stdit(seed=1).eval()
    assert "frame_embed" not in plain.state_dict()  # v1 checkpoints load unchanged
    assert table.frame_embed is not None
    # Starts as the temporal sin-cos table, then is a weight of its own.
    torch.testing.assert_close(table.frame_embed.data, table.pos_embed_temporal)
    with torch.no_grad():
        table.frame_embed.normal_()
    state = {k: v for k, v in table.state_dict().items() if k != "frame_embed"}
    plain.load_state_dict(state)
    frames, spatial = table.num_temporal, table.num_spatial
    rows = table.frame_embed.detach()[0]  # (T, D)

    def add_rows(_module: torch.nn.Module, _args: object, out: torch.Tensor) -> torch.Tensor:
        # x_embedder's tokens are frame-major: token i is in frame i // S
        frame_of_token = torch.arange(frames * spatial) // spatial  # (T * S,)
        return out + rows[frame_of_token]

    plain.x_embedder.register_forward_hook(add_rows)  # type: ignore[arg-type]
    x, t, y, mask = stdit_inputs()
    with torch.no_grad():
        torch.testing.assert_close(table(x, t, y, mask), plain(x, t, y, mask))
        # the table tells the frames apart: the same image in every frame, with the
        # rows removed, comes out the same in every frame; with them, not
        still = x[:, :, :1].expand_as(x).contiguous()
        same = tiny_stdit(seed=1).eval()
        same.load_state_dict(state)
        same.pos_embed_temporal.zero_()
        out = same(still, t, y, mask)  # (B, C, T, H, W)
        torch.testing.assert_close(out, out[:, :, :1].expand_as(out))
        table.pos_embed_temporal.zero_()
        out = table(still, t, y, mask)
        assert not torch.allclose(out, out[:, :, :1].expand_as(out), atol=1e-4)


def test_pos_embed_layout() -> None:
    # Row-major tokens; first half of the channels encodes the column, second half the row.
    model = STDiT(**{**TINY, "input_size": (3, 6, 6)})  # 3 x 3 grid of patches
    pos, quarter = model.pos_embed[0], 32 // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    zeros, ones = torch.zeros(quarter), torch.ones(quarter)
    col1 = torch.cat([omega.sin().float(), omega.cos().float(), zeros, ones])
    torch.testing.assert_close(pos[1], col1)  # token (row 0, column 1)
    torch.testing.assert_close(pos[3, 16:], col1[:16])  # token (row 1, column 0)
    assert model.pos_embed_temporal.shape == (1, 3, 32)
    half = STDiT(**{**TINY, "input_size": (3, 6, 6)}, space_scale=0.5).pos_embed[0]
    torch.testing.assert_close(half[1], pos[2])  # positions divided by 0.5


def official_keys(depth: int) -> set[str]:
    """Every key of an Open-Sora v1 STDiT state dict (opensora/models/stdit/stdit.py)."""
    keys = {"pos_embed", "pos_embed_temporal", "y_embedder.y_embedding"}
    keys.add("final_layer.scale_shift_table")
    for name in (
        "x_embedder.proj",
        "t_embedder.mlp.0",
        "t_embedder.mlp.2",
        "t_block.1",
        "y_embedder.y_proj.fc1",
        "y_embedder.y_proj.fc2",
        "final_layer.linear",
    ):
        keys |= {f"{name}.weight", f"{name}.bias"}
    for i in range(depth):
        keys.add(f"blocks.{i}.scale_shift_table")
        for name in (
            "attn.qkv",
            "attn.proj",
            "attn_temp.qkv",
            "attn_temp.proj",
            "cross_attn.q_linear",
            "cross_attn.kv_linear",
            "cross_attn.proj",
            "mlp.fc1",
            "mlp.fc2",
        ):
            keys |= {f"blocks.{i}.{name}.weight", f"blocks.{i}.{name}.bias"}
    return keys


def test_state_dict_keys_follow_official_names() -> None:
    assert set(STDiT(**TINY).state_dict()) == official_keys(DEPTH)


def test_xl2_matches_official_checkpoint_layout() -> None:
    with torch.device("meta"):  # no memory for the weights
        model = STDiT_models["STDiT-XL/2"]()
    assert (model.depth, model.hidden_size, model.num_heads) == (28, 1152, 16)
    assert (model.input_size, model.patch_size, model.in_channels) == ((16, 32, 32), (1, 2, 2), 4)
    assert (model.caption_channels, model.model_max_length, model.out_channels) == (4096, 120, 8)
    sd = model.state_dict()
    assert set(sd) == official_keys(28)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    d = 1152
    assert shapes["pos_embed"] == (1, 256, d)
    assert shapes["pos_embed_temporal"] == (1, 16, d)
    assert shapes["x_embedder.proj.weight"] == (d, 4, 1, 2, 2)
    assert shapes["t_embedder.mlp.0.weight"] == (d, 256)
    assert shapes["t_block.1.weight"] == (6 * d, d)
    assert shapes["y_embedder.y_proj.fc1.weight"] == (d, 4096)
    assert shapes["y_embedder.y_proj.fc2.weight"] == (d, d)
    assert shapes["y_embedder.y_embedding"] == (120, 4096)
    assert shapes["blocks.27.attn.qkv.weight"] == shapes["blocks.27.attn_temp.qkv.weight"]
    assert shapes["blocks.27.attn.qkv.weight"] == (3 * d, d)
    assert shapes["blocks.27.attn_temp.proj.weight"] == (d, d)
    assert shapes["blocks.27.cross_attn.q_linear.weight"] == (d, d)
    assert shapes["blocks.27.cross_attn.kv_linear.weight"] == (2 * d, d)
    assert shapes["blocks.27.mlp.fc1.weight"] == (4 * d, d)
    assert shapes["blocks.27.scale_shift_table"] == (6, d)
    assert shapes["final_layer.linear.weight"] == (1 * 2 * 2 * 8, d)
    assert shapes["final_layer.scale_shift_table"] == (2, d)
    # 28 blocks of 26,568,576 parameters plus 15,700,640 in the embedders and final layer.
    assert sum(p.numel() for p in model.parameters()) == 759_620_768


def test_plugin_lists_every_official_model_name() -> None:
    assert tuple(STDiT_models) == plugin.STDIT_MODEL_NAMES
    with torch.device("meta"):
        model = REGISTRY.create_model("STDiT-XL/2", space_scale=0.5)
    assert isinstance(model, STDiT) and (model.depth, model.space_scale) == (28, 0.5)


#################################################################################
#                                  Checkpoints                                  #
#################################################################################


def test_load_round_trip_pt_and_safetensors(tmp_path: Path) -> None:
    source = tiny_stdit(seed=0)
    inputs = stdit_inputs()
    torch.save(source.state_dict(), tmp_path / "stdit.pth")
    save_file(source.state_dict(), str(tmp_path / "stdit.safetensors"))
    for name in ("stdit.pth", "stdit.safetensors"):
        target = tiny_stdit(seed=1)
        assert not torch.equal(source(*inputs), target(*inputs))
        load_official_state_dict(target, tmp_path / name)
        assert torch.equal(source(*inputs), target(*inputs))


def test_load_wrapped_checkpoint_and_derived_buffers() -> None:
    ema, raw, target = tiny_stdit(seed=0), tiny_stdit(seed=1), tiny_stdit(seed=2)
    wrapped = {f"module.{k}": v for k, v in ema.state_dict().items()}
    load_official_state_dict(target, {"ema": wrapped, "model": raw.state_dict(), "step": 3})
    assert torch.equal(ema(*stdit_inputs()), target(*stdit_inputs()))
    # The sin-cos buffers come from the configuration, as in Open-Sora's loader: absent or
    # of another resolution, they are ignored.
    sd = raw.state_dict()
    del sd["pos_embed"]
    sd["pos_embed_temporal"] = torch.zeros(1, 16, 32)
    load_official_state_dict(target, sd)
    assert torch.equal(raw(*stdit_inputs()), target(*stdit_inputs()))
    assert torch.equal(target.pos_embed_temporal, raw.pos_embed_temporal)


def test_load_mismatch_names_keys_and_shapes() -> None:
    message = mismatch_message(
        load_official_state_dict,
        tiny_stdit(),
        drop="blocks.2.attn_temp.qkv.weight",
        add=("blocks.9.cross_attn.q_linear.weight", torch.zeros(32, 32)),
        reshape=("y_embedder.y_embedding", torch.zeros(120, 12)),
    )
    assert "y_embedder.y_embedding: model (6, 12) vs checkpoint (120, 12)" in message
    assert "model_max_length=120" in message  # what the checkpoint fits


def test_load_mismatch_suggests_official_model() -> None:
    with torch.device("meta"):
        official = STDiT_models["STDiT-XL/2"]().state_dict()
    message = official_mismatch_message(load_official_state_dict, tiny_stdit(), official)
    assert (
        'STDiT_models["STDiT-XL/2"](in_channels=4, pred_sigma=True, caption_channels=4096, '
        "model_max_length=120, input_size=...)" in message
    )


def test_load_non_strict_and_missing_file(tmp_path: Path) -> None:
    check_non_strict_and_missing_file(load_official_state_dict, tiny_stdit, tmp_path / "nope.pth")


#################################################################################
#                              BlockDance on STDiT                              #
#################################################################################


def test_stdit_spec_defaults_follow_the_paper() -> None:
    spec = REGISTRY.match(tiny_stdit())
    assert spec.name == "stdit"
    assert spec.default_boundary(28) == 20  # block 20 of 28 (paper)
    assert spec.window == (0.25, 0.95)
    slots = spec.blocks(tiny_stdit())
    assert [s.kind for s in slots] == ["spatial-temporal"] * DEPTH
    assert all(isinstance(s.module, STDiTBlock) for s in slots)


def test_stdit_blockdance_schedule_and_block_executions() -> None:
    model = tiny_stdit()
    counts = count_block_calls(REGISTRY.match(model).blocks(model))
    with torch.no_grad():
        ref = [stdit_call(model, t) for t in trajectory(STEPS)]
        counts.clear()
        with blockdance.attach(model, "blockdance", N=2, num_steps=STEPS, registry=REGISTRY) as h:
            out = [stdit_call(model, t) for t in trajectory(STEPS)]
    boundary = 2  # round(21/28 * 4) - 1
    assert h.stats.reused_pairs() == {(s, b) for s in REUSE_STEPS for b in range(boundary + 1)}
    assert counts == {0: 8, 1: 8, 2: 8, 3: 12}
    assert all(torch.equal(a, b) for a, b in zip(ref[:4], out[:4]))  # up to the first reuse
    assert not torch.equal(ref[4], out[4])


#################################################################################
#                                     Latte                                     #
#################################################################################


def test_latte_slots_interleave_in_execution_order() -> None:
    model = tiny_latte()
    spec = REGISTRY.match(model)
    assert spec.name == "latte"
    slots = spec.blocks(model)
    assert [s.index for s in slots] == list(range(2 * DEPTH))
    assert [s.kind for s in slots] == ["spatial", "temporal"] * DEPTH
    assert [s.name for s in slots[:3]] == [
        "transformer_blocks.0",
        "temporal_transformer_blocks.0",
        "transformer_blocks.1",
    ]
    assert slots[3].module is model.temporal_transformer_blocks[1]
    order: list[int] = []
    for slot in slots:
        slot.module.register_forward_pre_hook(lambda m, a, i=slot.index: order.append(i))
    with torch.no_grad():
        latte_call(model, 500)
    assert order == list(range(2 * DEPTH))  # the model really runs them in slot order
    # The boundary ends a (spatial, temporal) pair: pair 20 of 28 is slot 41 of 56.
    assert [spec.default_boundary(n) for n in (56, 8, 6, 2)] == [41, 5, 3, 0]


def test_latte_blockdance_schedule_counts_real_executions() -> None:
    model = tiny_latte()
    counts = count_block_calls(REGISTRY.match(model).blocks(model))
    with torch.no_grad():
        with blockdance.attach(model, "blockdance", N=2, num_steps=STEPS, registry=REGISTRY) as h:
            for t in trajectory(STEPS):
                latte_call(model, t)
    boundary = 5  # temporal block 2: pairs 0..2 are structural
    assert h.stats.reused_pairs() == {(s, b) for s in REUSE_STEPS for b in range(boundary + 1)}
    assert h.stats.slot_kinds == ("spatial", "temporal") * DEPTH
    assert counts == {i: STEPS - len(REUSE_STEPS) if i <= boundary else STEPS for i in range(8)}
    assert set(window_steps((0.25, 0.95), STEPS)) == set(range(3, 12))


@pytest.mark.parametrize("boundary", [5, 2, 0])  # temporal 2, spatial 1, spatial 0
def test_latte_reuse_substitutes_the_boundary_state(boundary: int) -> None:
    """A reuse step feeds slot boundary+1 exactly what the cache step fed it."""
    model = tiny_latte()
    slots = REGISTRY.match(model).blocks(model)
    entering: list[torch.Tensor] = []  # the boundary slot's input, per step
    leaving: list[torch.Tensor] = []  # its output (computed, or substituted on reuse steps)
    following: list[torch.Tensor] = []  # the next slot's input, after the model's reshape
    slots[boundary].module.register_forward_pre_hook(lambda m, a: entering.append(a[0]))
    slots[boundary].module.register_forward_hook(lambda m, a, out: leaving.append(out))
    slots[boundary + 1].module.register_forward_pre_hook(lambda m, a: following.append(a[0]))
    options = {"N": 2, "boundary": boundary, "num_steps": STEPS, "registry": REGISTRY}
    with torch.no_grad(), blockdance.attach(model, "blockdance", **options) as handle:
        final = [latte_call(model, t) for t in trajectory(STEPS)]
        cached = handle.runtime.cache[(0, boundary)][0]
    assert torch.equal(cached, leaving[-1])  # the state after the boundary slot (step 11)
    for step in REUSE_STEPS:  # each follows its cache step
        assert not torch.equal(entering[step], entering[step - 1])  # a new input came in ...
        assert torch.equal(leaving[step], leaving[step - 1])  # ... the cached state went out
        assert torch.equal(following[step], following[step - 1])  # same state, same reshape
    assert not torch.equal(following[3], following[2])  # computed steps do differ
    assert all(torch.isfinite(f).all() for f in final)


def test_latte_without_temporal_attention_needs_a_spatial_boundary() -> None:
    model = tiny_latte()
    counts = count_block_calls(REGISTRY.match(model).blocks(model))
    options = {"N": 2, "num_steps": STEPS, "registry": REGISTRY}
    with torch.no_grad(), blockdance.attach(model, "blockdance", **options):
        with pytest.raises(blockdance.ReuseError, match="without a reuse boundary"):
            for t in trajectory(STEPS):  # the default boundary, temporal slot 5, never runs
                latte_call(model, t, enable_temporal_attentions=False)
    counts.clear()
    with torch.no_grad(), blockdance.attach(model, "blockdance", boundary=4, **options) as h:
        for t in trajectory(STEPS):
            latte_call(model, t, enable_temporal_attentions=False)
    skipped = len(REUSE_STEPS)
    assert counts == {0: STEPS - skipped, 2: STEPS - skipped, 4: STEPS - skipped, 6: STEPS}
    assert h.stats.reused_blocks == 3 * skipped  # spatial slots 0, 2 and 4
    # stats name the slots that ran, not their position among the calls
    assert h.stats.reused_pairs() == {(s, b) for s in REUSE_STEPS for b in (0, 2, 4)}
    assert h.stats.step_table().splitlines()[REUSE_STEPS[0]].endswith("R-R-R-C-")


def latte_pipe() -> LattePipeline:
    # No tokenizer or text encoder: the test passes T5-like embeddings directly.
    return offline_pipeline(
        LattePipeline,
        ("tokenizer", "text_encoder"),
        vae=tiny_vae(),
        transformer=tiny_latte(),
        scheduler=DDIMScheduler(),
    )


def run_latte(pipe: LattePipeline, steps: int = 10) -> np.ndarray:
    embeds = torch.randn(1, 5, 12, generator=torch.Generator().manual_seed(0))
    return generate(
        pipe,
        steps,
        prompt_embeds=embeds,
        negative_prompt=None,
        negative_prompt_embeds=torch.zeros_like(embeds),
        guidance_scale=4.0,
        video_length=3,
        height=8,  # the tiny VAE does not downsample: 8 x 8 latents
        width=8,
    )


def test_latte_pipeline_offline() -> None:
    runs = none_then_blockdance(latte_pipe(), run_latte, "latte", registry=REGISTRY)
    assert runs.ref.shape == (1, 3, 8, 8, 3)  # (batch, frames, height, width, RGB)
    # 10 steps: window 25%-95% = steps 3..9; N=2 reuses 4, 6, 8; batched guidance: 1 branch
    assert runs.stats.num_steps == 10
    assert runs.stats.branches == 1
    assert runs.stats.reused_pairs() == {(s, b) for s in (4, 6, 8) for b in range(6)}
    assert runs.computed == {i: 10 - 3 if i <= 5 else 10 for i in range(2 * DEPTH)}


#################################################################################
#                                   Discovery                                   #
#################################################################################


def test_plugin_is_discovered_through_its_entry_point() -> None:
    (entry,) = [
        ep for ep in importlib.metadata.entry_points(group="blockdance") if ep.name == "stdit"
    ]
    assert entry.value == "blockdance_stdit.plugin" and entry.load() is plugin
    registry = blockdance.Registry(blockdance.get_plugin_manager(autoload=True))
    assert registry.architecture_owner("stdit") == registry.architecture_owner("latte") == "stdit"
    assert registry.match(tiny_stdit()).name == "stdit"
    assert registry.match(tiny_latte()).name == "latte"
    assert "STDiT-XL/2" in registry.model_names
