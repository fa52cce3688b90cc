"""Tables, metrics and pictures shared by ``blockdance demo`` and ``blockdance bench``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from blockdance_lab.compare import PolicyRun
from blockdance_lab.evaluation.metrics import class_accuracy, frechet_distance, psnr, ssim
from blockdance_lab.workload import Workload


def _frames(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) stays; video (N, F, C, H, W) becomes per-frame (N*F, C, H, W)."""
    return x.flatten(0, 1) if x.dim() == 5 else x


def _per_seed(values: torch.Tensor, seeds: int) -> list[float]:
    """Per-frame values ``(N*F,)`` (or per-image ``(N,)``) -> one mean per seed."""
    return [float(v) for v in values.float().reshape(seeds, -1).mean(dim=1)]


def add_consistency_metrics(runs: Sequence[PolicyRun]) -> None:
    """SSIM and PSNR of each run's samples against the first run's (same seeds), per seed
    (``run.per_seed``) and their means (``run.metrics``); failed runs are left out.

    Videos ``(N, F, C, H, W)`` of more than one frame are compared frame by frame, and also
    get, per seed, ``temporal`` (the mean SSIM between the video's adjacent frames: its own
    smoothness, :func:`temporal_per_seed`) and ``temporal_change`` (that value over the first
    run's for the same seed, minus 1: ``-0.02`` is 2% less smooth than the baseline)."""
    base = _frames(runs[0].samples).float()
    seeds = runs[0].samples.shape[0]
    data_range = float(base.max() - base.min()) or 1.0
    t_base = runs[0].latency
    video = runs[0].samples.dim() == 5 and runs[0].samples.shape[1] > 1
    base_temporal = temporal_per_seed(runs[0].samples, data_range) if video else []
    for run in runs:
        if run.error is not None:
            continue
        x = _frames(run.samples).float()
        run.per_seed["ssim"] = _per_seed(ssim(x, base, data_range=data_range), seeds)
        run.per_seed["psnr"] = _per_seed(psnr(x, base, data_range=data_range, max_db=100.0), seeds)
        for key in ("ssim", "psnr"):
            run.metrics[key] = sum(run.per_seed[key]) / seeds
        if video:
            temporal = temporal_per_seed(run.samples, data_range)
            run.per_seed["temporal"] = temporal
            run.per_seed["temporal_change"] = [t / b - 1.0 for t, b in zip(temporal, base_temporal)]
            run.metrics["temporal"] = sum(temporal) / seeds
            run.metrics["temporal_change"] = sum(run.per_seed["temporal_change"]) / seeds
        run.metrics["reduction"] = 1.0 - run.latency / t_base
        if not run.external:
            run.metrics["ideal"] = run.stats.saved_fraction
        elif run.stats.block_calls < runs[0].stats.block_calls:
            # a diffusers cache that skips whole blocks: the blocks that never ran
            run.metrics["ideal"] = 1.0 - run.stats.block_calls / runs[0].stats.block_calls


def temporal_consistency(videos: torch.Tensor, data_range: float = 2.0) -> float:
    """Mean SSIM between adjacent frames of videos ``(N, F, C, H, W)``: how smoothly they
    move (compare a policy's with the baseline's)."""
    return sum(temporal_per_seed(videos, data_range)) / videos.shape[0]


def temporal_per_seed(videos: torch.Tensor, data_range: float = 2.0) -> list[float]:
    """Per video of ``(N, F, C, H, W)``, the mean SSIM between its adjacent frames: one
    value per seed, in order.

    Raises:
        ValueError: ``videos`` is not 5-D or has fewer than two frames.
    """
    if videos.dim() != 5 or videos.shape[1] < 2:
        raise ValueError(
            f"temporal consistency needs videos (N, F, C, H, W) of at least 2 frames, got "
            f"shape {tuple(videos.shape)}"
        )
    a = videos[:, 1:].flatten(0, 1).float()  # (N*(F-1), C, H, W)
    b = videos[:, :-1].flatten(0, 1).float()
    return _per_seed(ssim(a, b, data_range=data_range), videos.shape[0])


def add_quality_metrics(
    runs: Sequence[PolicyRun], workload: Workload, seeds: Sequence[int], reference_size: int = 1024
) -> None:
    """FD-probe against real samples and class accuracy, when the workload has a probe.

    Per seed (``run.per_seed``): ``correct`` (1 when the probe's class is the asked one) and
    ``class_logit`` (the probe's logit of the asked class). FD-probe is one number per set."""
    if workload.probe is None:
        return
    probe = workload.probe()
    real = probe.features(probe.reference(max(reference_size, len(seeds))))
    labels = probe.labels(seeds).long()
    for run in runs:
        if run.error is not None:
            continue
        x = run.samples.clamp(-1, 1)
        logits = probe.logits(x).float()
        if x.shape[0] > 1:  # a set metric: one sample has no covariance to compare
            run.metrics["fd_probe"] = frechet_distance(probe.features(x), real)
        run.metrics["accuracy"] = class_accuracy(logits, labels)
        asked = labels.to(logits.device)
        run.per_seed["correct"] = (logits.argmax(dim=-1) == asked).float().tolist()
        run.per_seed["class_logit"] = logits.gather(1, asked[:, None])[:, 0].tolist()


COLUMNS = [
    # (metric key, header, format)
    ("latency", "latency s", "{:.3f}"),
    ("reduction", "reduction", "{:.1%}"),
    ("ideal", "ideal", "{:.1%}"),
    ("of_ideal", "of ideal", "{:.0%}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("psnr", "PSNR dB", "{:.2f}"),
    ("temporal", "temporal", "{:.4f}"),
    ("fd_probe", "FD-probe", "{:.2f}"),
    ("accuracy", "accuracy", "{:.3f}"),
    ("cache_mib", "cache MiB", "{:.2f}"),
]


def format_table(runs: Sequence[PolicyRun]) -> str:
    """The demo's table as aligned text (columns without values are left out)."""
    rows = []
    for run in runs:
        m = dict(run.metrics, latency=run.latency)
        if not run.external:  # a diffusers cache's memory is not blockdance's to count
            m["cache_mib"] = run.stats.peak_cache_bytes / 2**20
        if m.get("ideal", 0) > 0:
            m["of_ideal"] = m["reduction"] / m["ideal"]
        rows.append((run.label, m))
    cols = [c for c in COLUMNS if any(c[0] in m for _, m in rows)]
    widths = [max(len(h), 8) + 2 for _, h, _ in cols]
    header = f"{'policy':<18}" + "".join(f"{h:>{w}}" for (_, h, _), w in zip(cols, widths))
    lines = [header, "-" * len(header)]
    for label, m in rows:
        cells = [fmt.format(m[k]) if k in m else "-" for k, _, fmt in cols]
        lines.append(f"{label:<18}" + "".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
    return "\n".join(lines)


def save_sample_grid(runs: Sequence[PolicyRun], path: Path, count: int = 8) -> Path | None:
    """A PNG with one row per policy and the same seeds in each column."""
    plt = load_pyplot()
    if plt is None:
        return None
    count = min(count, runs[0].samples.shape[0])
    fig, axes = plt.subplots(
        len(runs), count, figsize=(1.1 * count + 1.2, 1.15 * len(runs)), squeeze=False
    )
    for row, run in zip(axes, runs):
        for col, ax in enumerate(row):
            img = _frames(run.samples[col : col + 1])[0]  # first frame of a video
            ax.imshow(
                ((img.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).float().numpy(),
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(run.label, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle("same seeds, same noise: baseline and reuse policies", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_video_gif(
    runs: Sequence[PolicyRun], path: Path, count: int = 4, frame_ms: int = 160
) -> Path:
    """An animated GIF of videos ``(N, F, C, H, W)``: one row per policy, the same seeds
    in each column, all playing in step; and a PNG strip of every frame beside it.

    Args:
        runs: Runs whose samples are videos in [-1, 1].
        path: The ``.gif`` to write; the strip goes to ``<stem>_strip.png``.
        count: Seeds (columns) to show.
        frame_ms: Display time of a frame.
    """
    from PIL import Image

    count = min(count, runs[0].samples.shape[0])
    pad = 2
    # (policies, seeds, F, C, H, W) -> per frame a (policies*H, seeds*W) mosaic
    clips = torch.stack([r.samples[:count].float() for r in runs])
    clips = torch.nn.functional.pad(((clips.clamp(-1, 1) + 1) / 2), (0, pad, 0, pad), value=1.0)
    p, n, f, c, h, w = clips.shape
    mosaic = clips.permute(2, 0, 4, 1, 5, 3).reshape(f, p * h, n * w, c)  # (F, pH, nW, C)
    pixels = (mosaic * 255).round().to(torch.uint8).numpy()
    frames = [
        Image.fromarray(frame).resize((n * w * 4, p * h * 4), Image.Resampling.NEAREST)
        for frame in pixels
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    strip = torch.cat(list(torch.from_numpy(pixels)), dim=1)  # frames side by side (pH, F*nW, C)
    Image.fromarray(strip.numpy()).save(path.with_name(f"{path.stem}_strip.png"))
    return path


def load_pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping pictures (pip install blockdance[plot])")
        return None
    return plt


def label_boxes(annotations: Sequence[Any], renderer: Any) -> list[Any]:
    """The display boxes of annotations' texts (not their leader lines), each measured at
    its current position."""
    from matplotlib.text import Text

    boxes = []
    for ann in annotations:
        ann.update_positions(renderer)  # an annotation moves its text only when drawn
        boxes.append(Text.get_window_extent(ann, renderer))
    return boxes


def _overlaps(a: Any, b: Any) -> bool:
    """Whether two display boxes share area (touching edges do not count)."""
    return bool(a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1)


def place_labels(
    ax: Any,
    points: Sequence[tuple[float, float]],
    labels: Sequence[str],
    fontsize: float = 7,
    colors: Sequence[str] | None = None,
    offset: float = 4,
) -> list[Any]:
    """Annotate each point with its label, moving a label up or down (a leader line joins
    it to its point) until its text overlaps no label already placed.

    Call it after the axes' limits and the figure's layout are final: it measures the
    labels with the figure's renderer.

    Args:
        ax: The axes.
        points: Data coordinates of the points.
        labels: One label per point.
        fontsize: Label size in points.
        colors: One text colour per point (default: matplotlib's text colour).
        offset: Horizontal distance of a label from its point, in points.

    Returns:
        The annotations, in the order of ``points``.
    """
    renderer = ax.figure.canvas.get_renderer()
    step = fontsize + 2  # points
    placed: list[Any] = []
    annotations: list[Any] = [None] * len(points)
    for i in sorted(range(len(points)), key=lambda i: -points[i][1]):  # top label first
        ann = ax.annotate(
            labels[i],
            points[i],
            xytext=(offset, 2),
            textcoords="offset points",
            fontsize=fontsize,
            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.6", "shrinkA": 0, "shrinkB": 3},
            **({"color": colors[i]} if colors is not None else {}),
        )
        for k in range(1, 400):
            (box,) = label_boxes([ann], renderer)
            if not any(_overlaps(box, other) for other in placed):
                break
            shift = (k + 1) // 2 * step * (1 if k % 2 else -1)  # up, down, further up, ...
            ann.xyann = (offset, 2 + shift)
        placed.extend(label_boxes([ann], renderer))
        annotations[i] = ann
    return annotations


def save_reuse_maps(runs: Sequence[PolicyRun], path: Path) -> Path | None:
    """A PNG of each run's (step, block) map: computed vs reused."""
    plt = load_pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, len(runs), figsize=(2.2 * len(runs), 4), squeeze=False)
    for ax, run in zip(axes[0], runs):
        grid = torch.tensor(run.stats.reuse_map(), dtype=torch.float32).numpy()
        ax.imshow(grid, aspect="auto", cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(run.label, fontsize=9)
        ax.set_xlabel("block")
    axes[0][0].set_ylabel("step (green = reused)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
