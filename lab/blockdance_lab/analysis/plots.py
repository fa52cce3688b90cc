"""Pictures of a :class:`~blockdance_lab.analysis.trace.Trace` (matplotlib, optional).

- :func:`save_surface`: the (step, block, relative L2) surface in 3-D, as in the paper's
  Figure 11;
- :func:`save_heatmap`: the same numbers as a block × step heat-map (log colour scale), with
  the architecture's default boundary and window drawn on it;
- :func:`save_x0_curve`: SSIM between adjacent steps' x̂₀, per guidance branch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from blockdance.policies.blockdance import window_steps
from blockdance_lab.analysis.trace import Trace
from blockdance_lab.report import load_pyplot

__all__ = ["save_heatmap", "save_surface", "save_x0_curve"]


def _title(trace: Trace) -> str:
    what = trace.meta.get("workload") or trace.architecture
    return f"{what}: {trace.num_steps} steps, {trace.num_blocks} blocks"


def save_surface(trace: Trace, path: str | Path) -> Path | None:
    """3-D surface: step × block → relative L2 to the previous step (branch mean)."""
    plt = load_pyplot()
    if plt is None:
        return None
    from mpl_toolkits.mplot3d import Axes3D  # noqa: F401  (registers the 3-D projection)

    dist = trace.distance()[1:]  # (steps - 1, blocks): step 0 has no previous step
    steps = np.arange(1, trace.num_steps)
    blocks = np.arange(trace.num_blocks)
    sx, bx = np.meshgrid(steps, blocks, indexing="ij")
    fig = plt.figure(figsize=(7, 5))
    ax = fig.add_subplot(projection="3d")
    ax.plot_surface(sx, bx, np.nan_to_num(dist), cmap="viridis", linewidth=0, antialiased=True)
    ax.set_xlabel("step")
    ax.set_ylabel("block")
    ax.set_zlabel("relative L2 to previous step")
    ax.view_init(elev=28, azim=-125)
    ax.set_title(_title(trace), fontsize=9)
    return _save(plt, fig, path)


def save_heatmap(trace: Trace, path: str | Path) -> Path | None:
    """Heat-map of relative L2 (blocks up, steps across), default boundary and window drawn."""
    plt = load_pyplot()
    if plt is None:
        return None
    from matplotlib.colors import LogNorm

    dist = trace.distance().T  # (blocks, steps)
    finite = dist[np.isfinite(dist) & (dist > 0)]
    norm = LogNorm(vmin=finite.min(), vmax=finite.max()) if finite.size else None
    fig, ax = plt.subplots(figsize=(8, 4))
    im = ax.imshow(
        np.where(dist > 0, dist, np.nan) if norm else dist,
        origin="lower",
        aspect="auto",
        cmap="magma",
        norm=norm,
        interpolation="nearest",
    )
    fig.colorbar(im, ax=ax, label="relative L2 to previous step")
    window = window_steps(trace.default_window, trace.num_steps)
    b = trace.default_boundary
    ax.axhline(b + 0.5, color="cyan", lw=1, ls="--", label=f"default boundary (block {b})")
    if len(window):
        ax.axvline(window.start - 0.5, color="lime", lw=1, ls="--", label="default window")
        ax.axvline(window.stop - 0.5, color="lime", lw=1, ls="--")
    ax.set_xlabel("step")
    ax.set_ylabel("block")
    ax.set_title(_title(trace) + " — change of each block's output", fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    return _save(plt, fig, path)


def save_x0_curve(
    trace: Trace, path: str | Path, threshold: float | None = None, settle: int | None = None
) -> Path | None:
    """SSIM between x̂₀ at steps s−1 and s, per branch (and the threshold, settle step)."""
    plt = load_pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = np.arange(trace.num_steps)
    for br in range(trace.num_branches):
        label = f"branch {br}" if trace.num_branches > 1 else "x̂₀ SSIM"
        ax.plot(steps, trace.x0_ssim[br], marker=".", lw=1, label=label)
    if threshold is not None:
        ax.axhline(threshold, color="grey", lw=1, ls="--", label=f"threshold {threshold:g}")
    if settle is not None:
        ax.axvline(settle, color="tab:red", lw=1, ls=":", label=f"settled at step {settle}")
    ax.set_xlabel("step")
    ax.set_ylabel("SSIM(x̂₀ at s−1, x̂₀ at s)")
    ax.set_title(_title(trace) + " — predicted clean sample", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def _save(plt: Any, fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
