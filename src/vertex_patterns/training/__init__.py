"""The preemption-safe spot trainer: workloads, the training loop, and its telemetry
(structured logs, metrics stream, TensorBoard, goodput ledger)."""

from __future__ import annotations

from vertex_patterns.training.sampler import EpochSampler, SamplerPosition
from vertex_patterns.training.workload import (
    BUILTIN_WORKLOADS,
    Workload,
    WorkloadFactory,
    resolve_workload,
    workload_fingerprint,
)

__all__ = [
    "BUILTIN_WORKLOADS",
    "EpochSampler",
    "SamplerPosition",
    "Workload",
    "WorkloadFactory",
    "resolve_workload",
    "workload_fingerprint",
]
