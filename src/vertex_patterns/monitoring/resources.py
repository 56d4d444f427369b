"""The monitoring resources as the APIs' own JSON: alert policies, log-based metrics, one
dashboard, one budget.

Log-based metrics turn the trainer's Cloud Logging structured lines into time series, so the
alerts need no metrics client inside the training loop:

| log metric | counts | from the trainer's log line |
|---|---|---|
| `vertex_patterns_loss` (distribution) | step losses | `step N/M loss L` (`jsonPayload.loss`) |
| `vertex_patterns_progress` | progress lines | the same lines (every `--log-every-steps`) |
| `vertex_patterns_checkpoints` | committed checkpoints | `checkpoint step N committed ...` |
| `vertex_patterns_preemptions` | preemption notices | `jsonPayload.event="preempted"` |
| `vertex_patterns_rewinds` | rewinds after a spike | `jsonPayload.event="rewind"` |
| `vertex_patterns_attempts` | attempts started | `resume` events and fresh starts |
| `vertex_patterns_failures` | failed attempts | Error Reporting events and health incidents |
"""

from __future__ import annotations

from typing import Any

from vertex_patterns.health.config import rpo_seconds
from vertex_patterns.monitoring.config import PREFIX, MonitoringConfig
from vertex_patterns.training.logs import REPORTED_ERROR_EVENT

JOB = 'resource.type="ml_job"'
"""Vertex AI CustomJob logs are written against the `ml_job` monitored resource."""
USER = "logging.googleapis.com/user/"
GOODPUT_METRIC = "custom.googleapis.com/vertex_patterns/goodput_seconds"
"""Published by the trainer when asked (`monitoring.publish`), one series per category."""
UTILIZATION_METRIC = "ml.googleapis.com/training/accelerator/utilization"
_ABSENT_MAX_S = 84600
"""Metric-absence conditions accept at most 23.5 h; the research tier's 24 h is capped."""

_COUNTERS: dict[str, tuple[str, str]] = {
    "vertex_patterns_progress": (
        "Training progress lines (one every --log-every-steps steps).",
        f"{JOB} AND jsonPayload.step:* AND jsonPayload.loss:*"),
    "vertex_patterns_checkpoints": (
        "Committed checkpoints.",
        f'{JOB} AND jsonPayload.message=~"^checkpoint step [0-9]+ committed"'),
    "vertex_patterns_preemptions": (
        "Preemption notices (SIGTERM or the metadata server).",
        f'{JOB} AND jsonPayload.event="preempted"'),
    "vertex_patterns_rewinds": (
        "Automatic rewinds after a loss spike or a non-finite loss.",
        f'{JOB} AND jsonPayload.event="rewind"'),
    "vertex_patterns_attempts": (
        "Training attempts started (fresh or resumed).",
        f'{JOB} AND (jsonPayload.event="resume" OR '
        f'jsonPayload.message=~"^no checkpoint in .*: starting from step 0")'),
    "vertex_patterns_failures": (
        "Attempts that failed: uncaught errors and health incidents (exit 3).",
        f'{JOB} AND (jsonPayload."@type"="{REPORTED_ERROR_EVENT}" OR '
        f'jsonPayload.event="incident")'),
}


def log_metrics() -> list[dict[str, Any]]:
    """`logging_v2` LogMetric bodies."""
    loss = {"name": "vertex_patterns_loss",
            "description": "Training loss from the trainer's progress lines.",
            "filter": f"{JOB} AND jsonPayload.loss:*",
            "metricDescriptor": {"metricKind": "DELTA", "valueType": "DISTRIBUTION",
                                 "unit": "1"},
            "valueExtractor": "EXTRACT(jsonPayload.loss)",
            "bucketOptions": {"exponentialBuckets": {"numFiniteBuckets": 64,
                                                     "growthFactor": 1.25, "scale": 0.001}}}
    counters = [{"name": name, "description": description, "filter": filter_,
                 "metricDescriptor": {"metricKind": "DELTA", "valueType": "INT64",
                                      "unit": "1"}}
                for name, (description, filter_) in _COUNTERS.items()]
    return [loss, *counters]


def _promql(name: str) -> str:
    return f"logging_googleapis_com:user_{name}"


def _policy(config: MonitoringConfig, title: str, doc: str, condition: dict[str, Any],
            **strategy: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "displayName": f"{PREFIX}: {title}",
        "documentation": {"content": doc, "mimeType": "text/markdown"},
        "combiner": "OR",
        "conditions": [{"displayName": title, **condition}],
        "alertStrategy": {"autoClose": "86400s", **strategy},
        "userLabels": {"managed-by": PREFIX},
        "enabled": True,
    }
    if config.notification_channels:
        body["notificationChannels"] = list(config.notification_channels)
    return body


def alert_policies(config: MonitoringConfig) -> list[dict[str, Any]]:
    """`monitoring_v3.AlertPolicy` bodies."""
    absent_s = min(int(rpo_seconds(config.rpo)), _ABSENT_MAX_S)
    return [
        _policy(config, "training job failure rate above the 99.5% SLO",
                "More than 0.5% of training attempts failed over the last day (uncaught "
                "errors or health incidents; preemptions are not failures). Read the Error "
                "Reporting group and `vertex-patterns health RUN_DIR`.",
                {"conditionPrometheusQueryLanguage": {
                    "query": f"sum(increase({_promql('vertex_patterns_failures')}[1d])) / "
                             f"sum(increase({_promql('vertex_patterns_attempts')}[1d])) "
                             "> 0.005",
                    "duration": "0s", "evaluationInterval": "300s"}}),
        _policy(config, "loss divergence",
                "The trainer reported a loss incident it could not fix by rewinding (sustained "
                "divergence, a spike or non-finite loss that kept coming back) and stopped "
                "with exit 3.",
                {"conditionMatchedLog": {
                    "filter": f'{JOB} AND jsonPayload.event="incident" AND jsonPayload.rule=('
                              '"loss_divergence" OR "loss_spike" OR "non_finite")'}},
                notificationRateLimit={"period": "300s"}),
        _policy(config, f"checkpoint staleness ({config.rpo} RPO)",
                f"No checkpoint was committed for the {config.rpo} tier's recovery-point "
                "objective: a disaster now would lose more than the RPO.",
                {"conditionAbsent": {
                    "filter": f'metric.type="{USER}vertex_patterns_checkpoints" AND '
                              'resource.type="ml_job"',
                    "duration": f"{absent_s}s",
                    "aggregations": [{"alignmentPeriod": "300s",
                                      "perSeriesAligner": "ALIGN_SUM"}]}}),
        _policy(config, "low accelerator utilisation",
                f"Accelerator utilisation stayed below {config.utilization_min:.0%} for "
                f"{config.utilization_minutes} min: the input pipeline or host is starving "
                "the accelerators you pay for.",
                {"conditionThreshold": {
                    "filter": f'metric.type="{UTILIZATION_METRIC}" AND '
                              'resource.type="cloudml_job"',
                    "comparison": "COMPARISON_LT", "thresholdValue": config.utilization_min,
                    "duration": f"{config.utilization_minutes * 60}s",
                    "aggregations": [{"alignmentPeriod": "300s",
                                      "perSeriesAligner": "ALIGN_MEAN"}]}}),
        _policy(config, "no training progress (hang)",
                f"No training progress line was logged for {config.hang_minutes} min: the "
                "job is hung or stalled (the trainer's own watchdog exits 4 on a hang).",
                {"conditionAbsent": {
                    "filter": f'metric.type="{USER}vertex_patterns_progress" AND '
                              'resource.type="ml_job"',
                    "duration": f"{config.hang_minutes * 60}s",
                    "aggregations": [{"alignmentPeriod": "300s",
                                      "perSeriesAligner": "ALIGN_SUM"}]}}),
        _policy(config, "cost anomaly (runaway restarts)",
                f"More than {config.attempts_per_hour_max} training attempts started in an "
                "hour: a restart loop is burning accelerator hours. The billing budget "
                "covers spend itself.",
                {"conditionPrometheusQueryLanguage": {
                    "query": f"sum(increase({_promql('vertex_patterns_attempts')}[1h])) > "
                             f"{config.attempts_per_hour_max}",
                    "duration": "0s", "evaluationInterval": "300s"}}),
    ]


def _chart(title: str, query: dict[str, Any], x: int, y: int) -> dict[str, Any]:
    return {"xPos": x, "yPos": y, "width": 24, "height": 16,
            "widget": {"title": title, "xyChart": {
                "dataSets": [{"timeSeriesQuery": query, "plotType": "LINE"}]}}}


def _filter(metric: str, aligner: str, reducer: str | None = None) -> dict[str, Any]:
    aggregation: dict[str, Any] = {"alignmentPeriod": "60s", "perSeriesAligner": aligner}
    if reducer is not None:
        aggregation["crossSeriesReducer"] = reducer
    return {"timeSeriesFilter": {"filter": f'metric.type="{metric}"',
                                 "aggregation": aggregation}}


def dashboard(config: MonitoringConfig) -> dict[str, Any]:
    """The `monitoring_dashboard_v1.Dashboard` body."""
    checkpoints = _promql("vertex_patterns_checkpoints")
    tiles = [
        _chart("Accelerator utilisation", _filter(UTILIZATION_METRIC, "ALIGN_MEAN"), 0, 0),
        _chart("Loss (median of logged steps)",
               _filter(f"{USER}vertex_patterns_loss", "ALIGN_DELTA",
                       "REDUCE_PERCENTILE_50"), 24, 0),
        _chart("Throughput (progress lines per second)",
               _filter(f"{USER}vertex_patterns_progress", "ALIGN_RATE"), 0, 16),
        _chart("Checkpoint age (s)",
               {"prometheusQuery": f"time() - max(timestamp(increase({checkpoints}[5m]) > 0))"},
               24, 16),
        _chart("Preemptions and rewinds",
               {"prometheusQuery": "sum(increase("
                f"{_promql('vertex_patterns_preemptions')}[1h])) or sum(increase("
                f"{_promql('vertex_patterns_rewinds')}[1h]))"}, 0, 32),
        _chart("Goodput and badput (s, by category)",
               _filter(GOODPUT_METRIC, "ALIGN_MAX"), 24, 32),
    ]
    return {"displayName": f"{PREFIX}: training health ({config.project})",
            "mosaicLayout": {"columns": 48, "tiles": tiles},
            "labels": {"managed-by-vertex-patterns": ""}}


def budget(config: MonitoringConfig) -> dict[str, Any] | None:
    """The `budgets_v1.Budget` body (None without a billing account)."""
    if config.billing_account is None:
        return None
    return {"displayName": f"{PREFIX}: {config.project} monthly",
            "budgetFilter": {"projects": [f"projects/{config.project}"],
                             "calendarPeriod": "MONTH"},
            "amount": {"specifiedAmount": {"currencyCode": config.currency,
                                           "units": str(config.budget_amount)}},
            "thresholdRules": [{"thresholdPercent": p, "spendBasis": "CURRENT_SPEND"}
                               for p in (0.5, 0.75, 0.9, 1.0)],
            "notificationsRule": {
                "pubsubTopic": f"projects/{config.project}/topics/{config.budget_topic}",
                "schemaVersion": "1.0"}}
