"""The ``magcache`` policy: MagCache (Ma et al., arXiv 2506.09045), natively.

MagCache observes that the magnitude of the change the transformer stack makes to its input,
``output(last) - input(0)`` (the stack's *residual*), shrinks by a steady, model-specific
ratio from one step to the next. Calibrated offline, these per-step *magnitude ratios* say
how far a step's residual is from the last computed one without reading any tensor, so
the decision is a table built when the generation starts:

- the first ``retention_ratio`` share of the steps (``int(retention_ratio * steps + 0.5)``
  steps) always computes;
- from there, each step multiplies an accumulated ratio by its own ratio, counts one more
  step since the last compute and adds ``|1 - accumulated ratio|`` to an accumulated error;
  while the error is at most ``threshold`` and at most ``max_skip_steps`` steps have
  accumulated, the step reuses the whole stack as one residual run (the change the stack
  made at the last computed step is added to the current input); otherwise it computes,
  and the accumulators restart.

This is diffusers 0.42's ``MagCacheConfig`` rule (``diffusers/hooks/mag_cache.py``),
including its float32 arithmetic, and the ratios are read in its format: a list of floats,
one per step (``MagCacheConfig(mag_ratios=...)``), inline or in a JSON file. When the step
count differs from the list's length the list is resampled by nearest neighbour as
diffusers does. Every guidance branch follows the same table.

Calibration: :class:`MagnitudeRecorder` (a policy that computes everything) records the
stack residual's per-token norm at every step, and :func:`ratios_from_norms` turns such
norms into ratios the way diffusers' calibration mode does (mean over tokens of
``norm(step) / (norm(step - 1) + 1e-8)``, 1.0 for the first step).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from blockdance.policies._common import require_two_blocks
from blockdance.policy import (
    FILE_OPTION,
    BlockCall,
    Decision,
    GenerationInfo,
    Policy,
    PolicyConfig,
    StepContext,
)

__all__ = [
    "MagCacheConfig",
    "MagCachePolicy",
    "MagnitudeRecorder",
    "MagnitudeRecorderConfig",
    "load_ratios",
    "magcache_table",
    "ratios_from_norms",
    "resample_ratios",
]


def load_ratios(source: Sequence[float] | str | Path) -> list[float]:
    """Magnitude ratios given inline, or read from a JSON file: a list of floats (diffusers'
    ``MagCacheConfig(mag_ratios=...)``), or an object whose ``mag_ratios`` is one (the file
    ``blockdance magcache-calibrate`` writes, with its provenance beside it).

    Raises:
        ValueError: The file is missing or not JSON, or the ratios are not a non-empty list
            of positive finite numbers (the message names the file and the problem).
    """
    where = "mag_ratios"
    if isinstance(source, (str, Path)):
        where = f"magcache ratios file {str(source)!r}"
        try:
            loaded: Any = json.loads(Path(source).read_text())
        except FileNotFoundError:
            raise ValueError(
                f"{where} does not exist; write one with MagnitudeRecorder.write (a JSON list "
                "of floats, one per step, as diffusers' MagCacheConfig(mag_ratios=...) takes)"
            ) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{where} cannot be read as JSON: {exc}") from None
        if isinstance(loaded, dict) and "mag_ratios" in loaded:  # magcache-calibrate's file
            loaded = loaded["mag_ratios"]
    else:
        loaded = list(source)
    if not isinstance(loaded, list) or not loaded:
        raise ValueError(
            f"{where} must be a non-empty list of floats, one per step (or an object whose "
            f"'mag_ratios' is one); got "
            f"{type(loaded).__name__}{' (empty)' if loaded == [] else ''}"
        )
    ratios: list[float] = []
    for i, value in enumerate(loaded):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: entry {i} is {value!r}, not a number")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{where}: entry {i} is {value!r}; ratios must be positive and finite")
        ratios.append(float(value))
    return ratios


def resample_ratios(ratios: Sequence[float], num_steps: int) -> list[float]:
    """``ratios`` resampled to ``num_steps`` entries by nearest neighbour, as diffusers'
    ``nearest_interp`` does (same float32 grid and round-half-to-even), unchanged when the
    lengths agree."""
    if len(ratios) == num_steps:
        return list(ratios)
    if num_steps == 1:
        return [ratios[-1]]
    scale = (len(ratios) - 1) / (num_steps - 1)
    grid = torch.arange(num_steps, dtype=torch.float32)
    index = torch.round(grid * scale).long().tolist()
    return [ratios[i] for i in index]


def magcache_table(
    ratios: Sequence[float],
    num_steps: int,
    threshold: float,
    max_skip_steps: int,
    retention_ratio: float,
) -> list[bool]:
    """Which steps reuse (True) under MagCache's rule, given one ratio per step.

    The accumulators are float32 tensors, as in diffusers (its ratios are a float32 tensor),
    so a decision at the threshold's edge is the same as diffusers'.
    """
    table = resample_ratios(ratios, num_steps)
    values = torch.tensor(table, dtype=torch.float32)
    retention = int(retention_ratio * num_steps + 0.5)
    one = torch.tensor(1.0, dtype=torch.float32)
    ratio, error, steps = one, torch.tensor(0.0, dtype=torch.float32), 0
    computed_before = False
    reuse: list[bool] = []
    for step in range(num_steps):
        skip = False
        if step >= retention:
            ratio = ratio * values[step]
            steps += 1
            error = error + (one - ratio).abs()
            if computed_before and bool(error <= threshold) and steps <= max_skip_steps:
                skip = True
            else:
                ratio, error, steps = one, torch.tensor(0.0, dtype=torch.float32), 0
        computed_before = computed_before or not skip
        reuse.append(skip)
    return reuse


class MagCacheConfig(PolicyConfig):
    """Configuration of the ``magcache`` policy."""

    kind: Literal["magcache"] = "magcache"
    mag_ratios: list[float] | str = Field(
        ...,
        description="The calibrated magnitude ratios, one per step: a list of floats, or the "
        "path of a JSON file holding one (diffusers' MagCacheConfig(mag_ratios=...) format) "
        "or an object whose 'mag_ratios' is one (blockdance magcache-calibrate's file). "
        "Resampled by nearest neighbour when the step count differs.",
        json_schema_extra=FILE_OPTION,
    )
    threshold: float = Field(
        0.06,
        ge=0.0,
        description="Reuse while the accumulated error sum |1 - product of the ratios since "
        "the last compute| is at most this.",
    )
    max_skip_steps: int = Field(
        3, ge=0, description="At most this many reused steps in a row (K in the paper)."
    )
    retention_ratio: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Share of the steps at the start that always compute: the first "
        "int(retention_ratio * steps + 0.5).",
    )

    @field_validator("mag_ratios")
    @classmethod
    def _readable(cls, value: list[float] | str) -> list[float] | str:
        load_ratios(value)  # a missing file or a bad entry is refused when configured
        return value


class MagCachePolicy(Policy[MagCacheConfig]):
    """Reuse the whole stack's residual on the steps MagCache's calibrated rule skips."""

    config_class = MagCacheConfig

    def __init__(self, config: MagCacheConfig) -> None:
        super().__init__(config)
        self.last = -1
        self.reuse_steps: frozenset[int] = frozenset()

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        require_two_blocks(info, "magcache reuses the stack as a residual run")
        cfg = self.config
        num_steps = self.require_num_steps(info)
        table = magcache_table(
            load_ratios(cfg.mag_ratios),
            num_steps,
            cfg.threshold,
            cfg.max_skip_steps,
            cfg.retention_ratio,
        )
        self.last = info.num_blocks - 1
        self.reuse_steps = frozenset(s for s, skip in enumerate(table) if skip)

    def decide(self, ctx: StepContext, slot: int) -> Decision:
        return Decision.REUSE if ctx.step in self.reuse_steps else Decision.COMPUTE

    def boundaries(self) -> frozenset[int]:
        return frozenset({self.last})

    def residual_runs(self) -> dict[int, int]:
        return {self.last: 0}


def ratios_from_norms(norms: Sequence[float | torch.Tensor]) -> list[float]:
    """Magnitude ratios from the stack residual's norms at consecutive steps.

    Args:
        norms: One entry per step: a number, or a tensor of per-token norms (any shape, the
            same at every step).

    Returns:
        ``1.0`` for the first step, then ``mean(norm[i] / (norm[i - 1] + 1e-8))`` (diffusers'
        calibration formula).
    """
    ratios = [1.0] if norms else []
    for previous, current in itertools.pairwise(norms):
        prev = torch.as_tensor(previous, dtype=torch.float32)
        curr = torch.as_tensor(current, dtype=torch.float32)
        ratios.append(float((curr / (prev + 1e-8)).mean()))
    return ratios


class MagnitudeRecorderConfig(PolicyConfig):
    """Configuration of :class:`MagnitudeRecorder` (not a registered kind)."""

    kind: Literal["magcache-recorder"] = "magcache-recorder"


class MagnitudeRecorder(Policy[MagnitudeRecorderConfig]):
    """Computes every block and records the stack residual's per-token norms per step.

    Attach an instance as the policy, generate on calibration seeds, then read
    :meth:`ratios` or :meth:`write` them for ``magcache``::

        recorder = MagnitudeRecorder()
        with blockdance.attach(model_or_pipeline, recorder) as handle:
            ...  # generate on a few seeds kept apart from the evaluation seeds
        recorder.write("ratios.json")

    The residual is ``output(last) - input(0)`` of the first stream (the image tokens on a
    two-stream model), its norm taken over the last dimension (per token), as diffusers'
    calibration mode measures it.

    Args:
        config: Nothing to configure; the default is used when omitted.
    """

    config_class = MagnitudeRecorderConfig
    observes = True

    def __init__(self, config: MagnitudeRecorderConfig | None = None) -> None:
        super().__init__(config or MagnitudeRecorderConfig())
        #: Per generation and guidance branch, the per-token norms at each step, in order.
        self.norms: list[dict[int, list[torch.Tensor]]] = []
        self._inputs: dict[int, torch.Tensor] = {}
        self.last = -1

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        self.last = info.num_blocks - 1
        self.norms.append({})
        self._inputs = {}

    def end(self) -> None:
        self._inputs = {}

    def decide(self, ctx: StepContext, slot: int) -> Decision:
        return Decision.COMPUTE

    def inspects(self) -> frozenset[int]:
        return frozenset({0})

    def inspect(self, ctx: StepContext, slot: int, call: BlockCall) -> None:
        first = call.state[0]
        if first is None:
            raise ValueError("MagnitudeRecorder: block 0 receives no hidden state in stream 0")
        self._inputs[ctx.branch] = first.detach().float().clone()

    def observe(self, ctx: StepContext, slot: int, output: Any) -> None:
        if slot != self.last:
            return
        assert self.info is not None
        io = self.info.slots[slot].io
        out = io.to_state(output)[0] if io is not None else output
        start = self._inputs.pop(ctx.branch)
        residual = out.detach().float() - start
        self.norms[-1].setdefault(ctx.branch, []).append(
            torch.linalg.vector_norm(residual, dim=-1).cpu()
        )

    def ratios(self) -> list[float]:
        """The ratios per step, averaged over the recorded generations and branches.

        Raises:
            ValueError: Nothing was recorded, or the generations ran different step counts.
        """
        series = [ratios_from_norms(n) for gen in self.norms for n in gen.values()]
        if not series:
            raise ValueError("MagnitudeRecorder recorded no generation; generate first")
        lengths = {len(s) for s in series}
        if len(lengths) != 1:
            raise ValueError(
                f"MagnitudeRecorder recorded generations of different step counts "
                f"{sorted(lengths)}; calibrate one step count at a time"
            )
        return [sum(values) / len(values) for values in zip(*series)]

    def write(self, path: str | Path) -> list[float]:
        """Write :meth:`ratios` as a JSON list (the ``magcache`` ``mag_ratios`` file)."""
        ratios = self.ratios()
        Path(path).write_text(json.dumps(ratios) + "\n")
        return ratios

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._inputs.values())
