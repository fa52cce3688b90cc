"""The tiny STDiT's v-prediction and frame table: the video stage's target, the timesteps it
draws, the sampler reading v, and a video stage that adds the table to an image stage."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from blockdance_lab.training import linear_alphas_cumprod
from blockdance_lab.workload import GenerateRequest
from blockdance_lab.zoo.stdit.tiny import (
    PREDICTIONS,
    TinySTDiTConfig,
    TrainConfig,
    _clip_loss,
    load_tiny_stdit,
    save_tiny_stdit,
    train_tiny_stdit,
    video_batches,
)
from blockdance_lab.zoo.stdit.workloads import STDiTSampler, ddim_linear, tiny_stdit_sampler

SMALL = TinySTDiTConfig(frames=4, image_size=16, hidden_size=32, depth=2, num_heads=2, text_dim=16)
ABAR = linear_alphas_cumprod()  # (1000,)


class _Oracle(nn.Module):
    """Knows the clean clips: returns the exact ε or v of whatever noised clip it is given."""

    def __init__(self, x0: torch.Tensor, kind: str) -> None:
        super().__init__()
        self.x0, self.kind, self.seen = x0, kind, []  # x0: (B, 3, T, H, W)

    def forward(self, xt: torch.Tensor, t: torch.Tensor, captions: Any) -> torch.Tensor:
        self.seen.append(t.clone())
        a = ABAR[t].view(-1, 1, 1, 1, 1).double()
        eps = (xt.double() - a.sqrt() * self.x0) / (1 - a).sqrt()  # x_t = √ᾱ x₀ + √(1−ᾱ) ε
        out = eps if self.kind == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * self.x0
        return out.float()


def _clean(n: int, cfg: TrainConfig) -> torch.Tensor:
    videos, _ = video_batches(SMALL)(n, cfg.seed, 0, SMALL.frames)  # step 0's clips
    return videos.permute(0, 2, 1, 3, 4).double()  # (B, 3, T, H, W)


def test_the_video_loss_regresses_what_the_model_predicts() -> None:
    cfg = TrainConfig(batch_size=3)
    x0 = _clean(3, cfg)
    for prediction in PREDICTIONS:
        loss = _clip_loss(
            video_batches(SMALL), cfg, SMALL.frames, 5.0, "cpu", prediction=prediction
        )
        for kind in PREDICTIONS:
            value = float(loss(_Oracle(x0, kind), 0, torch.Generator().manual_seed(1)))
            if kind == prediction:
                assert value < 1e-6, (prediction, kind, value)
            else:  # ε and v differ by far at most timesteps
                assert value > 1e-2, (prediction, kind, value)


def test_a_high_noise_share_draws_that_share_of_timesteps_from_the_high_range() -> None:
    cfg = TrainConfig(batch_size=200)
    x0 = _clean(200, cfg)
    drawn = {}
    for share in (0.0, 0.5, 1.0):
        oracle = _Oracle(x0, "epsilon")
        loss = _clip_loss(video_batches(SMALL), cfg, SMALL.frames, 5.0, "cpu",
                          high_noise_share=share, high_noise_from=600)  # fmt: skip
        loss(oracle, 0, torch.Generator().manual_seed(2))
        drawn[share] = float((oracle.seen[0] >= 600).float().mean())
    # uniform over [0, 1000): 40% at t ≥ 600; half of them high: 0.5 + 0.5 · 0.4 = 70%
    assert 0.3 < drawn[0.0] < 0.5 and 0.6 < drawn[0.5] < 0.8 and drawn[1.0] == 1.0, drawn
    with pytest.raises(ValueError, match="high_noise_share must be in"):
        train_tiny_stdit(SMALL, TrainConfig(high_noise_share=1.5), progress=False)


def _model(prediction: str) -> Any:
    torch.manual_seed(0)
    model = replace(SMALL, prediction=prediction).build().eval()
    with torch.no_grad():  # the zero-initialised outputs get weights
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_the_sampler_reads_v_as_the_same_model_converted_to_eps() -> None:
    v_model = _model("v_prediction")
    eps_model = _model("epsilon")
    eps_model.load_state_dict(v_model.state_dict())
    v_forward = eps_model.stdit.forward

    def as_eps(x: torch.Tensor, timestep: torch.Tensor, y: torch.Tensor, mask: Any = None):
        # ε = √(1−ᾱ) x_t + √ᾱ v, from x_t = √ᾱ x₀ + √(1−ᾱ) ε and v = √ᾱ ε − √(1−ᾱ) x₀
        a = ABAR[timestep].view(-1, 1, 1, 1, 1)
        return (1 - a).sqrt() * x + a.sqrt() * v_forward(x, timestep, y, mask)

    eps_model.stdit.forward = as_eps
    request = GenerateRequest((3, 4), 6)
    with torch.inference_mode():
        read_as_v = tiny_stdit_sampler(v_model, guidance_scale=3.0)(request)
        converted = tiny_stdit_sampler(eps_model, guidance_scale=3.0)(request)
    torch.testing.assert_close(read_as_v, converted, atol=1e-4, rtol=1e-4)
    assert tiny_stdit_sampler(v_model).scheduler.config["prediction_type"] == "v_prediction"


def test_a_scheduler_that_reads_the_output_otherwise_is_refused() -> None:
    with pytest.raises(ValueError, match=r"predicts 'v_prediction' but the scheduler reads"):
        STDiTSampler(_model("v_prediction"), ddim_linear(), 3.0)
    with pytest.raises(ValueError, match=r"predicts 'epsilon' but"):
        STDiTSampler(_model("epsilon"), ddim_linear("v_prediction"), 3.0)
    with pytest.raises(ValueError, match="prediction must be one of"):
        TinySTDiTConfig(prediction="sample")


def test_a_video_stage_with_a_frame_table_starts_from_an_image_stage_without_one(
    tmp_path: Path,
) -> None:
    torch.manual_seed(4)
    image = replace(SMALL, frames=1, frame_embed=False, prediction="epsilon").build()
    with torch.no_grad():
        for p in image.parameters():
            p.normal_(0, 0.05)
    path = tmp_path / "image.safetensors"
    save_tiny_stdit(image, path, {})
    video_cfg = replace(SMALL, frame_embed=True, prediction="v_prediction")
    sincos = video_cfg.build().stdit.pos_embed_temporal  # (1, T, D)
    still = TrainConfig(steps=1, batch_size=2, warmup=1, lr=1e-12, image_steps=0, init="none")
    model, _ = train_tiny_stdit(video_cfg, still, progress=False, init_weights=path)
    assert model.cfg == video_cfg
    torch.testing.assert_close(model.stdit.frame_embed.data, sincos)  # a fresh table
    trained = replace(still, steps=3, lr=1e-2, video_trains="temporal")
    model, _ = train_tiny_stdit(video_cfg, trained, progress=False, init_weights=path)
    assert not torch.allclose(model.stdit.frame_embed.data, sincos)  # the table learns
    out = tmp_path / "video.safetensors"
    save_tiny_stdit(model, out, {})
    loaded = load_tiny_stdit(out)
    assert loaded.cfg == video_cfg
    torch.testing.assert_close(
        loaded.stdit.frame_embed.data, model.stdit.frame_embed.data.half().float()
    )


def test_a_whole_recipe_with_table_and_v_runs_its_image_stage_without_them() -> None:
    video_cfg = replace(SMALL, frame_embed=True, prediction="v_prediction")
    cfg = TrainConfig(steps=2, batch_size=2, warmup=1, init="none", image_steps=2,
                      image_batch_size=4, image_target="noise", high_noise_share=0.5)  # fmt: skip
    model, log = train_tiny_stdit(video_cfg, cfg, progress=False)
    assert log["image"]["steps_run"] == 2 and log["video"]["steps_run"] == 2
    assert model.cfg == video_cfg and model.stdit.frame_embed is not None
