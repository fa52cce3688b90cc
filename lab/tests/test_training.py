"""Helpers of the shared training loop."""

from __future__ import annotations

import torch

from blockdance_lab.training import TrainConfig, linear_alphas_cumprod, min_snr_mean, train_with_ema


def test_min_snr_mean_scales_clean_timesteps_down_and_keeps_noisy_ones():
    abar = linear_alphas_cumprod()
    a = abar[torch.tensor([0, 999])].view(-1, 1, 1, 1)  # nearly clean, nearly pure noise
    snr = a.flatten() / (1 - a.flatten())
    assert snr[0] > 5 > snr[1]
    losses = torch.tensor([1.0, 1.0])
    weighted = min_snr_mean(losses, a, 5.0)
    torch.testing.assert_close(weighted, (5.0 / snr[0] + 1.0) / 2)
    assert min_snr_mean(losses, a, 0.0) == 1.0  # off: the plain mean


def test_on_step_sees_each_step_and_the_ema_model_it_returns():
    seen: list[tuple[int, float]] = []

    def loss_fn(model: torch.nn.Linear, step: int, gen: torch.Generator) -> torch.Tensor:
        return (model.weight - 1.0).square().sum()

    def on_step(step: int, ema: torch.nn.Linear) -> None:
        seen.append((step, float(ema.weight.sum())))

    cfg = TrainConfig(steps=5, batch_size=1, lr=0.1, warmup=1)
    ema, log = train_with_ema(lambda: torch.nn.Linear(2, 1), loss_fn, cfg, progress=False,
                              on_step=on_step)  # fmt: skip
    assert [s for s, _ in seen] == [0, 1, 2, 3, 4] and log["steps_run"] == 5
    assert seen[-1][1] == float(ema.weight.sum())
    assert seen[0][1] != seen[-1][1]  # the EMA moves with training
