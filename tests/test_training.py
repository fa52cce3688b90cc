"""Helpers of the shared training loop."""

from __future__ import annotations

import torch

from blockdance.training import linear_alphas_cumprod, min_snr_mean


def test_min_snr_mean_scales_clean_timesteps_down_and_keeps_noisy_ones():
    abar = linear_alphas_cumprod()
    a = abar[torch.tensor([0, 999])].view(-1, 1, 1, 1)  # nearly clean, nearly pure noise
    snr = a.flatten() / (1 - a.flatten())
    assert snr[0] > 5 > snr[1]
    losses = torch.tensor([1.0, 1.0])
    weighted = min_snr_mean(losses, a, 5.0)
    torch.testing.assert_close(weighted, (5.0 / snr[0] + 1.0) / 2)
    assert min_snr_mean(losses, a, 0.0) == 1.0  # off: the plain mean
