"""Pictures of a :class:`~blockdance_lab.analysis.trace.Trace` (matplotlib, optional).

- :func:`save_surface`: the (step, block, relative L2) surface in 3-D, as in the paper's
  Figure 11;
- :func:`save_heatmap`: the same numbers as a block × step heat-map (log colour scale), with
  the architecture's default boundary and window drawn on it;
- :func:`save_x0_curve`: SSIM between adjacent steps' x̂₀, per guidance branch;
- :func:`save_validation_plot`: a validation's measured SSIM against the ideal saving.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from blockdance.policies.blockdance import window_steps
from blockdance_lab.analysis.trace import Trace
from blockdance_lab.report import label_boxes, load_pyplot, place_labels

if TYPE_CHECKING:
    from blockdance_lab.analysis.calibrate import Calibration
    from blockdance_lab.analysis.validate import Planned

__all__ = [
    "label_boxes",
    "place_labels",
    "save_heatmap",
    "save_surface",
    "save_validation_plot",
    "save_x0_curve",
    "validation_figure",
]

#: Marker colour of each source of a validated configuration.
SOURCE_COLOURS = {
    "rule": "tab:blue",
    "shortlist": "tab:blue",
    "default": "tab:orange",
    "given": "tab:purple",
}
#: Marker colour of each forecast order in a combination's plot (0: plain blockdance).
ORDER_COLOURS = {0: "tab:blue", 1: "tab:green", 2: "tab:brown"}


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


def validation_figure(calibration: Calibration, title: str = "") -> tuple[Any, list[Any]]:
    """SSIM to the full model (95% interval over the seeds) against the ideal saving (the
    share of block calls skipped; exact) of each validated configuration, with the target
    saving drawn; the chosen one is ringed, those below the target are hollow. For a
    combination (several N or forecast orders) the found configurations are coloured by
    their forecast order, the defaults drawn as squares, and each label names N and order.

    Returns:
        The figure and its label annotations.

    Raises:
        ValueError: The calibration was not validated.
    """
    validation = calibration.validation
    if validation is None:
        raise ValueError("the calibration was not validated: nothing measured to plot")
    plt = load_pyplot()
    combination = calibration.is_combination
    shown = [m for m in validation.measured if m.saving is not None]
    # a combination measures tens of configurations: room for a label each
    size = (10, max(5.6, 0.22 * len(shown))) if combination else (8, 4.8)
    fig, ax = plt.subplots(figsize=size)
    points = [(float(m.saving), m.ssim.mean) for m in shown]  # type: ignore[arg-type]
    for m, (x, y) in zip(shown, points):
        colour, marker = _style(m.planned, combination)
        err = [[y - m.ssim.low], [m.ssim.high - y]]
        ax.errorbar(
            x,
            y,
            yerr=err,
            fmt=marker,
            ms=6,
            capsize=2,
            color=colour,
            mfc=colour if m.eligible else "white",
            zorder=3,
        )
        if validation.chosen is m:
            ax.plot(x, y, "o", ms=14, mfc="none", mec="tab:red", mew=1.5, zorder=4)
    ax.axvline(
        validation.target_saving,
        color="grey",
        ls="--",
        lw=1,
        label=f"target saving {validation.target_saving:.1%}",
    )
    if combination:
        for order in sorted({m.planned.order for m in shown if m.planned.candidate}):
            kind = "blockdance" if order == 0 else f"blockdance-forecast order {order}"
            ax.plot([], [], "o", color=ORDER_COLOURS[order], label=kind)
        if any(m.planned.source == "default" for m in shown):
            ax.plot([], [], "s", color="0.4", label="default boundary and window")
        if any(m.planned.source == "given" for m in shown):
            ax.plot([], [], "o", color=SOURCE_COLOURS["given"], label="given (--candidate)")
    for source, name in (("rule", "found by calibration"), ("default", "default"),
                         ("given", "given (--candidate)")):  # fmt: skip
        if combination:
            break
        if any(m.planned.source in (source, "shortlist" if source == "rule" else source)
               for m in shown):  # fmt: skip
            ax.plot([], [], "o", color=SOURCE_COLOURS[source], label=name)
    if any(not m.eligible for m in shown):
        ax.plot([], [], "o", mfc="white", mec="0.4", label="below the target: not chosen")
    ax.plot([], [], "o", ms=10, mfc="none", mec="tab:red", label="chosen")
    xlabel = "ideal saving (share of block calls skipped; exact)"
    missing = [m.label for m in validation.measured if m.saving is None]
    if missing:
        xlabel += f"\nnot shown (no ideal saving): {', '.join(missing)}"
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("SSIM to the full model (95% CI over seeds)", fontsize=8)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.grid(alpha=0.3)
    ax.margins(x=0.3, y=0.2)
    ax.legend(fontsize=7, loc="lower left")
    first = validation.seeds[0] if validation.seeds else 0
    ax.set_title(
        (title or "validation") + f" — {len(validation.seeds)} seeds from {first}", fontsize=9
    )
    fig.tight_layout()
    ax.set_xlim(ax.get_xlim())  # freeze the limits the labels are measured against
    ax.set_ylim(ax.get_ylim())
    labels = [_short_label(m.planned, combination) for m in shown]
    annotations = place_labels(ax, points, labels, fontsize=6 if combination else 7, offset=6)
    return fig, annotations


def _style(planned: Planned, combination: bool) -> tuple[str, str]:
    """Marker colour and shape of a validated configuration."""
    if not combination or planned.candidate is None:
        return SOURCE_COLOURS.get(planned.source, "tab:gray"), "o"
    marker = "s" if planned.source == "default" else "o"
    return ORDER_COLOURS.get(planned.order, "tab:gray"), marker


def _short_label(planned: Planned, combination: bool = False) -> str:
    """A plot label: a found candidate by its boundary and window (N is in the title), or
    for a combination by N, boundary, window and forecast order."""
    c = planned.candidate
    if c is None:
        return planned.label
    tag = {"rule": " (rule)", "default": " (default)"}.get(planned.source, "")
    if combination:
        return f"N={c.N} b{c.boundary} {c.window[0]:.0%}-{c.window[1]:.0%} o{planned.order}{tag}"
    return f"boundary {c.boundary}, {c.window[0]:.0%}-{c.window[1]:.0%}{tag}"


def save_validation_plot(
    calibration: Calibration, path: str | Path, title: str = ""
) -> Path | None:
    """Write :func:`validation_figure` to ``path``; None when matplotlib is not installed."""
    plt = load_pyplot()
    if plt is None:
        return None
    fig, _ = validation_figure(calibration, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _save(plt: Any, fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
