"""The ``blockdance-adaptive`` policy: BlockDance's reuse steps chosen by the boundary
state's calibrated change, with the forecast of ``blockdance-forecast``.

BlockDance reuses blocks ``0..boundary`` on a fixed schedule: one step in every ``N``
computes. The boundary state does not drift at a constant rate, though: it moves fast when
the structure forms and slowly once it has settled. This policy spends the computes where
the state moves. Offline, :class:`BoundaryChangeRecorder` measures, on held-out seeds, the
relative norm of the boundary output's ``m``-th backward difference at every step,
``D_m[s] = mean ||Δ^m h_s|| / ||h_{s-1}||`` (``m = 1`` is the relative L2 of adjacent steps
that ``blockdance analyze`` writes to its ``trace.json``). When the generation starts the
policy builds its table of reused steps from these numbers alone (MagCache's idea, applied
to BlockDance's structural state instead of the whole stack's output):

- outside the window every step computes, and so does step 0;
- inside it, a step reuses when the *estimated error* of the state it would substitute is
  at most ``threshold`` and at most ``max_consecutive`` steps in a row reuse; otherwise it
  computes.

The substituted state is the Newton forecast through the boundary's outputs at the last
``p + 1`` computed steps ``t_0 < … < t_p`` (``p = min(order, computed steps - 1)``, as
:class:`~blockdance.policies.forecast.BoundaryHistory` forecasts), and its estimated error
at step ``s`` is the interpolation remainder::

    E(s) = mean(D_{p+1}[j] for t_0 + p + 1 <= j <= s) * prod(s - t_i) / (p + 1)!

For ``p = 0`` (repeat the cached state) this is ``D_1[t_0 + 1] + … + D_1[s]``, the sum of
the calibrated changes since the last compute; for a linear forecast it is the change of
the change, ``D_2``, times ``(s - t_1)(s - t_0) / 2``. The decision reads no tensor, so
branches and samples share the table and the runtime adds no host sync.

The calibration is refused, not resampled, when its step count differs from the
generation's: a per-step change scales with the step size, so a table for 50 steps says
little about 20. Calibrate at the step count you generate with.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import torch
from pydantic import Field, field_validator

from blockdance.policies._common import Window, window_steps
from blockdance.policies.forecast import BoundaryHistory, _ForecastAtBoundary
from blockdance.policies.step_set import StepSetPolicy
from blockdance.policy import (
    FILE_OPTION,
    Decision,
    GenerationInfo,
    Policy,
    PolicyConfig,
    StepContext,
)

__all__ = [
    "AdaptiveConfig",
    "AdaptivePolicy",
    "BoundaryChangeRecorder",
    "BoundaryChangeRecorderConfig",
    "Calibration",
    "adaptive_reuse_steps",
    "estimated_error",
    "load_calibration",
]

#: The ``kind`` field of the file :meth:`BoundaryChangeRecorder.write` writes.
CHANGES_FILE_KIND = "blockdance-adaptive-changes"

#: Calibrated differences of one boundary: ``differences[m - 1][s]`` is ``D_m`` at step ``s``.
Differences = tuple[tuple[float, ...], ...]


# -- calibration files ------------------------------------------------------------------------
class Calibration:
    """Calibrated boundary changes as read from a list or a file.

    Args:
        by_block: ``{block: differences}``: the blocks measured (every block of a
            ``trace.json``, the recorder's boundary), or ``{None: differences}`` for a bare
            list, which applies to whatever boundary the policy uses.
        source: Where it came from, for messages.
        derived: True when only first differences were given (higher ones are estimated
            from them, see :func:`_derived`).
    """

    def __init__(
        self, by_block: Mapping[int | None, Differences], source: str, *, derived: bool
    ) -> None:
        self.by_block = dict(by_block)
        self.source = source
        self.derived = derived

    @property
    def num_steps(self) -> int:
        return len(next(iter(self.by_block.values()))[0])

    def for_boundary(self, boundary: int, num_steps: int, kind: str) -> Differences:
        """The differences of ``boundary`` for a generation of ``num_steps`` steps.

        Raises:
            ValueError: The calibration measured another block, or another step count.
        """
        if boundary in self.by_block:
            diffs = self.by_block[boundary]
        elif None in self.by_block:
            diffs = self.by_block[None]
        else:
            measured = sorted(b for b in self.by_block if b is not None)
            raise ValueError(
                f"{kind}: {self.source} was calibrated at block(s) {measured}, but the policy's "
                f"boundary is {boundary}; record the changes at boundary {boundary} "
                f"(BoundaryChangeRecorderConfig(boundary={boundary})) or set "
                f"boundary={measured[0]}"
            )
        if len(diffs[0]) != num_steps:
            raise ValueError(
                f"{kind}: {self.source} holds {len(diffs[0])} steps, but the generation runs "
                f"{num_steps}; per-step changes scale with the step size and are not "
                f"resampled, so calibrate at {num_steps} steps"
            )
        return diffs


def _numbers(values: Any, where: str) -> tuple[float, ...]:
    if not isinstance(values, list) or not values:
        raise ValueError(
            f"{where} must be a non-empty list of numbers, got "
            f"{type(values).__name__}{' (empty)' if values == [] else ''}"
        )
    out: list[float] = []
    for i, v in enumerate(values):
        if v is None and i == 0:  # a trace's step 0 has no previous step
            v = 0.0
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{where}: entry {i} is {v!r}, not a number")
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{where}: entry {i} is {v!r}; changes must be finite and >= 0")
        out.append(float(v))
    return tuple(out)


def _derived(first: tuple[float, ...], orders: int) -> Differences:
    """First differences, and higher ones estimated from their magnitudes alone:
    ``D_m[s] = |Δ^{m-1} D_1|[s]``, the change of the change. A lower bound: it sees the
    state speed up or slow down, not turn."""
    diffs = [first]
    current = list(first)
    for m in range(2, orders + 1):
        current = [0.0 if s < m else current[s] - current[s - 1] for s in range(len(first))]
        diffs.append(tuple(abs(v) for v in current))
    return tuple(diffs)


def _from_trace(data: Mapping[str, Any], where: str) -> dict[int | None, Differences]:
    """Per block, the branch mean of a ``blockdance analyze`` trace's ``rel_l2``."""
    rel = data["rel_l2"]
    names = data.get("block_names")
    if not isinstance(rel, list) or not rel or not isinstance(names, list):
        raise ValueError(f"{where}: 'rel_l2' must be a (branches, steps, blocks) nested list")
    num_steps = len(rel[0]) if isinstance(rel[0], list) else 0
    out: dict[int | None, Differences] = {}
    for block in range(len(names)):
        column: list[Any] = []
        for step in range(num_steps):
            values = []
            for b, branch in enumerate(rel):
                try:
                    v = branch[step][block]
                except (TypeError, IndexError):
                    raise ValueError(
                        f"{where}: 'rel_l2' branch {b} has no entry at step {step}, block "
                        f"{block}; the trace must be (branches, steps, blocks)"
                    ) from None
                if v is not None:
                    values.append(v)
            if not values and step > 0:
                raise ValueError(
                    f"{where}: block {block} has no measured change at step {step}; record "
                    "the trace under the 'none' policy (blockdance analyze does)"
                )
            column.append(sum(values) / len(values) if values else None)
        out[block] = _derived(_numbers(column, f"{where} block {block}"), 3)
    return out


def load_calibration(source: Sequence[Any] | str | Path) -> Calibration:
    """Read calibrated boundary changes.

    ``source`` is one of: a list of floats (the first differences ``D_1``, one per step); a
    list of such lists (``D_1``, ``D_2``, …); or the path of a JSON file holding either, or
    the object :meth:`BoundaryChangeRecorder.write` writes, or the ``trace.json`` of
    ``blockdance analyze`` (its per-(step, block) relative L2, averaged over branches). Where
    only ``D_1`` is given, higher differences are estimated as the change of the change.

    Raises:
        ValueError: The file is missing or not JSON, or the numbers are not lists of finite
            non-negative numbers of one length (the message names the file and the problem).
    """
    where = "changes"
    loaded: Any
    if isinstance(source, (str, Path)):
        where = f"changes file {str(source)!r}"
        try:
            loaded = json.loads(Path(source).read_text())
        except FileNotFoundError:
            raise ValueError(
                f"{where} does not exist; write one with BoundaryChangeRecorder.write, or "
                "give the trace.json of blockdance analyze"
            ) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{where} cannot be read as JSON: {exc}") from None
    else:
        loaded = list(source)
    by_block: dict[int | None, Differences]
    derived = True
    if isinstance(loaded, dict):
        if "rel_l2" in loaded:
            by_block = _from_trace(loaded, where)
        elif loaded.get("kind") == CHANGES_FILE_KIND:
            boundary = loaded.get("boundary")
            if not isinstance(boundary, int) or isinstance(boundary, bool):
                raise ValueError(f"{where}: 'boundary' must be an integer, got {boundary!r}")
            diffs = loaded.get("differences")
            if not isinstance(diffs, list) or not diffs:
                raise ValueError(f"{where}: 'differences' must be a non-empty list of lists")
            by_block = {
                boundary: tuple(_numbers(d, f"{where} D_{m + 1}") for m, d in enumerate(diffs))
            }
            derived = len(diffs) == 1
            if derived:
                by_block = {boundary: _derived(by_block[boundary][0], 3)}
        else:
            raise ValueError(
                f"{where} is a JSON object but neither a {CHANGES_FILE_KIND!r} file (the "
                "recorder's) nor a trace.json (with 'rel_l2'); got keys "
                f"{sorted(loaded)[:6]}"
            )
    elif isinstance(loaded, list) and loaded and all(isinstance(v, list) for v in loaded):
        diffs_list = tuple(_numbers(d, f"{where} D_{m + 1}") for m, d in enumerate(loaded))
        derived = len(diffs_list) == 1
        by_block = {None: _derived(diffs_list[0], 3) if derived else diffs_list}
    else:
        by_block = {None: _derived(_numbers(loaded, where), 3)}
    for diffs in by_block.values():
        if len({len(d) for d in diffs}) != 1:
            raise ValueError(
                f"{where}: the differences have different lengths {[len(d) for d in diffs]}; "
                "each holds one entry per step"
            )
    return Calibration(by_block, where, derived=derived)


# -- the rule ---------------------------------------------------------------------------------
def estimated_error(differences: Differences, points: Sequence[int], step: int) -> float:
    """The estimated relative error of the Newton forecast through the boundary states at
    the computed steps ``points`` (oldest first), evaluated at ``step``.

    ``mean(D_{p+1}[j], t_0 + p + 1 <= j <= step) * prod(step - t_i) / (p + 1)!`` with
    ``p = len(points) - 1``; for one point, the sum of ``D_1`` since it.

    Raises:
        ValueError: No calibrated difference of order ``p + 1``.
    """
    p = len(points) - 1
    if p >= len(differences):
        raise ValueError(
            f"a forecast through {p + 1} states needs the calibrated difference of order "
            f"{p + 1}, and the calibration holds orders 1..{len(differences)}"
        )
    d = differences[p]
    span = d[points[0] + p + 1 : step + 1]
    product = 1.0
    for t in points:
        product *= step - t
    return sum(span) / len(span) * product / math.factorial(p + 1)


def adaptive_reuse_steps(
    differences: Differences,
    window: range,
    *,
    threshold: float,
    max_consecutive: int,
    order: int,
) -> frozenset[int]:
    """The steps that reuse blocks ``0..boundary`` under the adaptive rule.

    Every step before ``window`` computes. In it, step ``s`` reuses when at least one step
    computed before it, at most ``max_consecutive`` steps in a row reuse, and the estimated
    error (:func:`estimated_error`) of the forecast from the last ``order + 1`` computed steps
    is at most ``threshold``; otherwise it computes.
    """
    computed = list(range(window.start))
    reuse: set[int] = set()
    for step in window:
        if computed and step - computed[-1] <= max_consecutive:
            points = computed[-(order + 1) :]
            if estimated_error(differences, points, step) <= threshold:
                reuse.add(step)
                continue
        computed.append(step)
    return frozenset(reuse)


# -- the policy -------------------------------------------------------------------------------
class AdaptiveConfig(PolicyConfig):
    """Configuration of the ``blockdance-adaptive`` policy."""

    kind: Literal["blockdance-adaptive"] = "blockdance-adaptive"
    changes: list[float] | list[list[float]] | str = Field(
        ...,
        description="The boundary state's calibrated per-step changes: a list of floats (D_1, "
        "one per step), a list of lists (D_1, D_2, ...), or the path of a JSON file holding "
        "one, the file BoundaryChangeRecorder.write writes, or blockdance analyze's "
        "trace.json. Its step count must equal the generation's.",
        json_schema_extra=FILE_OPTION,
    )
    threshold: float = Field(
        0.05,
        ge=0.0,
        description="Reuse while the estimated relative error of the substituted boundary "
        "state is at most this.",
    )
    max_consecutive: int = Field(2, ge=1, description="At most this many reused steps in a row.")
    order: int = Field(
        1,
        ge=0,
        le=2,
        description="Finite-difference order of the forecast substituted on a reuse "
        "(blockdance-forecast's): 0 repeats the last computed state, 1 linear, 2 quadratic.",
    )
    boundary: int | None = Field(
        None, ge=0, description="Last structural block; None: the architecture's default."
    )
    window: Window = Field(
        None,
        description="Window (start, end) fractions of the trajectory in which steps may "
        "reuse; None: the architecture's default.",
    )

    @field_validator("changes")
    @classmethod
    def _readable(cls, value: list[float] | list[list[float]] | str) -> Any:
        load_calibration(value)  # a missing file or a bad entry is refused when configured
        return value


class AdaptivePolicy(_ForecastAtBoundary, StepSetPolicy[AdaptiveConfig]):
    """Reuse the structural blocks where the boundary's calibrated change allows, and
    substitute the boundary state forecast to the step."""

    config_class = AdaptiveConfig
    needs_deep_block = True

    def __init__(self, config: AdaptiveConfig) -> None:
        super().__init__(config)
        self.history = BoundaryHistory(config.order)

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        self.history = BoundaryHistory(self.config.order)

    def plan_steps(self, info: GenerationInfo, num_steps: int) -> tuple[None, frozenset[int]]:
        cfg = self.config
        differences = load_calibration(cfg.changes).for_boundary(
            self.boundary, num_steps, self.name
        )
        window = window_steps(info.default_window if cfg.window is None else cfg.window, num_steps)
        reuse = adaptive_reuse_steps(
            differences,
            window,
            threshold=cfg.threshold,
            max_consecutive=cfg.max_consecutive,
            order=cfg.order,
        )
        return None, reuse


# -- calibration ------------------------------------------------------------------------------
class BoundaryChangeRecorderConfig(PolicyConfig):
    """Configuration of :class:`BoundaryChangeRecorder` (not a registered kind)."""

    kind: Literal["blockdance-adaptive-recorder"] = "blockdance-adaptive-recorder"
    boundary: int | None = Field(
        default=None,
        ge=0,
        description="Block whose output is measured; None: the default boundary.",
    )
    orders: int = Field(
        default=3, ge=1, le=3, description="Record the differences of orders 1..this."
    )


class BoundaryChangeRecorder(Policy[BoundaryChangeRecorderConfig]):
    """Computes every block and records the boundary output's per-step differences.

    At step ``s`` it measures, for ``m = 1..orders``, ``||Δ^m h_s|| / ||h_{s-1}||`` per sample
    (the streams of a multi-stream state concatenated, as ``blockdance analyze`` measures)
    and averages over samples; :meth:`differences` averages over generations and branches.
    Generate on held-out seeds, then write the file ``blockdance-adaptive`` reads::

        recorder = BoundaryChangeRecorder(BoundaryChangeRecorderConfig(boundary=6))
        with blockdance.attach(model_or_pipeline, recorder, num_steps=50) as handle:
            ...  # generate on seeds kept apart from the evaluation seeds (10000..)
        recorder.write("changes.json")

    Args:
        config: The boundary and the orders; the default config when omitted.
    """

    config_class = BoundaryChangeRecorderConfig
    observes = True

    def __init__(self, config: BoundaryChangeRecorderConfig | None = None) -> None:
        super().__init__(config or BoundaryChangeRecorderConfig())
        self.boundary = -1
        self.architecture = ""
        #: Per generation and branch, ``{step: [D_1, D_2, ...]}`` (the orders measurable there).
        self.measured: list[dict[int, dict[int, list[float]]]] = []
        self._states: dict[int, list[tuple[int, list[torch.Tensor]]]] = {}
        self.num_steps: int | None = None

    def begin(self, info: GenerationInfo) -> None:
        super().begin(info)
        configured = self.config.boundary
        self.boundary = info.default_boundary if configured is None else configured
        if self.boundary >= info.num_blocks:
            raise ValueError(
                f"BoundaryChangeRecorder boundary={self.boundary} is out of range: the model "
                f"has {info.num_blocks} blocks (0..{info.num_blocks - 1})"
            )
        self.architecture = info.architecture
        self.num_steps = info.num_steps
        self.measured.append({})
        self._states = {}

    def end(self) -> None:
        self._states = {}

    def decide(self, ctx: StepContext, slot: int) -> Decision:
        return Decision.COMPUTE

    def observe(self, ctx: StepContext, slot: int, output: Any) -> None:
        if slot != self.boundary:
            return
        assert self.info is not None
        io = self.info.slots[slot].io
        state = io.to_state(output) if io is not None else (cast(torch.Tensor, output),)
        rows = int(next(t for t in state if t is not None).shape[0])
        flat = [t.detach().float().reshape(rows, -1).clone() for t in state if t is not None]
        kept = self._states.setdefault(ctx.branch, [])
        kept.append((ctx.step, flat))
        del kept[: -(self.config.orders + 1)]
        values: list[float] = []
        for m in range(1, len(kept)):
            window = kept[-(m + 1) :]
            if window[-1][0] - window[0][0] != m:  # not consecutive steps
                break
            squared = torch.zeros(rows)
            for i in range(len(flat)):  # Δ^m h_s = sum_k (-1)^k C(m, k) h_{s-k}
                diff = sum((-1) ** k * math.comb(m, k) * window[-1 - k][1][i] for k in range(m + 1))
                squared = squared + cast(torch.Tensor, diff).pow(2).sum(1).cpu()
            scale = sum(t.pow(2).sum(1).cpu() for t in kept[-2][1])
            values.append(float((squared.sqrt() / cast(torch.Tensor, scale).sqrt()).mean()))
        self.measured[-1].setdefault(ctx.branch, {})[ctx.step] = values

    def differences(self) -> list[list[float]]:
        """``[D_1, D_2, ...]``, one entry per step (0.0 where the order is not measurable:
        steps before ``m``), averaged over the recorded generations and branches.

        Raises:
            ValueError: Nothing was recorded, or the generations ran different step counts.
        """
        series = [steps for gen in self.measured for steps in gen.values()]
        if not series:
            raise ValueError("BoundaryChangeRecorder recorded no generation; generate first")
        lengths = {max(s) + 1 for s in series}
        if len(lengths) != 1:
            raise ValueError(
                f"BoundaryChangeRecorder recorded generations of different step counts "
                f"{sorted(lengths)}; calibrate one step count at a time"
            )
        (num_steps,) = lengths
        out = []
        for m in range(self.config.orders):
            row = []
            for step in range(num_steps):
                values = [s[step][m] for s in series if step in s and len(s[step]) > m]
                row.append(sum(values) / len(values) if values else 0.0)
            out.append(row)
        return out

    def write(self, path: str | Path, **meta: Any) -> list[list[float]]:
        """Write :meth:`differences` as the JSON file ``blockdance-adaptive`` reads; ``meta``
        (workload, seeds …) is kept beside them."""
        diffs = self.differences()
        data = {
            "kind": CHANGES_FILE_KIND,
            "boundary": self.boundary,
            "architecture": self.architecture,
            "num_steps": len(diffs[0]),
            "generations": len(self.measured),
            "meta": meta,
            "differences": diffs,
        }
        Path(path).write_text(json.dumps(data, indent=1) + "\n")
        return diffs

    def memory_bytes(self) -> int:
        return sum(
            t.numel() * t.element_size()
            for kept in self._states.values()
            for _, flat in kept
            for t in flat
        )
