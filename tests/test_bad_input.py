"""Bad input fails with a blockdance error (or a pydantic field error) naming it (issue 14).

Schedule tables: each case checks the error
class and that the message names the input (the step, the entry or the file).
"""

from __future__ import annotations

import json
import tracemalloc

import pytest
import torch
from pydantic import ValidationError

import blockdance
from blockdance.errors import InvalidInputError
from toymodel import run


# -- schedule tables ---------------------------------------------------------------------------
@pytest.mark.parametrize("entry", [1.7, True, None, [0, None], "x", "-3"], ids=repr)
def test_schedule_block_entry_must_be_an_integer_or_a_range(entry):
    with pytest.raises(ValidationError, match="schedule step 3") as info:
        blockdance.ScheduleConfig(reuse={3: entry})
    bad = entry[1] if isinstance(entry, list) else entry
    assert f"block entry {bad!r}" in str(info.value)
    assert '"0-20"' in str(info.value)  # what is expected


@pytest.mark.parametrize("step", [True, 2.5, "x"], ids=repr)
def test_schedule_step_must_be_an_integer(step):
    with pytest.raises(ValidationError, match="not a step index") as info:
        blockdance.ScheduleConfig(reuse={step: "0-2"})
    assert f"schedule step {step!r}" in str(info.value)


def test_schedule_huge_range_is_not_expanded_and_fails_at_begin(toy, registry):
    tracemalloc.start()
    try:
        config = blockdance.ScheduleConfig(reuse={5: "0-100000000"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"building the config took {peak} bytes"
    with blockdance.attach(toy, config, registry=registry):
        with pytest.raises(InvalidInputError) as info:
            run(toy, torch.zeros(1, 2, 16), 8)
    assert str(info.value).startswith(
        "schedule step 5 reuses blocks up to 100000000, but the model has 8 blocks (0..7)"
    )


def test_schedule_step_beyond_the_generation_is_invalid_input(toy, registry):
    with blockdance.attach(toy, "schedule", reuse={9: 2}, registry=registry, num_steps=8):
        with pytest.raises(InvalidInputError, match="schedule lists step 9, but the generation"):
            run(toy, torch.zeros(1, 2, 16), 8)


def test_schedule_round_trips_through_json_in_compact_form(tmp_path):
    config = blockdance.ScheduleConfig(reuse={"3": [0, "2-4", 5], 7: ["0-10", "11-20", 25]})
    assert config.reuse == {3: (0, 2, 3, 4, 5), 7: (*range(21), 25)}
    path = tmp_path / "sched.json"
    path.write_text(config.model_dump_json())
    assert json.loads(path.read_text())["reuse"] == {"3": [0, "2-5"], "7": ["0-20", 25]}
    assert blockdance.load_policy_config(path) == config
    assert blockdance.ScheduleConfig.model_validate(config.model_dump()) == config
