"""Quality metrics and the shape-image probe used to score generated samples."""

from __future__ import annotations

from blockdance_lab.evaluation.metrics import class_accuracy, frechet_distance, psnr, ssim
from blockdance_lab.evaluation.probe import (
    DEFAULT_PROBE_PATH,
    ProbeNet,
    evaluate_probe,
    load_probe,
    probe_features,
    save_probe,
    train_probe,
)

__all__ = [
    "DEFAULT_PROBE_PATH",
    "ProbeNet",
    "class_accuracy",
    "evaluate_probe",
    "frechet_distance",
    "load_probe",
    "probe_features",
    "psnr",
    "save_probe",
    "ssim",
    "train_probe",
]
