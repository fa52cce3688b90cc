"""blockdance-adaptive: BlockDance's reuse steps picked from the boundary's calibrated change,
checked against schedules derived by hand, a loop written by hand, and changes measured here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

import blockdance
from blockdance.policies.adaptive import (
    BoundaryChangeRecorder,
    BoundaryChangeRecorderConfig,
    load_calibration,
)
from forecast_reference import lagrange
from toymodel import ToyDenoiser, count_computes, run, run_by_hand, toy_registry

T, DEPTH, BOUNDARY = 20, 8, 5
WINDOW = (0.25, 0.95)  # steps 5..18 of 20

# First differences D_1 per step: slow, then faster, then fast (binary fractions: exact sums).
D1 = [0.0] * 5 + [0.125] * 6 + [0.25] * 4 + [0.625] * 4 + [1.0]
# Order 0, threshold 0.5, at most 3 reuses in a row; steps 0..4 compute (before the window).
# step:  5     6    7     8    9     10   11   12   13   14   15          16..18
# error: .125  .25  .375  cap  .125  .25  .5   cap  .25  .5   .5+.625>.5  .625 > .5
REUSE_ORDER0 = {5, 6, 7, 9, 10, 11, 13, 14}

# D_2 per step for a linear forecast (order 1): its error at s from computed t0 < t1 is
# mean(D_2[t0 + 2 .. s]) * (s - t0) * (s - t1) / 2.
D2 = [0.0, 0.0] + [0.25] * 11 + [1.0] * 7
# Threshold 1, at most 3 in a row; points start at (3, 4).
# s=5: .25*2*1/2=.25 R   6: .25*3*2/2=.75 R   7: .25*4*3/2=1.5 C -> (4, 7)
# s=8: .25*4*1/2=.5 R    9: .25*5*2/2=1.25 C -> (7, 9)
# s=10: .25*3*1/2=.375 R 11: .25*4*2/2=1 R   12: .25*5*3/2=1.875 C -> (9, 12)
# s=13: mean(.25,.25,1)=.5, *4*1/2 = 1 R     14: .625*5*2/2=3.125 C -> (12, 14)
# s=15: 1*3*1/2=1.5 C -> (14, 15)            16: 1*2*1/2=1 R   17: 1*3*2/2=3 C -> (15, 17)
# s=18: 1*3*1/2=1.5 C
REUSE_ORDER1 = {5, 6, 8, 10, 11, 13, 16}


def _reused_steps(changes: object, **options: object) -> set[int]:
    model = ToyDenoiser(depth=DEPTH, dim=16)
    x = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(0))
    config = {"boundary": BOUNDARY, "window": WINDOW, "changes": changes, **options}
    with blockdance.attach(model, "blockdance-adaptive", registry=toy_registry(), **config) as h:
        with h.generation(num_steps=T):
            run(model, x, T)
        stats = h.stats
    assert stats is not None
    return {s for s, _ in stats.reused_pairs()}


def test_order_zero_reuses_while_the_summed_change_stays_under_the_threshold() -> None:
    got = _reused_steps(D1, order=0, threshold=0.5, max_consecutive=3)
    assert got == REUSE_ORDER0


def test_a_linear_forecast_is_bounded_by_the_change_of_the_change() -> None:
    got = _reused_steps([D1, D2], order=1, threshold=1.0, max_consecutive=3)
    assert got == REUSE_ORDER1


def test_max_consecutive_caps_the_run_of_reuses() -> None:
    # a huge threshold: only the cap decides, so one compute every max_consecutive + 1 steps,
    # counted from the last step before the window (4): 8, 12, 16 compute
    got = _reused_steps(D1, order=0, threshold=1e9, max_consecutive=3)
    assert got == set(range(5, 19)) - {8, 12, 16}


def test_reuse_skips_the_blocks_and_substitutes_the_forecast() -> None:
    """What enters the deep blocks on a reuse step is the linear extrapolation of the
    boundary's outputs at the last two computed steps; blocks 0..boundary do not run."""
    model = ToyDenoiser(depth=DEPTH, dim=16)
    x = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(1))
    computed: list[tuple[int, torch.Tensor]] = []

    def front(step: int, h: torch.Tensor, compute) -> torch.Tensor:
        if step in REUSE_ORDER1:
            return lagrange(computed[-2:], float(step))
        out = compute(h)
        computed.append((step, out))
        return out

    expected = run_by_hand(model, x, T, BOUNDARY, front)
    counts = count_computes(model)
    options = {"changes": [D1, D2], "threshold": 1.0, "max_consecutive": 3, "order": 1}
    with blockdance.attach(
        model,
        "blockdance-adaptive",
        registry=toy_registry(),
        boundary=BOUNDARY,
        window=WINDOW,
        **options,
    ) as h:
        with h.generation(num_steps=T):
            got = run(model, x, T)
        stats = h.stats
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert stats is not None and {s for s, _ in stats.reused_pairs()} == REUSE_ORDER1
    assert all(counts[b] == T - len(REUSE_ORDER1) for b in range(BOUNDARY + 1))
    assert all(counts[b] == T for b in range(BOUNDARY + 1, DEPTH))


def _boundary_states(model: ToyDenoiser, x: torch.Tensor) -> list[torch.Tensor]:
    states: list[torch.Tensor] = []

    def front(step: int, h: torch.Tensor, compute) -> torch.Tensor:
        states.append(compute(h))
        return states[-1]

    run_by_hand(model, x, T, BOUNDARY, front)
    return states


def test_the_recorder_measures_relative_differences_per_sample(tmp_path: Path) -> None:
    model = ToyDenoiser(depth=DEPTH, dim=16)
    x = torch.randn(3, 4, 16, generator=torch.Generator().manual_seed(2))
    h = [s.double().reshape(3, -1) for s in _boundary_states(model, x)]
    expected = [[0.0] * T for _ in range(3)]
    for s in range(1, T):
        diffs = [h[s] - h[s - 1]]
        if s >= 2:
            diffs.append(h[s] - 2 * h[s - 1] + h[s - 2])
        if s >= 3:
            diffs.append(h[s] - 3 * h[s - 1] + 3 * h[s - 2] - h[s - 3])
        for m, d in enumerate(diffs):
            expected[m][s] = float((d.norm(dim=1) / h[s - 1].norm(dim=1)).mean())

    recorder = BoundaryChangeRecorder(BoundaryChangeRecorderConfig(boundary=BOUNDARY))
    with blockdance.attach(model, recorder, registry=toy_registry()) as handle:
        with handle.generation(num_steps=T):
            run(model, x, T)
    got = recorder.write(tmp_path / "changes.json", workload="toy")
    for m in range(3):
        assert got[m] == pytest.approx(expected[m], rel=1e-4, abs=1e-7)
    written = json.loads((tmp_path / "changes.json").read_text())
    assert written["boundary"] == BOUNDARY and written["num_steps"] == T
    assert written["meta"] == {"workload": "toy"}

    # the file drives the policy exactly as the same numbers given inline
    from_file = _reused_steps(str(tmp_path / "changes.json"), threshold=0.05)
    assert from_file == _reused_steps(got, threshold=0.05)
    with pytest.raises(ValueError, match="calibrated at block"):
        _reused_steps(str(tmp_path / "changes.json"), threshold=0.05, boundary=4)


def _trace(path: Path, branches: list[list[float]]) -> str:
    """A trace.json as ``blockdance analyze`` writes it, with ``branches[b]`` as the boundary
    column of branch ``b`` and 9.0 in every other block (never used)."""
    rel = [
        [[None] * DEPTH]
        + [[column[s] if b == BOUNDARY else 9.0 for b in range(DEPTH)] for s in range(1, T)]
        for column in branches
    ]
    data = {
        "architecture": "toy",
        "block_names": [f"blocks.{i}" for i in range(DEPTH)],
        "default_boundary": 5,
        "default_window": list(WINDOW),
        "meta": {},
        "timesteps": [None] * T,
        "rel_l2": rel,
        "cosine": rel,
        "x0_ssim": [[None] * T for _ in branches],
    }
    path.write_text(json.dumps(data))
    return str(path)


def test_a_trace_json_gives_the_boundary_column_averaged_over_branches(tmp_path: Path) -> None:
    # branch means equal D1: 0.125 = (0 + 0.25) / 2, 0.25 = (0.125 + 0.375) / 2 ...
    low = [max(v - 0.125, 0.0) if v else 0.0 for v in D1]
    high = [2 * v - lo for v, lo in zip(D1, low, strict=True)]
    path = _trace(tmp_path / "trace.json", [low, high])
    got = _reused_steps(path, order=0, threshold=0.5, max_consecutive=3)
    assert got == REUSE_ORDER0


def test_first_differences_alone_give_the_change_of_the_change() -> None:
    calibration = load_calibration([0.0, 0.5, 0.75, 0.25, 0.25])
    (diffs,) = calibration.by_block.values()
    assert calibration.derived
    assert diffs[1] == (0.0, 0.0, 0.25, 0.5, 0.0)  # |D1[s] - D1[s-1]| from step 2
    assert diffs[2] == (0.0, 0.0, 0.0, 0.75, 0.5)  # |second difference of D1| from step 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{not json", "cannot be read as JSON"),
        ("[]", "non-empty list"),
        ('[0.0, "x"]', "entry 1 is 'x'"),
        ("[0.0, -0.5]", "finite and >= 0"),
        ('{"a": 1}', "neither"),
        (
            '{"kind": "blockdance-adaptive-changes", "boundary": "5", "differences": [[0]]}',
            "boundary",
        ),
        ("[[0.0, 0.1], [0.0]]", "different lengths"),
    ],
)
def test_a_bad_changes_file_is_refused_naming_it(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "changes.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValidationError, match=message) as info:
        blockdance.default_registry().make_policy(
            {"kind": "blockdance-adaptive", "changes": str(path)}
        )
    assert "changes.json" in str(info.value)


def test_a_trace_with_a_missing_step_is_refused(tmp_path: Path) -> None:
    column = list(D1)
    path = _trace(tmp_path / "trace.json", [column])
    data = json.loads(Path(path).read_text())
    data["rel_l2"][0][7][BOUNDARY] = None
    Path(path).write_text(json.dumps(data))
    with pytest.raises(ValidationError, match="no measured change at step 7"):
        blockdance.default_registry().make_policy({"kind": "blockdance-adaptive", "changes": path})


def test_another_step_count_is_refused_not_resampled() -> None:
    with pytest.raises(ValueError, match="holds 20 steps, but the generation runs 10"):
        model = ToyDenoiser(depth=DEPTH, dim=16)
        with blockdance.attach(
            model, "blockdance-adaptive", changes=D1, registry=toy_registry()
        ) as h:
            with h.generation(num_steps=10):
                run(model, torch.zeros(1, 4, 16), 10)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"threshold": -0.1}, "threshold"),
        ({"max_consecutive": 0}, "max_consecutive"),
        ({"order": 3}, "order"),
        ({"window": (0.9, 0.2)}, "window"),
        ({"N": 2}, "N"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        blockdance.default_registry().make_policy(
            {"kind": "blockdance-adaptive", "changes": D1, **options}
        )


def test_the_last_block_is_refused_as_boundary() -> None:
    with pytest.raises(ValueError, match="leaves no deep block"):
        _reused_steps(D1, boundary=DEPTH - 1)


def test_the_estimate_of_order_two_is_the_interpolation_remainder() -> None:
    # D_3 = 0.5 everywhere it is defined: the error at s from computed t0 < t1 < t2 is
    # 0.5 * (s-t0)(s-t1)(s-t2) / 3!, at most 0.5 only when the product is 6 (s = t2 + 1 after
    # three consecutive computes); at most one reuse in a row.
    # s=5 from (2,3,4): 3*2*1 R | 6: cap C | 7 from (3,4,6): 4*3*1 C | 8 from (4,6,7): 4*2*1 C
    # 9 from (6,7,8): 6 R | 10 cap C | 11: 12 C | 12: 8 C | 13: 6 R | 14 C | 15 C | 16 C | 17 R
    # 18 cap C
    zeros = [0.0] * T
    d3 = [0.0] * 3 + [0.5] * (T - 3)
    got = _reused_steps([zeros, zeros, d3], order=2, threshold=0.5, max_consecutive=1)
    assert got == {5, 9, 13, 17}
