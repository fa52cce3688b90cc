"""A tiny Open-Sora STDiT trained here on captioned moving-shape videos.

No weights can be downloaded, so the STDiT plugin ships a small model of the reference
:class:`~blockdance_stdit.model.STDiT` (spatial and temporal self-attention, cross-attention
to the caption, MLP; adaLN-single) trained on the videos of :mod:`blockdance_lab.data.shapes`:
8 frames of 32×32 pixels, patch (1, 4, 4), so 8 × 64 tokens. The caption comes from the tiny
text encoder of :mod:`blockdance_lab.data.captions`, trained jointly and saved in the same file.

Training follows Open-Sora's path from an image model to a video model: the STDiT starts
from the shipped tiny DiT (:mod:`blockdance_lab.zoo.stdit.from_dit`), distils it on single images,
then learns on clips. The objective is Open-Sora v1's: ε-prediction on DiT's linear β
schedule (here with min-SNR-5 weighting), captions dropped to the model's null caption with
p = 0.1 for guidance. Its :data:`RECIPE` trains it (``python -m blockdance_lab.zoo.train stdit``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from blockdance import lazy
from blockdance_lab.data.captions import TinyTextEncoder
from blockdance_lab.data.shapes import (
    Motion,
    ShapeSize,
    check_motion,
    check_shape_size,
    make_video_batch,
    num_classes,
)
from blockdance_lab.data.shapes import make_batch as make_image_batch
from blockdance_lab.training import (
    ModelFiles,
    Recipe,
    linear_alphas_cumprod,
    min_snr_mean,
    save_weights,
    train_with_ema,
)
from blockdance_lab.training import TrainConfig as BaseTrainConfig
from blockdance_lab.zoo.workloads import TINY_STDIT_MOTION, TINY_STDIT_SHAPE_SIZE, video_probe
from blockdance_lab.zoo.workloads import seed_captions as caption_seeds
from blockdance_stdit.model import STDiT

ASSETS = Path(__file__).parent / "assets"
DEFAULT_WEIGHTS = ASSETS / "tiny_stdit_shapes8x32.safetensors"

__all__ = [
    "DEFAULT_WEIGHTS",
    "PREDICTIONS",
    "RECIPE",
    "VIDEO_TRAINS",
    "TinySTDiT",
    "TinySTDiTConfig",
    "TrainConfig",
    "load_tiny_stdit",
    "save_tiny_stdit",
    "seed_captions",
    "train_tiny_stdit",
    "video_batches",
]


#: What the model's output predicts, in diffusers' ``prediction_type`` names.
PREDICTIONS = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class TinySTDiTConfig:
    """Architecture: the reference STDiT's kwargs plus the text encoder's size.

    Args:
        prediction: What the output predicts: ``"epsilon"``, the noise (Open-Sora v1), or
            ``"v_prediction"``, ``v = √ᾱ ε − √(1−ᾱ) x₀`` (Salimans & Ho, 2022), which stays
            informative about x₀ at high noise, where an ε model's output is nearly the input.
            The sampler's scheduler must be told the same
            (:func:`blockdance_lab.zoo.stdit.workloads.ddim_linear`).
        frame_embed: The STDiT's learned per-frame table added to the tokens
            (:class:`~blockdance_stdit.model.STDiT`).
        Others: :class:`~blockdance_stdit.model.STDiT`'s arguments of the same names, and
            the text encoder's width, depth and caption length.
    """

    frames: int = 8
    image_size: int = 32
    patch_size: int = 4
    hidden_size: int = 128
    depth: int = 8
    num_heads: int = 4
    mlp_ratio: float = 2.0
    class_dropout_prob: float = 0.1
    text_dim: int = 64
    text_depth: int = 1
    max_length: int = 10
    temporal_rope: bool = True
    frame_embed: bool = True
    prediction: str = "v_prediction"

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")

    def build(self) -> TinySTDiT:
        return TinySTDiT(self)


class TinySTDiT(nn.Module):
    """The shipped artefact: the STDiT and the text encoder it was trained with.

    Args:
        cfg: Architecture.
    """

    def __init__(self, cfg: TinySTDiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stdit = STDiT(
            input_size=(cfg.frames, cfg.image_size, cfg.image_size),
            in_channels=3,
            patch_size=(1, cfg.patch_size, cfg.patch_size),
            hidden_size=cfg.hidden_size,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            class_dropout_prob=cfg.class_dropout_prob,
            pred_sigma=False,
            caption_channels=cfg.text_dim,
            model_max_length=cfg.max_length,
            temporal_rope=cfg.temporal_rope,
            frame_embed=cfg.frame_embed,
        )
        self.text_encoder = TinyTextEncoder(cfg.text_dim, cfg.max_length, cfg.text_depth)

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        """Caption features ``(N, 1, L, text_dim)``, the STDiT's ``y``."""
        embeds, _ = self.text_encoder.encode(captions)  # (N, L, D)
        return embeds[:, None]

    def forward(self, x: torch.Tensor, t: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """The prediction ``(N, 3, T, H, W)`` (``cfg.prediction``) for videos ``x`` at timesteps
        ``t``."""
        return self.stdit(x, t, self.encode(captions))


def seed_captions(seeds: Sequence[int]) -> list[str]:
    """The caption each seed asks for, with its direction
    (:func:`blockdance_lab.zoo.workloads.seed_captions`, ``moving=True``)."""
    return caption_seeds(seeds, moving=True)


@dataclass
class TrainConfig(BaseTrainConfig):
    """Training hyper-parameters of the video stage (see
    :class:`blockdance_lab.training.TrainConfig`), plus the image stage before it.

    Args:
        min_snr: Min-SNR-gamma weighting of the ε loss; 0 turns it off.
        init: ``"dit"``: start from the shipped tiny DiT (:mod:`blockdance_lab.zoo.stdit.from_dit`);
            ``"none"``: from scratch.
        image_steps: Steps of the image stage (single frames, ``frames=1``); 0 skips it.
        image_batch_size: Frames per image-stage step.
        image_lr: Peak learning rate of the image stage.
        image_minutes: Wall-clock budget of the image stage; ``max_minutes`` is the video
            stage's.
        image_teacher_guidance: The DiT teacher's guidance scale in the distilled target of
            captioned samples (1: its conditional ε; see ``_distill_loss``). At 1.5 the
            student at its guidance 6 should draw as the teacher at 9, whose crosses are
            better; run 8 of the card tried it and the videos did not gain. Only
            ``image_target="dit"`` has a teacher to guide.
        image_target: What the image stage regresses: ``"dit"``, the shipped tiny DiT's
            class-conditional ε on the DiT's own captioned images (distillation);
            ``"noise"``, the sampled noise on single video frames; with ``init="none"`` it
            trains an STDiT of any size, without the DiT.
        shape_size: The video stage's clips: ``"video"``, shapes of 14–24% of the frame
            with room to travel, or ``"image"``, the stills' sizes
            (:func:`blockdance_lab.data.shapes.make_video_batch`).
        motion: How the video stage's shapes move: ``"random"`` paths; ``"crossing"``, edge
            to edge; ``"fixed"``, edge to edge along the middle at the middle size, so that
            the caption alone fixes the path (:data:`blockdance_lab.data.shapes.Motion`).
        video_trains: What the video stage trains: ``"all"`` the weights, or
            ``"temporal"``, only the temporal attention, the frame table and the caption path
            (text encoder, caption embedder, cross-attention), which must learn the
            direction words; the spatial attention, MLPs, embedders and output layer stay
            as the image stage left them (:data:`VIDEO_TRAINS`).
        high_noise_share: Share of the video stage's samples whose timestep is drawn from
            ``[high_noise_from, 1000)`` instead of ``[0, 1000)``: the high-noise steps are
            where a sampler decides the path, so where the direction word must be read.
        high_noise_from: The first timestep of that range.

    The video stage's target follows the model's ``prediction``
    (:class:`TinySTDiTConfig`); the image stage always learns ε (the DiT teacher's).
    """

    steps: int = 1700
    batch_size: int = 8
    lr: float = 1.5e-3
    warmup: int = 50
    max_minutes: float = 20.5
    min_snr: float = 5.0
    init: str = "dit"
    image_steps: int = 1400
    image_batch_size: int = 64
    image_lr: float = 5e-3
    image_minutes: float = 18.0
    image_teacher_guidance: float = 1.0
    image_target: str = "dit"
    shape_size: str = TINY_STDIT_SHAPE_SIZE
    motion: str = TINY_STDIT_MOTION
    video_trains: str = "all"
    high_noise_share: float = 0.5
    high_noise_from: int = 600


#: The choices of :attr:`TrainConfig.video_trains`.
VIDEO_TRAINS = ("all", "temporal")


def _train_temporal_only(model: TinySTDiT) -> TinySTDiT:
    """Freeze what the image stage taught: only the temporal attention, the frame table if
    any, and the caption path (text encoder, caption embedder, cross-attention) keep their
    gradients."""
    model.requires_grad_(False)
    for block in model.stdit.blocks:
        block.attn_temp.requires_grad_(True)
        block.cross_attn.requires_grad_(True)
    model.stdit.y_embedder.requires_grad_(True)
    model.text_encoder.requires_grad_(True)
    if model.stdit.frame_embed is not None:
        model.stdit.frame_embed.requires_grad_(True)
    return model


#: ``make_batch(n, seed, start, frames)``: videos ``(n, frames, 3, H, W)`` in [-1, 1] and
#: their captions.
MakeBatch = Callable[[int, int, int, int], tuple[torch.Tensor, list[str]]]


def video_batches(
    model_cfg: TinySTDiTConfig,
    shape_size: ShapeSize = TINY_STDIT_SHAPE_SIZE,
    motion: Motion = TINY_STDIT_MOTION,
) -> MakeBatch:
    """Captioned clips of moving shapes at the model's size, by default the shipped model's.

    Args:
        model_cfg: The model, for its frame size.
        shape_size: ``"image"``, shapes at the stills' sizes (the shipped model's data), or
            ``"video"``, smaller shapes with more room to travel (the model shipped before;
            :func:`blockdance_lab.data.shapes.make_video_batch`).
        motion: ``"random"``, ``"crossing"`` or ``"fixed"`` paths
            (:data:`blockdance_lab.data.shapes.Motion`).
    """

    def batch(n: int, seed: int, start: int, frames: int) -> tuple[torch.Tensor, list[str]]:
        videos, _, captions = make_video_batch(
            n, seed, model_cfg.image_size, frames, start, shape_size, motion
        )
        return videos, captions

    return batch


def _clip_loss(
    make_batch: MakeBatch,
    cfg: BaseTrainConfig,
    frames: int,
    min_snr: float,
    device: Any,
    *,
    single_frame: bool = False,
    prediction: str = "epsilon",
    high_noise_share: float = 0.0,
    high_noise_from: int = 600,
) -> Callable[[TinySTDiT, int, torch.Generator], torch.Tensor]:
    """The loss of one step on ``cfg.batch_size`` clips of ``frames`` frames.

    With ``single_frame`` each sample is one frame, drawn at random, of such a clip. With
    ``prediction="epsilon"`` the target is the noise, min-SNR weighted; with
    ``"v_prediction"`` it is ``v = √ᾱ ε − √(1−ᾱ) x₀``, unweighted: v's error is x₀'s times
    SNR + 1, ε's times 1 + 1/SNR, so the high-noise steps that decide the motion weigh more
    than in the ε loss. A share
    ``high_noise_share`` of the samples draw their timestep from ``[high_noise_from, T)``
    instead of ``[0, T)``.
    """
    abar = linear_alphas_cumprod()  # (T,)

    def loss_fn(model: TinySTDiT, step: int, gen: torch.Generator) -> torch.Tensor:
        n = cfg.batch_size
        videos, captions = make_batch(n, cfg.seed, step * n, frames)  # (B, F, 3, H, W)
        if single_frame:
            pick = torch.randint(0, videos.shape[1], (n,), generator=gen)
            videos = videos[torch.arange(n), pick][:, None]  # (B, 1, 3, H, W)
        x0 = videos.permute(0, 2, 1, 3, 4)  # (B, 3, T, H, W)
        t = torch.randint(0, len(abar), (n,), generator=gen)
        if high_noise_share > 0:
            high = torch.rand(n, generator=gen) < high_noise_share
            t_high = torch.randint(high_noise_from, len(abar), (n,), generator=gen)
            t = torch.where(high, t_high, t)
        noise = torch.randn(x0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1, 1)
        x0, noise, a, t = (v.to(device) for v in (x0, noise, a, t))
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        out = model(xt, t, captions)  # (B, 3, T, H, W)
        if prediction == "v_prediction":
            target = a.sqrt() * noise - (1 - a).sqrt() * x0  # v
            return F.mse_loss(out, target)
        per_sample = F.mse_loss(out, noise, reduction="none").mean((1, 2, 3, 4))
        return min_snr_mean(per_sample, a, min_snr)

    return loss_fn


def _distill_loss(
    teacher: nn.Module,
    cfg: BaseTrainConfig,
    image_size: int,
    min_snr: float,
    device: Any,
    teacher_guidance: float = 1.0,
) -> Callable[[TinySTDiT, int, torch.Generator], torch.Tensor]:
    """The image stage as distillation: match the DiT's ε on its own training images.

    Each step renders ``cfg.batch_size`` captioned images (``make_batch``), noises them, and
    regresses the teacher's prediction at every timestep. The teacher's ε says what the
    images of a class look like without the noise of the ε target, which the small CPU
    budget could not average out. The teacher is asked for the caption's class, or for its
    null class where the caption is dropped (to the STDiT's null caption), so guidance is
    learnt too. With ``teacher_guidance`` w ≠ 1 the captioned target is the teacher's guided
    ε, ``ε_null + w (ε_class − ε_null)`` (as Meng et al., CVPR 2023, distil a guided model),
    so the student at guidance g samples roughly as the teacher at ``g · w``.
    """
    abar = linear_alphas_cumprod()  # (T,)

    def loss_fn(model: TinySTDiT, step: int, gen: torch.Generator) -> torch.Tensor:
        n = cfg.batch_size
        x0, labels, captions = make_image_batch(n, cfg.seed, image_size, start=step * n)
        t = torch.randint(0, len(abar), (n,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        drop = torch.rand(n, generator=gen) < model.cfg.class_dropout_prob
        a = abar[t].view(-1, 1, 1, 1)
        x0, noise, a, t, drop, labels = (v.to(device) for v in (x0, noise, a, t, drop, labels))
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise  # (B, 3, H, W)
        with torch.no_grad():
            asked = torch.where(drop, num_classes, labels)
            if teacher_guidance == 1.0:
                target = teacher(xt, t, asked)  # (B, 3, H, W)
            else:  # one batch: the asked class, then the null class
                classes = torch.cat([asked, torch.full_like(asked, num_classes)])  # (2B,)
                both = teacher(xt.repeat(2, 1, 1, 1), t.repeat(2), classes)
                cond, null = both.chunk(2)  # (B, 3, H, W) each
                guided = null + teacher_guidance * (cond - null)
                target = torch.where(drop[:, None, None, None], cond, guided)
        y = model.encode(captions)  # (B, 1, L, D)
        y = torch.where(drop[:, None, None, None], model.stdit.y_embedder.null(n).to(y), y)
        eps = model.stdit(xt[:, :, None], t, y)[:, :, 0]  # one frame: (B, 3, H, W)
        per_sample = F.mse_loss(eps, target, reduction="none").mean((1, 2, 3))
        return min_snr_mean(per_sample, a, min_snr)

    return loss_fn


#: Weights that depend on the frame count, so do not carry over to another one.
_PER_FRAME = {"stdit.pos_embed_temporal", "stdit.frame_embed"}


def _load_across_frames(model: TinySTDiT, state: dict[str, torch.Tensor]) -> TinySTDiT:
    """Load weights trained at another frame count (or without a frame table): the temporal
    sin-cos table is the model's own, and its frame table, if any, starts afresh."""
    own = {k: v for k, v in state.items() if k not in _PER_FRAME}
    missing, unexpected = model.load_state_dict(own, strict=False)
    if "stdit.pos_embed_temporal" not in missing or not set(missing) <= _PER_FRAME or unexpected:
        raise ValueError(f"stage weights do not fit: missing {missing}, unexpected {unexpected}")
    return model


def _saved_state(model_cfg: TinySTDiTConfig, path: Path | str) -> dict[str, torch.Tensor]:
    """The state of weights this recipe saved, checked against ``model_cfg`` but its frames,
    frame table and prediction (an image stage has neither table nor v-prediction)."""
    saved = load_tiny_stdit(path)
    free = {"frames", "frame_embed", "prediction"}
    if replace(saved.cfg, **{k: getattr(model_cfg, k) for k in free}) != model_cfg:
        raise ValueError(
            f"init_weights {path} hold a tiny STDiT of {saved.cfg}, which differs from the "
            f"one to train, {model_cfg}, in more than its frames, frame table and prediction; "
            "train with the same architecture flags or start from init='dit'"
        )
    return saved.state_dict()


def _tiny_dit() -> nn.Module:
    """The shipped tiny DiT (the DiT plugin must be installed)."""
    from blockdance_lab.zoo.dit.tiny import load_tiny_dit

    return load_tiny_dit()


def _from_dit(model_cfg: TinySTDiTConfig, dit: nn.Module) -> dict[str, torch.Tensor]:
    """The STDiT's weights converted from the DiT's."""
    from blockdance_lab.zoo.stdit.from_dit import stdit_from_dit_state

    model = model_cfg.build()
    stdit_from_dit_state(model.stdit, dit.state_dict())
    return model.state_dict()


def train_tiny_stdit(
    model_cfg: TinySTDiTConfig,
    cfg: TrainConfig,
    make_batch: MakeBatch | None = None,
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
    on_step: Callable[[int, TinySTDiT], None] | None = None,
    init_weights: Path | str | None = None,
) -> tuple[TinySTDiT, dict[str, Any]]:
    """Train on freshly rendered clips (ε- or v-prediction, ``model_cfg.prediction``); return
    the EMA model.

    As Open-Sora trains video models from an image model: optionally start from the tiny DiT,
    then an image stage on single frames (cheap: one frame of 64 tokens a sample) that
    distils the DiT (``image_target="dit"``) or regresses the noise on video frames, then the
    video stage on ``model_cfg.frames``-frame clips. Each stage restarts the optimiser and
    the learning-rate schedule from the previous stage's EMA weights.

    Args:
        model_cfg: Architecture of the video model.
        cfg: Hyper-parameters.
        make_batch: ``make_batch(n, seed, start, frames)`` returns clips
            ``(n, frames, 3, H, W)`` in [-1, 1] and their captions; default:
            :func:`video_batches` at ``cfg.shape_size`` and ``cfg.motion``.
        progress: Show a progress bar with the loss.
        device: Where to train; random draws stay on the CPU generator.
        on_step: Called after each video-stage step with its index and the EMA model, e.g.
            to save snapshots (:func:`blockdance_lab.training.train_with_ema`).
        init_weights: Start from these weights instead of ``cfg.init``: a file this recipe
            saved, of the same architecture at any frame count (e.g. an image stage saved at
            ``frames=1``), so that pilots of the video stage can share one image stage;
            usually with ``cfg.image_steps=0``.
    """
    if cfg.init not in ("dit", "none"):
        raise ValueError(f"init must be 'dit' or 'none', got {cfg.init!r}")
    if cfg.image_target not in ("dit", "noise"):
        raise ValueError(f"image_target must be 'dit' or 'noise', got {cfg.image_target!r}")
    if cfg.video_trains not in VIDEO_TRAINS:
        raise ValueError(f"video_trains must be one of {VIDEO_TRAINS}, got {cfg.video_trains!r}")
    if not 0 <= cfg.high_noise_share <= 1 or not 0 <= cfg.high_noise_from < 1000:
        raise ValueError(
            f"high_noise_share must be in [0, 1] and high_noise_from in [0, 1000), got "
            f"{cfg.high_noise_share} and {cfg.high_noise_from}"
        )
    shape_size, motion = check_shape_size(cfg.shape_size), check_motion(cfg.motion)
    batch = video_batches(model_cfg, shape_size, motion) if make_batch is None else make_batch
    # single frames, learning the DiT's ε; the frame table is the video model's own
    image_cfg = replace(model_cfg, frames=1, frame_embed=False, prediction="epsilon")
    start_from = "weights" if init_weights is not None else cfg.init
    use_dit = "dit" in (start_from, cfg.image_target if cfg.image_steps > 0 else "")
    teacher = _tiny_dit() if use_dit else None
    state = _from_dit(image_cfg, teacher) if teacher is not None and start_from == "dit" else None
    if init_weights is not None:
        state = _saved_state(model_cfg, init_weights)
    logs: dict[str, Any] = {}
    if cfg.image_steps > 0:
        stage = replace(
            cfg,
            steps=cfg.image_steps,
            batch_size=cfg.image_batch_size,
            lr=cfg.image_lr,
            max_minutes=cfg.image_minutes,
        )
        start = state

        distill = teacher is not None and cfg.image_target == "dit"

        def build_image() -> TinySTDiT:
            model = image_cfg.build()
            if distill:  # the loss drops captions itself, to pick the teacher's target
                model.stdit.y_embedder.uncond_prob = 0.0
            return model if start is None else _load_across_frames(model, start)

        if teacher is not None and distill:
            size = getattr(teacher, "input_size", None)
            if size != model_cfg.image_size:
                raise ValueError(
                    f"the DiT teacher draws {size}px images, the STDiT {model_cfg.image_size}px;"
                    " distil at the DiT's size or use image_target='noise'"
                )
            teacher = teacher.to(device).eval().requires_grad_(False)
            loss = _distill_loss(
                teacher,
                stage,
                model_cfg.image_size,
                cfg.min_snr,
                device,
                cfg.image_teacher_guidance,
            )
        else:
            loss = _clip_loss(
                batch, stage, model_cfg.frames, cfg.min_snr, device, single_frame=True
            )
        image_model, logs["image"] = train_with_ema(
            build_image,
            loss,
            stage,
            desc="image stage",
            progress=progress,
            device=device,
        )
        state = image_model.state_dict()
    init = state

    def build_video() -> TinySTDiT:
        model = model_cfg.build()
        model = model if init is None else _load_across_frames(model, init)
        return _train_temporal_only(model) if cfg.video_trains == "temporal" else model

    model, logs["video"] = train_with_ema(
        build_video,
        _clip_loss(
            batch,
            cfg,
            model_cfg.frames,
            cfg.min_snr,
            device,
            prediction=model_cfg.prediction,
            high_noise_share=cfg.high_noise_share,
            high_noise_from=cfg.high_noise_from,
        ),
        cfg,
        desc="video stage",
        progress=progress,
        device=device,
        on_step=on_step,
    )
    return model, logs


#: The tiny STDiT's weights files (``python -m blockdance_lab.zoo.train stdit`` makes them).
FILES: ModelFiles[TinySTDiT] = ModelFiles("stdit", "tiny STDiT", TinySTDiTConfig, DEFAULT_WEIGHTS)


def save_tiny_stdit(model: TinySTDiT, path: Path, meta: dict[str, Any]) -> None:
    """Write fp16 safetensors (STDiT and text encoder) and a JSON sidecar."""
    save_weights(model, model.cfg, path, meta)


def load_tiny_stdit(
    path: Path | str = DEFAULT_WEIGHTS, dtype: torch.dtype = torch.float32
) -> TinySTDiT:
    """Build the tiny STDiT from its weights and their sidecar, by default the shipped ones."""
    return FILES.load(path, dtype)


RECIPE: Recipe[TinySTDiT] = Recipe(
    FILES,
    TrainConfig,
    train_tiny_stdit,
    sampler=lazy("blockdance_lab.zoo.stdit.workloads", "tiny_stdit_sampler"),
    probe=video_probe,
    model_flags={
        "--depth": "depth",
        "--frames": "frames",
        "--prediction": "prediction",
        "--frame-embed": "frame_embed",
    },
    snapshot_stage="video",
)
