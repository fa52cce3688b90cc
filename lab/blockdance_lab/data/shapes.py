"""Procedural images and videos of coloured shapes, deterministic by seed.

Each sample is a shape (circle, square, triangle, cross) in a saturated colour (red, green,
blue, yellow) on a muted background of one of five kinds (plain, stripes, checker, gradient,
noise). The 16 shape × colour pairs are the classes; every sample also has a caption such as
``"a red circle on a striped background"``. Videos show one shape moving in a straight line
across a static background, captioned ``"a red circle moving left on a striped background"``.
By default their shapes are smaller than the stills', so that they have room to travel;
``shape_size="image"`` draws them at the stills' sizes, travelling the little room left.

Sample ``i`` of seed ``s`` is a pure function of ``(s, i)``: every random draw comes from a
counter-based hash of ``(seed, stream, index, slot)``, so batches, datasets and data-loader
workers all agree, whatever the order they render in. Shapes and stripes are anti-aliased
analytically (coverage ``clamp(0.5 - signed_distance)`` in pixel units) instead of by
supersampling, which keeps rendering a cheap, fully vectorised pass over the batch.

Images are float32 tensors in ``[-1, 1]`` of shape ``(3, H, W)``; videos ``(T, 3, H, W)``.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, TypeVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "BACKGROUNDS",
    "CLASS_NAMES",
    "COLORS",
    "DIRECTIONS",
    "MOTIONS",
    "SHAPES",
    "SHAPE_SIZES",
    "Motion",
    "ShapeSample",
    "ShapeSize",
    "ShapesDataset",
    "ShapesVideoDataset",
    "VideoSample",
    "caption_for",
    "check_motion",
    "check_shape_size",
    "class_index",
    "make_batch",
    "make_video_batch",
    "num_classes",
    "opposite_direction",
]

# --------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow")
BACKGROUNDS: tuple[str, ...] = ("plain", "striped", "checkered", "gradient", "noisy")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")

_COLOR_RGB = torch.tensor(
    [
        [0.90, 0.10, 0.10],  # red
        [0.10, 0.75, 0.15],  # green
        [0.15, 0.30, 0.95],  # blue
        [0.95, 0.85, 0.10],  # yellow
    ]
)

CLASS_NAMES: list[str] = [f"{color} {shape}" for shape in SHAPES for color in COLORS]
"""Class ``k`` is ``SHAPES[k // len(COLORS)]`` in colour ``COLORS[k % len(COLORS)]``."""

num_classes: int = len(CLASS_NAMES)

_DEFAULT_FRAMES = 8


def class_index(shape: str, color: str) -> int:
    """Returns the class label of a shape in a colour.

    Args:
        shape: One of ``SHAPES``.
        color: One of ``COLORS``.
    """
    return SHAPES.index(shape) * len(COLORS) + COLORS.index(color)


def caption_for(shape: str, color: str, background: str, direction: str | None = None) -> str:
    """Builds the caption of a sample, e.g. ``"a red circle moving left on a plain background"``.

    Args:
        shape: One of ``SHAPES``.
        color: One of ``COLORS``.
        background: One of ``BACKGROUNDS``.
        direction: For videos, one of ``DIRECTIONS``; ``None`` for still images.
    """
    motion = f" moving {direction}" if direction is not None else ""
    return f"a {color} {shape}{motion} on a {background} background"


_OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def opposite_direction(caption: str) -> str:
    """The same caption asking for the opposite motion (left ↔ right, up ↔ down).

    A control for video models: sampled from the same noise, a model that reads the
    direction word draws the shape moving the other way; one that ignores it draws the
    same video.

    Raises:
        ValueError: The caption names no direction (a still image's caption).
    """
    words = caption.split()
    if not any(w in _OPPOSITE for w in words):
        raise ValueError(f"caption {caption!r} names no direction ({', '.join(DIRECTIONS)})")
    return " ".join(_OPPOSITE.get(w, w) for w in words)


# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------


class ShapeSample(NamedTuple):
    """One image; a NamedTuple so ``torch.utils.data.default_collate`` batches it field-wise."""

    image: Tensor  # (3, H, W) float32 in [-1, 1]
    label: int
    caption: str
    shape: str
    color: str
    background: str


class VideoSample(NamedTuple):
    """One video clip of a shape moving in a straight line over a static background."""

    video: Tensor  # (T, 3, H, W) float32 in [-1, 1]
    label: int
    caption: str
    shape: str
    color: str
    background: str
    direction: str
    centers: Tensor  # (T, 2) shape centre per frame, (x, y) in pixels


# --------------------------------------------------------------------------------------
# Counter-based randomness: uniform(seed, stream, index, slot), order independent
# --------------------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_STREAM_IMAGE = 0x1A2B3C4D
_STREAM_VIDEO = 0x5E6F7081
_STREAM_NOISE = 0x33AA55CC


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _uniform(seed: int, stream: int, indices: Tensor, n_slots: int) -> Tensor:
    """Uniform draws in ``[0, 1)`` keyed by ``(seed, stream, index, slot)``.

    Args:
        seed: Dataset seed (any Python int; reduced modulo 2**64).
        stream: Domain-separation constant so image, video and noise draws are independent.
        indices: (N,) integer sample indices.
        n_slots: Number of independent draws per sample.

    Returns:
        (N, n_slots) float32 tensor.
    """
    base = _mix(np.array([(seed & _MASK64) ^ stream], dtype=np.uint64))
    idx = indices.detach().cpu().numpy().astype(np.int64).astype(np.uint64)
    keys = _mix(base ^ _mix(idx))  # (N,)
    slots = (np.arange(1, n_slots + 1, dtype=np.uint64) * _GOLDEN)[None, :]
    bits = _mix(keys[:, None] ^ slots)  # (N, S)
    u = (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    return torch.from_numpy(u).float()


def _pick(u: Tensor, n: int) -> Tensor:
    """Maps uniforms in ``[0, 1)`` to integers in ``[0, n)``."""
    return (u * n).long().clamp_(max=n - 1)


def _lerp(lo: float, hi: float, u: Tensor) -> Tensor:
    return lo + (hi - lo) * u


# --------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------

_N_SLOTS = 32
# Shape half-extent as a fraction of the image size (stills, videos).
_SIZE_IMAGE = (0.22, 0.36)
_SIZE_VIDEO = (0.14, 0.24)

#: Which size range a video's shape is drawn from: ``"video"``, half-extent 14–24% of the
#: frame (the default, room to travel), or ``"image"``, the stills' 22–36%.
ShapeSize = Literal["video", "image"]
SHAPE_SIZES: tuple[ShapeSize, ...] = ("video", "image")
_SIZE_RANGES: dict[str, tuple[float, float]] = {"video": _SIZE_VIDEO, "image": _SIZE_IMAGE}
#: How a video's shape moves: ``"random"``, 60–100% of the room its size leaves, from a
#: random start, drifting up to 15% across (the default); ``"crossing"``, from one edge of
#: that room to the other along the caption's direction, without drift, so the caption and
#: the shape's size and place across fix the whole path; ``"fixed"``, crossing with every
#: shape at the middle of its size range and centred across, so the caption alone fixes it.
Motion = Literal["random", "crossing", "fixed"]
MOTIONS: tuple[Motion, ...] = ("random", "crossing", "fixed")
_TRIANGLE_R = 1.2  # triangle circumradius / half-extent: similar area to the other shapes
_CROSS_T = 0.42  # cross arm half-thickness / half-extent
_SQUARE_S = 0.85  # square half-side / half-extent


class _Params(NamedTuple):
    shape: Tensor  # (N,) long
    color: Tensor  # (N,) long
    rgb: Tensor  # (N, 3) shape colour in [0, 1]
    shade: Tensor  # (N,) top-to-bottom lighting strength
    radius: Tensor  # (N,) half-extent in pixels
    background: Tensor  # (N,) long
    bg_rgb: Tensor  # (N, 2, 3) two background colours in [0, 1]
    bg_angle: Tensor  # (N,) radians
    bg_period: Tensor  # (N,) pixels
    bg_phase: Tensor  # (N, 2) in [0, 1)
    u: Tensor  # (N, S) raw draws, for position / motion


def _hue_rgb(h: Tensor) -> Tensor:
    """Fully saturated RGB of hue ``h`` in [0, 1): (N,) -> (N, 3)."""
    k = torch.tensor([0.0, 4.0, 2.0])
    return ((h[:, None] * 6.0 + k) % 6.0 - 3.0).abs().sub(1.0).clamp(0.0, 1.0)


def _muted(gray: Tensor, hue: Tensor, sat: Tensor) -> Tensor:
    """A low-saturation colour: grey level plus a tint, so saturated shapes stand out."""
    tint = _hue_rgb(hue)
    tint = tint - tint.mean(dim=1, keepdim=True)
    return (gray[:, None] + sat[:, None] * tint).clamp(0.0, 1.0)


def check_shape_size(shape_size: str) -> ShapeSize:
    """``shape_size`` as a :data:`ShapeSize`, or a ValueError naming the choices."""
    if shape_size not in _SIZE_RANGES:
        raise ValueError(
            f"shape_size must be one of {SHAPE_SIZES}, got {shape_size!r}: 'video' for the "
            "videos' smaller shapes, 'image' for the stills' sizes"
        )
    return cast(ShapeSize, shape_size)


def check_motion(motion: str) -> Motion:
    """``motion`` as a :data:`Motion`, or a ValueError naming the choices."""
    if motion not in MOTIONS:
        raise ValueError(
            f"motion must be one of {MOTIONS}, got {motion!r}: 'random' for paths of random "
            "length and start, 'crossing' for edge-to-edge paths, 'fixed' for one path per "
            "caption"
        )
    return cast(Motion, motion)


def _sample_params(
    seed: int, indices: Tensor, stream: int, image_size: int, shape_size: str = "video"
) -> _Params:
    """Draws every sample's parameters; ``shape_size`` picks the videos' size range (stills
    always use theirs). Only the radius depends on it: the other draws are the same."""
    u = _uniform(seed, stream, indices, _N_SLOTS)
    shape = _pick(u[:, 0], len(SHAPES))
    color = _pick(u[:, 1], len(COLORS))
    background = _pick(u[:, 2], len(BACKGROUNDS))
    lo, hi = _SIZE_RANGES[shape_size] if stream == _STREAM_VIDEO else _SIZE_IMAGE
    radius = _lerp(lo, hi, u[:, 3]) * image_size
    rgb = (_COLOR_RGB[color] + _lerp(-0.06, 0.06, u[:, 6:9])).clamp(0.0, 1.0)
    shade = _lerp(0.0, 0.18, u[:, 9])

    gray0 = _lerp(0.2, 0.8, u[:, 10])
    contrast = _lerp(0.15, 0.35, u[:, 11])
    up = gray0 + contrast <= 0.95
    gray1 = torch.where(up, gray0 + contrast, gray0 - contrast)
    c0 = _muted(gray0, u[:, 12], _lerp(0.0, 0.25, u[:, 13]))
    c1 = _muted(gray1, u[:, 14], _lerp(0.0, 0.25, u[:, 15]))
    bg_rgb = torch.stack([c0, c1], dim=1)
    bg_angle = u[:, 16] * math.pi
    bg_period = _lerp(0.14, 0.32, u[:, 17]) * image_size
    bg_phase = u[:, 18:20].clone()
    return _Params(
        shape, color, rgb, shade, radius, background, bg_rgb, bg_angle, bg_period, bg_phase, u
    )


def _margin(p: _Params) -> Tensor:
    """Distance from centre to the farthest point of each shape, in pixels: (N,)."""
    scale = torch.ones_like(p.radius)
    scale = torch.where(p.shape == SHAPES.index("triangle"), _TRIANGLE_R, scale)
    return p.radius * scale + 0.5


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def _grid(image_size: int) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates: x (1, 1, W) and y (1, H, 1), in pixels."""
    c = torch.arange(image_size, dtype=torch.float32) + 0.5
    return c.view(1, 1, -1), c.view(1, -1, 1)


def _coverage(sd: Tensor) -> Tensor:
    """Anti-aliased coverage of a signed distance in pixels (negative inside)."""
    return (0.5 - sd).clamp_(0.0, 1.0)


def _box_sdf(dx: Tensor, dy: Tensor, hx: Tensor, hy: Tensor) -> Tensor:
    qx, qy = dx.abs() - hx, dy.abs() - hy
    outside = torch.sqrt(qx.clamp(min=0.0) ** 2 + qy.clamp(min=0.0) ** 2)
    return outside + torch.maximum(qx, qy).clamp(max=0.0)


def _shape_alpha(shape: Tensor, radius: Tensor, cx: Tensor, cy: Tensor, image_size: int) -> Tensor:
    """Coverage of each shape: (M,) parameters -> (M, H, W) in [0, 1]."""
    x, y = _grid(image_size)
    r = radius.view(-1, 1, 1)
    dx = x - cx.view(-1, 1, 1)  # (M, 1, W)
    dy = y - cy.view(-1, 1, 1)  # (M, H, 1)
    alpha = torch.empty(shape.shape[0], image_size, image_size)
    for k, name in enumerate(SHAPES):
        sel = (shape == k).nonzero().flatten()
        if sel.numel() == 0:
            continue
        sx, sy, sr = dx[sel], dy[sel], r[sel]
        if name == "circle":
            sd = torch.sqrt(sx**2 + sy**2) - sr
        elif name == "square":
            sd = _box_sdf(sx, sy, sr * _SQUARE_S, sr * _SQUARE_S)
        elif name == "triangle":
            # Upward equilateral triangle (y grows downwards); inradius = circumradius / 2.
            big_r = sr * _TRIANGLE_R
            c30 = math.sqrt(3.0) / 2.0
            edges = torch.maximum(sy, c30 * sx - 0.5 * sy)
            sd = torch.maximum(edges, -c30 * sx - 0.5 * sy) - big_r / 2.0
        else:  # cross
            t = sr * _CROSS_T
            sd = torch.minimum(_box_sdf(sx, sy, sr, t), _box_sdf(sx, sy, t, sr))
        alpha[sel] = _coverage(sd)
    return alpha


def _stripes(s: Tensor, period: Tensor) -> Tensor:
    """Anti-aliased 50 % square wave of coordinate ``s`` (in periods): values in [0, 1]."""
    g = (s - s.floor() - 0.5).abs()  # distance from the middle of a period, in periods
    return (0.5 + (g - 0.25) * period).clamp(0.0, 1.0)


def _noise_field(seed: int, indices: Tensor, image_size: int) -> Tensor:
    """Two-octave value noise in [0, 1]: (M,) indices -> (M, H, W)."""
    g_lo, g_hi = 4, max(4, image_size // 2)
    u = _uniform(seed, _STREAM_NOISE, indices, g_lo * g_lo + g_hi * g_hi)
    m = u.shape[0]
    lo = u[:, : g_lo * g_lo].view(m, 1, g_lo, g_lo)
    hi = u[:, g_lo * g_lo :].view(m, 1, g_hi, g_hi)
    size = (image_size, image_size)
    lo = F.interpolate(lo, size=size, mode="bicubic", align_corners=False)
    hi = F.interpolate(hi, size=size, mode="bilinear", align_corners=False)
    return (0.7 * lo + 0.3 * hi).clamp(0.0, 1.0)[:, 0]


def _background(seed: int, indices: Tensor, p: _Params, image_size: int) -> Tensor:
    """Renders backgrounds: (N,) samples -> (N, 3, H, W) in [0, 1]."""
    x, y = _grid(image_size)
    n = p.background.shape[0]
    t = torch.zeros(n, image_size, image_size)  # mix factor between the two colours
    period = p.bg_period.view(-1, 1, 1)
    cos, sin = p.bg_angle.cos().view(-1, 1, 1), p.bg_angle.sin().view(-1, 1, 1)
    phase_x, phase_y = p.bg_phase[:, 0].view(-1, 1, 1), p.bg_phase[:, 1].view(-1, 1, 1)
    for k, name in enumerate(BACKGROUNDS):
        sel = (p.background == k).nonzero().flatten()
        if sel.numel() == 0 or name == "plain":
            continue
        pr = period[sel]
        if name == "striped":
            s = (x * cos[sel] + y * sin[sel]) / pr + phase_x[sel]
            t[sel] = _stripes(s, pr)
        elif name == "checkered":
            tx = _stripes(x / pr + phase_x[sel], pr)  # (m, 1, W)
            ty = _stripes(y / pr + phase_y[sel], pr)  # (m, H, 1)
            t[sel] = tx + ty - 2.0 * tx * ty  # soft XOR
        elif name == "gradient":
            h = image_size / 2.0
            s = ((x - h) * cos[sel] + (y - h) * sin[sel]) / image_size
            t[sel] = (0.5 + 1.2 * s).clamp(0.0, 1.0)
        else:  # noisy
            t[sel] = _noise_field(seed, indices[sel], image_size)
    c0 = p.bg_rgb[:, 0].view(n, 3, 1, 1)
    c1 = p.bg_rgb[:, 1].view(n, 3, 1, 1)
    return torch.lerp(c0, c1, t.unsqueeze(1))


def _composite(bg: Tensor, p: _Params, alpha: Tensor, cy: Tensor, image_size: int) -> Tensor:
    """Paints shapes over backgrounds: (M, 3, H, W), (M, H, W) -> (M, 3, H, W) in [-1, 1]."""
    _, y = _grid(image_size)
    rel = ((y - cy.view(-1, 1, 1)) / p.radius.view(-1, 1, 1)).clamp(-1.0, 1.0)  # (M, H, 1)
    light = 1.0 - p.shade.view(-1, 1, 1) * rel  # brighter at the top
    fg = (p.rgb.view(-1, 3, 1, 1) * light.unsqueeze(1)).clamp(0.0, 1.0)
    img = torch.lerp(bg, fg.expand_as(bg), alpha.unsqueeze(1))
    return img.mul_(2.0).sub_(1.0)


def _as_indices(indices: Tensor | range | list[int]) -> Tensor:
    return torch.as_tensor(list(indices) if isinstance(indices, range) else indices).long()


def _render_images(seed: int, indices: Tensor, image_size: int) -> tuple[Tensor, _Params]:
    p = _sample_params(seed, indices, _STREAM_IMAGE, image_size)
    m = _margin(p)
    span = (image_size - 2.0 * m).clamp(min=0.0)
    cx = m + p.u[:, 4] * span
    cy = m + p.u[:, 5] * span
    bg = _background(seed, indices, p, image_size)
    alpha = _shape_alpha(p.shape, p.radius, cx, cy, image_size)
    return _composite(bg, p, alpha, cy, image_size), p


def _video_centers(
    p: _Params, image_size: int, frames: int, motion: Motion = "random"
) -> tuple[Tensor, Tensor]:
    """Straight-line motion that stays inside the frame: (N, T, 2) centres and (N,) direction.

    ``"random"``: the shape travels 60–100% of the room its size leaves, so larger shapes
    travel less (at the stills' sizes, about 3 to 16 pixels in a 32-pixel frame).
    ``"crossing"``: it travels all of it, from one side of the room to the other;
    ``"fixed"``: so, along the middle of the frame.
    """
    m = _margin(p)
    room = (image_size - 2.0 * m).clamp(min=0.0)  # (N,) free travel along each axis
    direction = _pick(p.u[:, 20], len(DIRECTIONS))
    if motion == "random":
        travel = _lerp(0.6, 1.0, p.u[:, 21]) * room  # along the direction of motion
        drift = _lerp(-0.15, 0.15, p.u[:, 22]) * room  # across it
    else:
        travel, drift = room, torch.zeros_like(room)
    place = torch.full_like(room, 0.5) if motion == "fixed" else p.u[:, 24]  # across, in [0, 1]
    start_along = m + p.u[:, 23] * (room - travel)
    start_across = m + place * (room - drift.abs()) + drift.clamp(max=0.0).abs()
    s = torch.linspace(0.0, 1.0, frames).view(1, -1)  # (1, T)
    along = start_along[:, None] + travel[:, None] * s
    across = start_across[:, None] + drift[:, None] * s
    # left/up move towards smaller coordinates: mirror the "along" axis.
    negative = (direction == DIRECTIONS.index("left")) | (direction == DIRECTIONS.index("up"))
    along = torch.where(negative[:, None], image_size - along, along)
    horizontal = direction < 2
    cx = torch.where(horizontal[:, None], along, across)
    cy = torch.where(horizontal[:, None], across, along)
    return torch.stack([cx, cy], dim=-1), direction


def _render_videos(
    seed: int,
    indices: Tensor,
    image_size: int,
    frames: int,
    shape_size: str = "video",
    motion: str = "random",
) -> tuple[Tensor, Tensor, Tensor, _Params]:
    check_shape_size(shape_size)
    path = check_motion(motion)
    p = _sample_params(seed, indices, _STREAM_VIDEO, image_size, shape_size)
    if path == "fixed":  # every shape at the middle of its size range
        lo, hi = _SIZE_RANGES[shape_size]
        p = p._replace(radius=torch.full_like(p.radius, (lo + hi) / 2 * image_size))
    n = indices.shape[0]
    centers, direction = _video_centers(p, image_size, frames, path)
    bg = _background(seed, indices, p, image_size)  # (N, 3, H, W)
    rep = torch.arange(n).repeat_interleave(frames)  # (N*T,) sample of each frame
    pf = _Params(*(f[rep] for f in p))
    cx, cy = centers[..., 0].flatten(), centers[..., 1].flatten()
    alpha = _shape_alpha(pf.shape, pf.radius, cx, cy, image_size)  # (N*T, H, W)
    video = _composite(bg[rep], pf, alpha, cy, image_size)
    return video.view(n, frames, 3, image_size, image_size), centers, direction, p


def _captions(p: _Params, direction: Tensor | None = None) -> list[str]:
    out = []
    for i in range(p.shape.shape[0]):
        d = DIRECTIONS[int(direction[i])] if direction is not None else None
        out.append(
            caption_for(
                SHAPES[int(p.shape[i])],
                COLORS[int(p.color[i])],
                BACKGROUNDS[int(p.background[i])],
                d,
            )
        )
    return out


# --------------------------------------------------------------------------------------
# Public generators and datasets
# --------------------------------------------------------------------------------------

_Item = TypeVar("_Item")


def make_batch(
    n: int, seed: int = 0, image_size: int = 32, start: int = 0
) -> tuple[Tensor, Tensor, list[str]]:
    """Renders samples ``start .. start + n - 1`` of a seed in one vectorised pass.

    ``make_batch(n, seed)[0][i]`` equals ``ShapesDataset(size, seed)[start + i].image``.

    Args:
        n: Number of images.
        seed: Dataset seed.
        image_size: Height and width in pixels.
        start: Index of the first sample.

    Returns:
        images (n, 3, H, W) float32 in [-1, 1], labels (n,) int64, and n captions.
    """
    indices = torch.arange(start, start + n)
    images, p = _render_images(seed, indices, image_size)
    labels = p.shape * len(COLORS) + p.color
    return images, labels, _captions(p)


def make_video_batch(
    n: int,
    seed: int = 0,
    image_size: int = 32,
    frames: int = _DEFAULT_FRAMES,
    start: int = 0,
    shape_size: ShapeSize = "video",
    motion: Motion = "random",
) -> tuple[Tensor, Tensor, list[str]]:
    """Renders video samples ``start .. start + n - 1`` of a seed in one vectorised pass.

    Args:
        n: Number of clips.
        seed: Dataset seed.
        image_size: Height and width in pixels.
        frames: Frames per clip.
        start: Index of the first sample.
        shape_size: ``"video"``: the videos' smaller shapes; ``"image"``: the stills' sizes,
            travelling less. Sample ``i`` keeps its class, colours, background, direction
            and caption either way.
        motion: ``"random"`` paths; ``"crossing"``: from edge to edge; ``"fixed"``: from edge
            to edge along the middle, every shape at the middle of its size range
            (:data:`Motion`). Only the path (and, for ``"fixed"``, the size) changes.

    Returns:
        videos (n, T, 3, H, W) float32 in [-1, 1], labels (n,) int64, and n captions.
    """
    indices = torch.arange(start, start + n)
    videos, _, direction, p = _render_videos(seed, indices, image_size, frames, shape_size, motion)
    labels = p.shape * len(COLORS) + p.color
    return videos, labels, _captions(p, direction)


class _RenderedDataset(Dataset[_Item]):
    """A fixed-size, map-style dataset whose item ``i`` is rendered from ``(seed, i)`` alone."""

    def __init__(self, size: int, seed: int = 0, image_size: int = 32) -> None:
        """Creates the dataset; nothing is rendered until items are read.

        Args:
            size: Number of samples.
            seed: Seed; datasets with different seeds are independent draws.
            image_size: Height and width in pixels.
        """
        self.size = size
        self.seed = seed
        self.image_size = image_size

    def __len__(self) -> int:
        return self.size

    def _position(self, index: int) -> int:
        """``index`` (negative counts from the end) as a position in ``[0, size)``."""
        if not -self.size <= index < self.size:
            raise IndexError(
                f"index {index} out of range for {type(self).__name__} of size {self.size}"
            )
        return index % self.size


class ShapesDataset(_RenderedDataset[ShapeSample]):
    """Shape images; item ``i`` depends only on (seed, i).

    Indexing renders one image (a few ms of per-call overhead); for training loops prefer
    ``batch(indices)`` or ``make_batch``, which render a whole batch in one vectorised pass.
    """

    def __getitem__(self, index: int) -> ShapeSample:
        index = self._position(index)
        images, p = _render_images(self.seed, torch.tensor([index]), self.image_size)
        shape, color = SHAPES[int(p.shape[0])], COLORS[int(p.color[0])]
        background = BACKGROUNDS[int(p.background[0])]
        return ShapeSample(
            image=images[0],
            label=class_index(shape, color),
            caption=caption_for(shape, color, background),
            shape=shape,
            color=color,
            background=background,
        )

    def batch(self, indices: Tensor | range | list[int]) -> tuple[Tensor, Tensor, list[str]]:
        """Renders many items at once (much faster than indexing one by one).

        Args:
            indices: Sample indices in ``[0, len(self))``.

        Returns:
            images (N, 3, H, W), labels (N,), and N captions.
        """
        idx = _as_indices(indices)
        images, p = _render_images(self.seed, idx, self.image_size)
        return images, p.shape * len(COLORS) + p.color, _captions(p)


class ShapesVideoDataset(_RenderedDataset[VideoSample]):
    """Short clips of a moving shape; item ``i`` depends only on (seed, i)."""

    def __init__(
        self,
        size: int,
        seed: int = 0,
        image_size: int = 32,
        frames: int = _DEFAULT_FRAMES,
        shape_size: ShapeSize = "video",
        motion: Motion = "random",
    ) -> None:
        """Creates the dataset; nothing is rendered until items are read.

        Args:
            size: Number of clips.
            seed: Seed; datasets with different seeds are independent draws.
            image_size: Height and width of each frame in pixels.
            frames: Frames per clip.
            shape_size: ``"video"`` (smaller shapes) or ``"image"`` (the stills' sizes); see
                :func:`make_video_batch`.
            motion: ``"random"``, ``"crossing"`` or ``"fixed"`` paths (:data:`Motion`).
        """
        check_shape_size(shape_size)
        super().__init__(size, seed, image_size)
        self.frames = frames
        self.shape_size = shape_size
        self.motion = check_motion(motion)

    def __getitem__(self, index: int) -> VideoSample:
        index = self._position(index)
        videos, centers, direction, p = _render_videos(
            self.seed,
            torch.tensor([index]),
            self.image_size,
            self.frames,
            self.shape_size,
            self.motion,
        )
        shape, color = SHAPES[int(p.shape[0])], COLORS[int(p.color[0])]
        background, moving = BACKGROUNDS[int(p.background[0])], DIRECTIONS[int(direction[0])]
        return VideoSample(
            video=videos[0],
            label=class_index(shape, color),
            caption=caption_for(shape, color, background, moving),
            shape=shape,
            color=color,
            background=background,
            direction=moving,
            centers=centers[0],
        )

    def batch(self, indices: Tensor | range | list[int]) -> tuple[Tensor, Tensor, list[str]]:
        """Renders many clips at once.

        Args:
            indices: Sample indices in ``[0, len(self))``.

        Returns:
            videos (N, T, 3, H, W), labels (N,), and N captions.
        """
        idx = _as_indices(indices)
        videos, _, direction, p = _render_videos(
            self.seed, idx, self.image_size, self.frames, self.shape_size, self.motion
        )
        return videos, p.shape * len(COLORS) + p.color, _captions(p, direction)
