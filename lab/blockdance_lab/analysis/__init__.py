"""Analysis: how much each block changes between adjacent steps, and a configuration from it.

- :class:`TraceRecorder` (an observer) and :func:`record_trace` measure, for one generation,
  the relative L2 and cosine similarity of every block's output to the previous step's, and
  the SSIM of adjacent steps' predicted clean samples x̂₀ (:func:`predicted_x0`);
- :class:`Trace` holds the numbers (``to_json``, ``to_csv``);
- :func:`calibrate` proposes a BlockDance boundary block and reuse window for a target
  (:func:`calibrate_combination`: over several N, with forecast orders for validation);
  :func:`validate` measures its shortlist, the default and any other policy configurations
  on a few generations and keeps the best.

The command line is ``blockdance analyze`` and ``blockdance calibrate``; docs/analysis.md
describes the measurements, the plots and the calibration rule.
"""

from __future__ import annotations

from blockdance_lab.analysis.calibrate import (
    Calibration,
    CalibrationError,
    Candidate,
    calibrate,
    calibrate_combination,
    evaluate_config,
    settle_step,
)
from blockdance_lab.analysis.trace import (
    Trace,
    TraceRecorder,
    XInput,
    default_x_input,
    record_trace,
)
from blockdance_lab.analysis.validate import (
    VALIDATION_SEED0,
    VALIDATION_SEED_STEP,
    Measured,
    Planned,
    Validation,
    candidate_policy,
    plan_validation,
    read_candidates,
    validate,
    validation_seeds,
)
from blockdance_lab.analysis.x0 import UnsupportedSchedulerError, model_prediction, predicted_x0

__all__ = [
    "VALIDATION_SEED0",
    "VALIDATION_SEED_STEP",
    "Calibration",
    "CalibrationError",
    "Candidate",
    "Measured",
    "Planned",
    "Trace",
    "TraceRecorder",
    "UnsupportedSchedulerError",
    "Validation",
    "XInput",
    "calibrate",
    "calibrate_combination",
    "candidate_policy",
    "default_x_input",
    "evaluate_config",
    "model_prediction",
    "plan_validation",
    "predicted_x0",
    "read_candidates",
    "record_trace",
    "settle_step",
    "validate",
    "validation_seeds",
]
