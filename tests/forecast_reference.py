"""An extrapolation written independently of blockdance's forecast code, for the tests."""

from __future__ import annotations

import torch


def lagrange(points: list[tuple[int, torch.Tensor]], s: float) -> torch.Tensor:
    """The polynomial through ``points`` ((step, value), distinct steps) evaluated at ``s``,
    in Lagrange form."""
    total = torch.zeros_like(points[0][1])
    for j, (xj, yj) in enumerate(points):
        weight = 1.0
        for m, (xm, _) in enumerate(points):
            if m != j:
                weight *= (s - xm) / (xj - xm)
        total = total + weight * yj
    return total
