"""Health checks over a training run's metrics stream: rules, findings and a verdict.

    from vertex_patterns.health import check_run, HealthConfig, rpo_seconds
    report = check_run("gs://bucket/runs/lm1", HealthConfig(rpo_s=rpo_seconds("critical")))
    report.verdict        # Verdict.HEALTHY / WARNING / CRITICAL
    report.to_json()      # {"verdict", "findings": [{"rule", "severity", "step", ...}]}

Rules: `non_finite`, `loss_spike`, `loss_divergence` (`LossMonitor`, also used inside the
trainer), `stalled`, `checkpoint_stale`, `low_utilization`, `throughput_regression`,
`straggler` (see `rules`). Core code: no kfp.
"""

from __future__ import annotations

from vertex_patterns.health.check import check_run, follow_run
from vertex_patterns.health.config import RPO_TIERS, HealthConfig, rpo_seconds
from vertex_patterns.health.findings import Finding, HealthReport, Severity, Verdict, verdict_of
from vertex_patterns.health.loss import LossMonitor

__all__ = ["RPO_TIERS", "Finding", "HealthConfig", "HealthReport", "LossMonitor", "Severity",
           "Verdict", "check_run", "follow_run", "rpo_seconds", "verdict_of"]
