"""The preemption-safe spot trainer: workloads, the training loop, and its telemetry
(structured logs, metrics stream, TensorBoard, goodput ledger).

The names below are imported on first use: `python -m vertex_patterns.train` imports this
package before anything else, and a SIGTERM during start-up must meet the trainer's handler,
not wait for torch to load (about a second, more on a busy machine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vertex_patterns.training.sampler import EpochSampler, SamplerPosition
    from vertex_patterns.training.workload import (
        BUILTIN_WORKLOADS,
        Workload,
        WorkloadFactory,
        resolve_workload,
        workload_fingerprint,
    )

_LAZY = {
    "EpochSampler": "vertex_patterns.training.sampler",
    "SamplerPosition": "vertex_patterns.training.sampler",
    "BUILTIN_WORKLOADS": "vertex_patterns.training.workload",
    "Workload": "vertex_patterns.training.workload",
    "WorkloadFactory": "vertex_patterns.training.workload",
    "resolve_workload": "vertex_patterns.training.workload",
    "workload_fingerprint": "vertex_patterns.training.workload",
}

__all__ = [
    "BUILTIN_WORKLOADS",
    "EpochSampler",
    "SamplerPosition",
    "Workload",
    "WorkloadFactory",
    "resolve_workload",
    "workload_fingerprint",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
