"""The reference DiT of the ``blockdance_dit`` plugin: model, official checkpoints, sampling."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

import pytest
import torch
from safetensors.torch import save_file

from blockdance_dit.checkpoint import load_official_state_dict
from blockdance_dit.model import DiT, DiT_models, DiTBlock
from blockdance_lab.zoo.dit.sampling import SCHEDULER_NAMES, make_scheduler, sample_dit
from checkpoint_checks import (
    check_non_strict_and_missing_file,
    mismatch_message,
    official_mismatch_message,
)

if TYPE_CHECKING:
    from pathlib import Path

TINY: dict[str, Any] = {
    "input_size": 8,
    "patch_size": 2,
    "in_channels": 4,
    "hidden_size": 64,
    "depth": 4,
    "num_heads": 4,
    "num_classes": 10,
}
# (depth, hidden_size, num_heads) of the official sizes, facebookresearch/DiT models.py.
OFFICIAL_SIZES = {"XL": (28, 1152, 16), "L": (24, 1024, 16), "B": (12, 768, 12), "S": (12, 384, 6)}


def tiny_dit(seed: int = 0, **overrides: Any) -> DiT:
    """A tiny DiT with its zero-initialised (adaLN-Zero) layers perturbed, so it is not constant."""
    torch.manual_seed(seed)
    model = DiT(**{"learn_sigma": False, **TINY, **overrides})
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adaLN_modulation" in name or name.startswith("final_layer"):
                param.normal_(std=0.02)
    return model.eval()


def inputs(n: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, 8, 8, generator=g)
    t = torch.randint(0, 1000, (n,), generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, t, y


#################################################################################
#                                     Model                                     #
#################################################################################


@pytest.mark.parametrize("learn_sigma", [True, False])
def test_forward_shape(learn_sigma: bool) -> None:
    model = tiny_dit(learn_sigma=learn_sigma)
    out = model(*inputs())
    assert model.out_channels == (8 if learn_sigma else 4)
    assert out.shape == (3, model.out_channels, 8, 8)
    assert torch.isfinite(out).all()


def test_adaln_zero_init_outputs_zero() -> None:
    model = DiT(**TINY).eval()
    assert torch.count_nonzero(model(*inputs())) == 0
    assert not model.pos_embed.requires_grad


def test_block_signature_and_attributes() -> None:
    model = tiny_dit()
    assert len(model.blocks) == model.depth == 4
    assert all(isinstance(block, DiTBlock) for block in model.blocks)
    x, c = torch.randn(2, 16, 64), torch.randn(2, 64)
    assert model.blocks[0](x, c).shape == (2, 16, 64)
    assert (model.in_channels, model.input_size, model.patch_size) == (4, 8, 2)
    assert (model.num_classes, model.learn_sigma) == (10, False)


def test_pos_embed_layout() -> None:
    # Row-major tokens; first half of the channels encodes the column, second half the row.
    model = DiT(**TINY)
    pos = model.pos_embed[0]  # (T, D)
    quarter = 64 // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    zeros, ones = torch.zeros(quarter), torch.ones(quarter)
    torch.testing.assert_close(pos[0], torch.cat([zeros, ones, zeros, ones]))
    col1 = torch.cat([omega.sin().float(), omega.cos().float(), zeros, ones])
    torch.testing.assert_close(pos[1], col1)  # token (row 0, column 1)
    torch.testing.assert_close(pos[4, 32:], col1[:32])  # token (row 1, column 0)


@pytest.mark.parametrize("name", list(DiT_models))
def test_official_sizes(name: str) -> None:
    size, patch = name.removeprefix("DiT-").split("/")
    with torch.device("meta"):  # no memory for the weights, however large
        model = DiT_models[name]()
    depth, hidden, heads = OFFICIAL_SIZES[size]
    assert (model.depth, len(model.blocks), model.hidden_size) == (depth, depth, hidden)
    assert (model.num_heads, model.patch_size) == (heads, int(patch))
    assert (model.input_size, model.num_classes, model.learn_sigma) == (32, 1000, True)


def test_registry_names() -> None:
    assert list(DiT_models) == [f"DiT-{s}/{p}" for s in OFFICIAL_SIZES for p in (2, 4, 8)]


def test_xl2_matches_official_checkpoint_layout() -> None:
    with torch.device("meta"):
        model = DiT_models["DiT-XL/2"]()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(shapes) == 292
    assert sum(math.prod(s) for s in shapes.values()) == 675_129_632  # "675M" (paper)
    assert shapes["pos_embed"] == (1, 256, 1152)
    assert shapes["x_embedder.proj.weight"] == (1152, 4, 2, 2)
    assert shapes["y_embedder.embedding_table.weight"] == (1001, 1152)
    assert shapes["blocks.27.adaLN_modulation.1.weight"] == (6 * 1152, 1152)
    assert shapes["final_layer.linear.weight"] == (2 * 2 * 8, 1152)
    assert shapes["final_layer.adaLN_modulation.1.weight"] == (2 * 1152, 1152)


def test_state_dict_keys_follow_official_names() -> None:
    sd = DiT(**TINY).state_dict()
    expected = {"pos_embed", "y_embedder.embedding_table.weight"}
    for name in ("x_embedder.proj", "t_embedder.mlp.0", "t_embedder.mlp.2"):
        expected |= {f"{name}.weight", f"{name}.bias"}
    for name in ("linear", "adaLN_modulation.1"):
        expected |= {f"final_layer.{name}.weight", f"final_layer.{name}.bias"}
    for i in range(4):
        for name in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1"):
            expected |= {f"blocks.{i}.{name}.weight", f"blocks.{i}.{name}.bias"}
    assert set(sd) == expected  # no affine norm parameters, nothing extra
    assert sd["y_embedder.embedding_table.weight"].shape == (10 + 1, 64)  # + null class
    no_null = DiT(**TINY, class_dropout_prob=0.0).state_dict()
    assert no_null["y_embedder.embedding_table.weight"].shape == (10, 64)


#################################################################################
#                                  Checkpoints                                  #
#################################################################################


def test_load_round_trip_pt(tmp_path: Path) -> None:
    source, target = tiny_dit(seed=0), tiny_dit(seed=1)
    x, t, y = inputs()
    assert not torch.equal(source(x, t, y), target(x, t, y))
    torch.save(source.state_dict(), tmp_path / "dit.pt")
    load_official_state_dict(target, tmp_path / "dit.pt")
    assert torch.equal(source(x, t, y), target(x, t, y))


def test_load_round_trip_safetensors(tmp_path: Path) -> None:
    source, target = tiny_dit(seed=0), tiny_dit(seed=1)
    save_file(source.state_dict(), str(tmp_path / "dit.safetensors"))
    load_official_state_dict(target, str(tmp_path / "dit.safetensors"))
    assert torch.equal(source(*inputs()), target(*inputs()))


def test_load_training_checkpoint_prefers_ema(tmp_path: Path) -> None:
    ema, raw, target = tiny_dit(seed=0), tiny_dit(seed=1), tiny_dit(seed=2)
    # The layout of the official train.py, argparse.Namespace included.
    checkpoint = {
        "model": raw.state_dict(),
        "ema": ema.state_dict(),
        "opt": {},
        "args": argparse.Namespace(model="DiT-S/2", image_size=64),
    }
    torch.save(checkpoint, tmp_path / "0010000.pt")
    load_official_state_dict(target, tmp_path / "0010000.pt")
    assert torch.equal(ema(*inputs()), target(*inputs()))
    load_official_state_dict(target, {"model": raw.state_dict()})
    assert torch.equal(raw(*inputs()), target(*inputs()))


def test_load_mismatch_names_keys_and_shapes() -> None:
    message = mismatch_message(
        load_official_state_dict,
        tiny_dit(),
        drop="blocks.2.mlp.fc1.weight",
        add=("blocks.9.attn.qkv.weight", torch.zeros(192, 64)),
        reshape=("pos_embed", torch.zeros(1, 64, 64)),
    )
    assert "pos_embed: model (1, 16, 64) vs checkpoint (1, 64, 64)" in message
    assert "input_size=16" in message  # what the checkpoint fits


def test_load_mismatch_suggests_official_model() -> None:
    with torch.device("meta"):
        official = DiT_models["DiT-XL/2"]().state_dict()
    message = official_mismatch_message(load_official_state_dict, tiny_dit(), official)
    assert 'DiT_models["DiT-XL/2"](input_size=32, num_classes=1000, learn_sigma=True)' in message


def test_load_non_strict_and_missing_file(tmp_path: Path) -> None:
    check_non_strict_and_missing_file(load_official_state_dict, tiny_dit, tmp_path / "nope.pt")


#################################################################################
#                                    Sampling                                   #
#################################################################################


def noise(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("scheduler", SCHEDULER_NAMES)
def test_sampling_cfg_modes_agree(scheduler: str) -> None:
    model = tiny_dit(learn_sigma=True)
    common: dict[str, Any] = {"num_inference_steps": 8, "latents": noise()}
    batched = sample_dit(model, [1, 2], scheduler=make_scheduler(scheduler), **common)
    separate = sample_dit(
        model, [1, 2], scheduler=make_scheduler(scheduler), cfg_mode="separate", **common
    )
    unguided = sample_dit(
        model, [1, 2], scheduler=make_scheduler(scheduler), guidance_scale=1.0, **common
    )
    assert batched.shape == (2, 4, 8, 8) and torch.isfinite(batched).all()
    torch.testing.assert_close(batched, separate, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batched, unguided)


@pytest.mark.parametrize(
    ("cfg_mode", "guidance_scale", "batches"),
    [("batched", 4.0, [4, 4, 4]), ("separate", 4.0, [2, 2] * 3), ("batched", 1.0, [2] * 3)],
)
def test_sampling_call_pattern(
    cfg_mode: str, guidance_scale: float, batches: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_dit()
    calls: list[tuple[int, list[int], list[int]]] = []

    def record(_: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x, t, y = args
        assert t.shape == (x.shape[0],) and t.device == x.device
        calls.append((x.shape[0], t.tolist(), y.tolist()))

    scheduler = make_scheduler("ddim")
    set_timesteps = scheduler.set_timesteps
    steps_seen: list[int] = []

    def spy(num_inference_steps: int, *args: Any, **kwargs: Any) -> None:
        steps_seen.append(num_inference_steps)
        set_timesteps(num_inference_steps, *args, **kwargs)

    monkeypatch.setattr(scheduler, "set_timesteps", spy)
    model.register_forward_pre_hook(record)
    model.train()
    sample_dit(
        model,
        [3, 7],
        scheduler=scheduler,
        num_inference_steps=3,
        guidance_scale=guidance_scale,
        cfg_mode=cfg_mode,  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(0),
    )
    assert model.training  # restored
    assert steps_seen == [3]
    assert [n for n, _, _ in calls] == batches
    assert calls[0][1] == [666] * batches[0]  # DDIM-3, "leading" spacing: 666, 333, 0
    if cfg_mode == "separate":
        assert [y for _, _, y in calls[:2]] == [[3, 7], [10, 10]]  # conditional first
    elif guidance_scale > 1:
        assert calls[0][2] == [3, 7, 10, 10]


def test_sampling_generator_reproducible() -> None:
    model = tiny_dit()
    runs = [
        sample_dit(
            model,
            torch.tensor([0, 9]),
            scheduler=make_scheduler("dpm-solver"),
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(5),
            progress=True,
        )
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])


def test_sampling_rejects_bad_arguments() -> None:
    model, scheduler = tiny_dit(), make_scheduler("ddim")
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        sample_dit(model, [10], scheduler=scheduler)
    with pytest.raises(ValueError, match="cfg_mode"):
        sample_dit(model, [1], scheduler=scheduler, cfg_mode="interleaved")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="null class"):
        sample_dit(tiny_dit(class_dropout_prob=0.0), [1], scheduler=scheduler)
    with pytest.raises(ValueError, match="latents must have shape"):
        sample_dit(model, [1], scheduler=scheduler, latents=noise(2))


def test_make_scheduler_unknown_name_lists_supported() -> None:
    with pytest.raises(ValueError, match="unknown scheduler 'euler'; supported: ddim, dpm-solver"):
        make_scheduler("euler")
    assert make_scheduler("ddim").config["beta_schedule"] == "linear"
    short = make_scheduler("dpm-solver", num_train_timesteps=500)  # DiT rescales the betas
    assert short.config["beta_end"] == pytest.approx(0.04)


def test_plugin_lists_every_official_model_name():
    from blockdance_dit.model import DiT_models
    from blockdance_dit.plugin import DIT_MODEL_NAMES

    assert tuple(DiT_models) == DIT_MODEL_NAMES
