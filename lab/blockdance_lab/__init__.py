"""blockdance's lab: procedural data, the zoo of tiny models trained on it, quality probes
and metrics, workloads, and the commands that measure policies (``demo``, ``bench``,
``analyze``, ``calibrate``).

Installed apart from the core (``pip install blockdance-lab``); it adds its hook and its
commands to blockdance through its plugin, :mod:`blockdance_lab.plugin`.
"""

from blockdance_lab.workload import (
    GenerateRequest,
    QualityProbe,
    UnknownWorkloadError,
    Workload,
    get_workload,
    workloads,
)

__all__ = [
    "GenerateRequest",
    "QualityProbe",
    "UnknownWorkloadError",
    "Workload",
    "get_workload",
    "workloads",
]
