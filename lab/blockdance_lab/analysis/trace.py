"""Record how much each block's output changes between adjacent denoising steps.

:class:`TraceRecorder` is an :class:`~blockdance.observer.Observer`. For one generation it
measures, per (step, block, branch), the relative L2 distance and the cosine similarity
between the block's output at this step and at the previous step of the same branch, and,
per (step, branch), the SSIM between the predicted clean samples x̂₀ of adjacent steps. It
holds only the previous step's outputs, never the trajectory. :func:`record_trace` attaches
the ``none`` policy and a recorder to a workload or model and returns a :class:`Trace`.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from blockdance import Registry, attach
from blockdance.observer import Observer
from blockdance.policy import GenerationInfo, StepContext
from blockdance_lab.analysis.x0 import predicted_x0
from blockdance_lab.evaluation.metrics import ssim
from blockdance_lab.workload import GenerateRequest, Workload

__all__ = ["Trace", "TraceRecorder", "XInput", "default_x_input", "record_trace"]

#: Where the model's input sample x_t is in its call: a positional index, a keyword name,
#: or a function ``(args, kwargs) -> Tensor``; None: :func:`default_x_input`.
XInput = int | str | Callable[[tuple[Any, ...], dict[str, Any]], Tensor] | None


def default_x_input(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Tensor | None:
    """x_t: the first positional argument, else the ``hidden_states``, ``x`` or ``sample``
    keyword (diffusers transformers, reference DiT, UNets)."""
    if args and isinstance(args[0], Tensor):
        return args[0]
    for key in ("hidden_states", "x", "sample"):
        value = kwargs.get(key)
        if isinstance(value, Tensor):
            return value
    return None


def _read_x_input(where: XInput, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
    if where is None:
        x = default_x_input(args, kwargs)
    elif isinstance(where, int):
        x = args[where] if where < len(args) else None
    elif isinstance(where, str):
        x = kwargs.get(where)
    else:
        x = where(args, kwargs)
    if not isinstance(x, Tensor):
        looked = (
            "the first positional argument or the hidden_states/x/sample keyword"
            if where is None
            else repr(where)
        )
        raise ValueError(
            f"cannot find the model's input sample x_t at {looked} (got {type(x).__name__}); "
            "pass x_input= (an argument index, a keyword name or a function "
            "(args, kwargs) -> tensor) to the recorder"
        )
    return x


def _tensors(output: Any) -> list[Tensor]:
    """The floating-point tensors in a block's output (a tensor, a tuple, a .sample)."""
    if isinstance(output, Tensor):
        return [output] if output.is_floating_point() else []
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _tensors(item)]
    sample = getattr(output, "sample", None)
    return _tensors(sample) if isinstance(sample, Tensor) else []


def _pair_stats(current: Sequence[Tensor], previous: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Relative L2 ``||a - p|| / ||p||`` and cosine of (a, p), per sample, then averaged.

    The tensors of a multi-tensor output (e.g. MMDiT's two streams) are concatenated. A
    sample is a slice along dim 0 when every tensor has the same leading size, else the whole
    output is one sample. Returns two 0-d float tensors on the outputs' device.
    """
    lead = {t.shape[0] if t.dim() else -1 for t in current}
    rows = lead.pop() if len(lead) == 1 and -1 not in lead else 1
    dtype = torch.float64 if current[0].dtype == torch.float64 else torch.float32
    d2: Tensor | float = 0.0
    r2: Tensor | float = 0.0
    c2: Tensor | float = 0.0
    dot: Tensor | float = 0.0
    for a, p in zip(current, previous, strict=True):
        a = a.detach().to(dtype).reshape(rows, -1)
        p = p.detach().to(dtype).reshape(rows, -1)
        d2 = d2 + (a - p).pow(2).sum(1)
        r2 = r2 + p.pow(2).sum(1)
        c2 = c2 + a.pow(2).sum(1)
        dot = dot + (a * p).sum(1)
    assert isinstance(d2, Tensor) and isinstance(r2, Tensor)
    assert isinstance(c2, Tensor) and isinstance(dot, Tensor)
    zero, one = torch.zeros_like(d2), torch.ones_like(d2)
    rel = torch.where(
        r2 > 0, (d2 / r2.clamp_min(1e-300)).sqrt(), torch.where(d2 > 0, one * math.inf, zero)
    )
    denom = (c2 * r2).sqrt()
    cos = torch.where(
        denom > 0,
        (dot / denom.clamp_min(1e-300)).clamp(-1.0, 1.0),
        torch.where((c2 == 0) & (r2 == 0), one, zero),
    )
    return rel.mean(), cos.mean()


def _as_images(x: Tensor) -> Tensor:
    """A sample batch as (N', C, H, W) for SSIM: video frames and token rows folded in."""
    if x.dim() == 4:
        return x
    if x.dim() == 5:
        return x.flatten(0, 1)  # (N, F, C, H, W) -> (N*F, C, H, W)
    if x.dim() == 3:
        return x.unsqueeze(1)  # (N, T, D) -> (N, 1, T, D)
    if x.dim() == 2:
        return x[:, None, None, :]  # (N, D) -> (N, 1, 1, D)
    raise ValueError(f"cannot compare samples of shape {tuple(x.shape)} with SSIM")


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    """Mean ignoring NaN; all-NaN slices give NaN (without numpy's warning)."""
    finite = ~np.isnan(a)
    count = finite.sum(axis=axis)
    total = np.where(finite, a, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# -- the result ------------------------------------------------------------------------------
@dataclass
class Trace:
    """Adjacent-step similarity of one generation.

    Args:
        rel_l2: (branches, steps, blocks) relative L2 ``||o_s − o_{s−1}|| / ||o_{s−1}||`` of
            each block's output; NaN at step 0 and where a block did not compute.
        cosine: (branches, steps, blocks) cosine similarity of the same pairs.
        x0_ssim: (branches, steps) SSIM between x̂₀ at steps s−1 and s; NaN at step 0 and
            when x̂₀ was not computed.
        timesteps: (steps,) the timestep of each step (NaN when unreadable).
        block_names: Name of each block slot.
        architecture: The matched architecture.
        default_boundary: The architecture's default boundary for this depth.
        default_window: The architecture's default reuse window.
        meta: Free-form facts: workload, seeds, scheduler, step count …
    """

    rel_l2: np.ndarray
    cosine: np.ndarray
    x0_ssim: np.ndarray
    timesteps: np.ndarray
    block_names: list[str]
    architecture: str
    default_boundary: int
    default_window: tuple[float, float]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_branches(self) -> int:
        return int(self.rel_l2.shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.rel_l2.shape[1])

    @property
    def num_blocks(self) -> int:
        return int(self.rel_l2.shape[2])

    def distance(self, branch: int | None = None) -> np.ndarray:
        """(steps, blocks) relative L2 of one branch, or the mean over branches (None)."""
        return self.rel_l2[branch] if branch is not None else _nanmean(self.rel_l2, 0)

    def similarity(self, branch: int | None = None) -> np.ndarray:
        """(steps, blocks) cosine similarity of one branch, or the mean over branches."""
        return self.cosine[branch] if branch is not None else _nanmean(self.cosine, 0)

    def x0_curve(self, branch: int | None = None) -> np.ndarray:
        """(steps,) x̂₀ SSIM of adjacent steps for one branch, or the mean over branches."""
        return self.x0_ssim[branch] if branch is not None else _nanmean(self.x0_ssim, 0)

    # -- files -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: arrays become nested lists with ``None`` for NaN."""

        def plain(a: np.ndarray) -> Any:
            return [plain(x) for x in a] if a.ndim else (None if np.isnan(a) else float(a))

        return {
            "architecture": self.architecture,
            "block_names": list(self.block_names),
            "default_boundary": self.default_boundary,
            "default_window": list(self.default_window),
            "meta": self.meta,
            "timesteps": plain(self.timesteps),
            "rel_l2": plain(self.rel_l2),
            "cosine": plain(self.cosine),
            "x0_ssim": plain(self.x0_ssim),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trace:
        def arr(x: Any) -> np.ndarray:
            return np.array(x if x is not None else np.nan, dtype=np.float64)

        def nan(x: Any) -> Any:
            return [nan(v) for v in x] if isinstance(x, list) else (np.nan if x is None else x)

        rel = arr(nan(data["rel_l2"]))
        branches, steps = (rel.shape[0], rel.shape[1]) if rel.ndim == 3 else (0, 0)
        blocks = len(data["block_names"])
        return cls(
            rel_l2=rel.reshape(branches, steps, blocks),
            cosine=arr(nan(data["cosine"])).reshape(branches, steps, blocks),
            x0_ssim=arr(nan(data["x0_ssim"])).reshape(branches, steps),
            timesteps=arr(nan(data["timesteps"])).reshape(steps),
            block_names=list(data["block_names"]),
            architecture=str(data["architecture"]),
            default_boundary=int(data["default_boundary"]),
            default_window=(float(data["default_window"][0]), float(data["default_window"][1])),
            meta=dict(data.get("meta", {})),
        )

    def to_json(self, path: str | Path | None = None) -> str:
        """The trace as JSON text (NaN written as ``null``); also written to ``path``."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> Trace:
        """Read a trace from a JSON file path or JSON text."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            text = Path(source).read_text()
        return cls.from_dict(json.loads(text))

    def to_csv(self, path: str | Path) -> Path:
        """Long format, one row per (step, branch, block): ``step, timestep, branch, block,
        block_name, rel_l2, cosine, x0_ssim`` (x0_ssim repeats over a step's blocks; empty
        cells are NaN)."""
        path = Path(path)
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(
                ["step", "timestep", "branch", "block", "block_name", "rel_l2", "cosine", "x0_ssim"]
            )

            def cell(v: float) -> str:
                return "" if math.isnan(v) else repr(float(v))

            for s in range(self.num_steps):
                for br in range(self.num_branches):
                    for b, name in enumerate(self.block_names):
                        out.writerow(
                            [
                                s,
                                cell(self.timesteps[s]),
                                br,
                                b,
                                name,
                                cell(self.rel_l2[br, s, b]),
                                cell(self.cosine[br, s, b]),
                                cell(self.x0_ssim[br, s]),
                            ]
                        )
        return path


# -- the recorder ----------------------------------------------------------------------------
class TraceRecorder(Observer):
    """Measures adjacent-step change of every computed block and of x̂₀.

    Add it with :meth:`blockdance.Handle.add_observer`. Each new generation starts a new
    trace; :meth:`result` returns the current one. Only the previous step's outputs are held
    (one state per block and branch, plus one x̂₀ per branch), replaced as the next step
    computes; :attr:`held_bytes` and :attr:`peak_held_bytes` report it.

    Args:
        scheduler: The diffusers scheduler of the sampling loop, for x̂₀; None skips x̂₀.
        x_input: Where x_t is in the model's call (see :data:`XInput`).
        data_range: SSIM data range of x̂₀ (2 for images in [-1, 1]); None: the largest minus
            the smallest value of each compared pair (for latents).
    """

    def __init__(
        self, scheduler: Any = None, *, x_input: XInput = None, data_range: float | None = None
    ) -> None:
        self.scheduler = scheduler
        self.x_input = x_input
        self.data_range = data_range
        self.generations = 0
        self.info: GenerationInfo | None = None
        self._reset()

    def _reset(self) -> None:
        self._prev: dict[tuple[int, int], tuple[int, list[Tensor]]] = {}  # (branch, block)
        self._prev_x0: dict[int, tuple[int, Tensor]] = {}  # branch -> (step, x̂₀)
        self._blocks: dict[tuple[int, int, int], tuple[Tensor, Tensor]] = {}
        self._x0: dict[tuple[int, int], Tensor] = {}  # (branch, step) -> SSIM
        self._timesteps: dict[int, float] = {}
        self._steps = 0
        self._branches = 0
        self.peak_held_bytes = 0

    # -- observer callbacks ------------------------------------------------------------
    def on_generation(self, info: GenerationInfo) -> None:
        self._reset()
        self.info = info
        self.generations += 1

    def on_block(self, ctx: StepContext, slot: int, output: Any) -> None:
        current = [t.detach().clone() for t in _tensors(output)]
        if not current:
            return
        key = (ctx.branch, slot)
        prev = self._prev.pop(key, None)  # drop the old state before measuring the new
        if prev is not None and prev[0] == ctx.step - 1:
            same = len(prev[1]) == len(current) and all(
                a.shape == b.shape for a, b in zip(prev[1], current)
            )
            if same:
                self._blocks[(ctx.step, ctx.branch, slot)] = _pair_stats(current, prev[1])
        del prev
        self._prev[key] = (ctx.step, current)
        self._seen(ctx)
        self.peak_held_bytes = max(self.peak_held_bytes, self.held_bytes)

    def on_model(
        self, ctx: StepContext, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        self._seen(ctx)
        if ctx.timestep is not None:
            self._timesteps[ctx.step] = ctx.timestep
        if self.scheduler is None:
            return
        if ctx.timestep is None:
            raise ValueError(
                "x̂₀ needs the timestep of each model call and the architecture could not read "
                "it; give the recorder scheduler=None to skip x̂₀"
            )
        x_t = _read_x_input(self.x_input, args, kwargs)
        x0 = predicted_x0(self.scheduler, x_t, output, ctx.timestep).detach()
        prev = self._prev_x0.pop(ctx.branch, None)
        if prev is not None and prev[0] == ctx.step - 1 and prev[1].shape == x0.shape:
            a, b = _as_images(x0), _as_images(prev[1])
            data_range = self.data_range
            if data_range is None:
                lo = torch.minimum(a.min(), b.min())
                hi = torch.maximum(a.max(), b.max())
                data_range = float(hi - lo) or 1.0
            self._x0[(ctx.branch, ctx.step)] = ssim(a, b, data_range=data_range).mean()
        self._prev_x0[ctx.branch] = (ctx.step, x0)
        self.peak_held_bytes = max(self.peak_held_bytes, self.held_bytes)

    def _seen(self, ctx: StepContext) -> None:
        self._steps = max(self._steps, ctx.step + 1)
        self._branches = max(self._branches, ctx.branch + 1)

    # -- what is held --------------------------------------------------------------------
    @property
    def held_states(self) -> dict[tuple[int, int], int]:
        """``{(branch, block): step}`` of the block outputs held right now."""
        return {key: step for key, (step, _) in self._prev.items()}

    @property
    def held_bytes(self) -> int:
        """Bytes of block outputs and x̂₀ held right now (the previous step's only)."""
        blocks = sum(t.numel() * t.element_size() for _, ts in self._prev.values() for t in ts)
        x0 = sum(t.numel() * t.element_size() for _, t in self._prev_x0.values())
        return blocks + x0

    def free(self) -> None:
        """Drop the held states (the measured numbers stay)."""
        self._prev.clear()
        self._prev_x0.clear()

    # -- result ------------------------------------------------------------------------
    def result(self, meta: Mapping[str, Any] | None = None) -> Trace:
        """The trace of the current (or last) generation."""
        info = self.info
        if info is None:
            raise RuntimeError("the recorder has seen no generation; run the model first")
        steps, branches, blocks = self._steps, self._branches, info.num_blocks
        rel = np.full((branches, steps, blocks), np.nan)
        cos = np.full((branches, steps, blocks), np.nan)
        x0 = np.full((branches, steps), np.nan)
        if self._blocks:
            keys = list(self._blocks)
            stacked = torch.stack([torch.stack(v) for v in self._blocks.values()])
            values = stacked.cpu().double().numpy()  # (pairs, 2)
            for (s, br, b), (r, c) in zip(keys, values):
                rel[br, s, b], cos[br, s, b] = r, c
        if self._x0:
            got = torch.stack(list(self._x0.values())).cpu().double().numpy()
            for (br, s), v in zip(self._x0, got):
                x0[br, s] = v
        timesteps = np.array([self._timesteps.get(s, np.nan) for s in range(steps)], dtype=float)
        return Trace(
            rel_l2=rel,
            cosine=cos,
            x0_ssim=x0,
            timesteps=timesteps,
            block_names=[s.name for s in info.slots],
            architecture=info.architecture,
            default_boundary=info.default_boundary,
            default_window=info.default_window,
            meta={"num_steps": info.num_steps, **(meta or {})},
        )


# -- one call --------------------------------------------------------------------------------
def record_trace(
    workload_or_target: Workload | Any,
    *,
    seeds: Sequence[int] = (0,),
    num_steps: int | None = None,
    generate: Callable[[Any, GenerateRequest], Any] | None = None,
    target: Any = None,
    scheduler: Any = None,
    x0: bool = True,
    x_input: XInput = None,
    data_range: float | None = None,
    architecture: str | None = None,
    registry: Registry | None = None,
    progress: bool = False,
) -> Trace:
    """Run one generation under the ``none`` policy with a :class:`TraceRecorder`.

    Args:
        workload_or_target: A :class:`~blockdance_lab.workload.Workload` (built with its
            ``build()`` unless ``target`` is given, run with its ``generate``), or a model /
            pipeline to run with ``generate``.
        seeds: One sample per seed, generated together in one batch.
        num_steps: Denoising steps (default: the workload's; required for a bare target).
        generate: ``generate(target, request)`` runs one generation; default: the workload's.
        target: A model or pipeline already built from the workload.
        scheduler: Scheduler for x̂₀; default: ``target.scheduler`` when present.
        x0: Measure x̂₀ SSIM (needs a supported scheduler and a readable timestep).
        x_input: Where x_t is in the model call (see :data:`XInput`).
        data_range: SSIM data range of x̂₀; None: 2 for a workload whose samples are pixels
            (``Workload.pixels``: images or videos in [-1, 1]), else from the compared tensors.
        architecture: Registered architecture name; default: matched from the model.
        registry: Registry to use; default: the installed plugins.
        progress: Show the workload's progress bar over the steps.

    Returns:
        The :class:`Trace` of the generation.
    """
    meta: dict[str, Any] = {"seeds": list(seeds)}
    if isinstance(workload_or_target, Workload):
        workload = workload_or_target
        target = workload.build() if target is None else target
        generate = generate or workload.generate
        num_steps = num_steps or workload.num_steps
        if data_range is None and workload.pixels:
            data_range = 2.0  # the workload's samples are pixels in [-1, 1]
        meta.update(workload=workload.name, sampler=workload.scheduler)
    else:
        target = workload_or_target
        if generate is None or num_steps is None:
            raise TypeError(
                "record_trace on a model or pipeline needs generate=(target, request) -> "
                "samples and num_steps=; or pass a registered Workload"
            )
    if x0 and scheduler is None:
        scheduler = getattr(target, "scheduler", None)
    if scheduler is not None and x0:
        meta.update(scheduler=type(scheduler).__name__, x0_data_range=data_range)
    recorder = TraceRecorder(scheduler if x0 else None, x_input=x_input, data_range=data_range)
    request = GenerateRequest(seeds=tuple(seeds), num_steps=num_steps, progress=progress)
    with attach(
        target, "none", architecture=architecture, num_steps=num_steps, registry=registry
    ) as handle:
        handle.add_observer(recorder)
        with torch.inference_mode():
            generate(target, request)
    recorder.free()
    if recorder.generations != 1:
        warnings.warn(
            f"the generation callback ran {recorder.generations} generations; the trace holds "
            "the last one only",
            RuntimeWarning,
            stacklevel=2,
        )
    return recorder.result(meta)
