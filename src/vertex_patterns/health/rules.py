"""The health rules over a run's metrics stream (a list of records, oldest first).

Step records are those with a `step` and a `loss` and no `event`; the trainer also writes
events (`checkpoint`, `rewind`, `incident`) into the same stream. Every rule here needs a
count of consecutive records or a duration before it fires (see `HealthConfig`).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from vertex_patterns.health.config import HealthConfig
from vertex_patterns.health.findings import Finding, Severity
from vertex_patterns.health.loss import LossMonitor

Record = Mapping[str, Any]


def is_step(record: Record) -> bool:
    """A per-step record (not an event)."""
    return "event" not in record and "step" in record and "loss" in record


def as_float(value: Any) -> float | None:
    """A number from a record field; NaN/inf come back from their JSON strings; else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def loss_findings(records: Iterable[Record], config: HealthConfig) -> list[Finding]:
    """`non_finite`, `loss_spike` and `loss_divergence` over the stream.

    A `rewind` event resolves the loss findings it answered (they become info, with the
    rewind as their action); an `incident` event names the action taken on its rule.
    """
    monitor = LossMonitor(config)
    findings: list[Finding] = []
    open_from = 0  # findings before this index were answered by a rewind or an incident
    for record in records:
        event = record.get("event")
        if event == "rewind":
            action = (f"rewound to step {record.get('to_step')}, skipped "
                      f"{record.get('skipped_batches')} batch(es)")
            for i in range(open_from, len(findings)):
                findings[i] = replace(findings[i], severity=Severity.INFO, action=action)
            open_from = len(findings)
            monitor.reset_episode()
        elif event == "incident":
            action = str(record.get("action", "stopped"))
            rule = record.get("rule")
            matched = False
            for i in range(open_from, len(findings)):
                if findings[i].rule == rule:
                    findings[i] = replace(findings[i], action=action)
                    matched = True
            if not matched:
                findings.append(_event_finding(record, action))
            open_from = len(findings)
        elif event == "hang":
            findings.append(_event_finding({**record, "rule": "hang"},
                                           str(record.get("action", "stacks dumped, exit 4"))))
        elif is_step(record):
            loss = as_float(record.get("loss"))
            if loss is None:
                continue
            findings += monitor.observe(int(record["step"]), loss,
                                        as_float(record.get("grad_norm")))
    return findings


def _event_finding(record: Record, action: str) -> Finding:
    try:
        severity = Severity(record.get("severity", "critical"))
    except ValueError:
        severity = Severity.CRITICAL
    evidence = {k: v for k, v in record.get("evidence", {}).items()} \
        if isinstance(record.get("evidence"), Mapping) else {}
    step = record.get("step")
    return Finding(str(record.get("rule", "incident")), severity,
                   step if isinstance(step, int) else None, evidence, action)


def stall_finding(steps: Sequence[Record], config: HealthConfig, now: float
                  ) -> Finding | None:
    """`stalled` (critical): no step record for max(floor, factor x median step interval)."""
    times = [t for t in (as_float(r.get("time")) for r in steps) if t is not None]
    if not times:
        return None
    gaps = [b - a for a, b in itertools.pairwise(times) if b >= a]
    typical = statistics.median(gaps) if gaps else 0.0
    limit = max(config.stall_floor_s, config.stall_factor * typical)
    idle = now - times[-1]
    if idle <= limit:
        return None
    return Finding("stalled", Severity.CRITICAL, int(steps[-1]["step"]), {
        "seconds_since_last_step": round(idle, 1), "limit_s": round(limit, 1),
        "median_step_interval_s": round(typical, 4)})


def staleness_finding(checkpoint_times: Mapping[int, float], first_time: float | None,
                      config: HealthConfig, reference: float) -> Finding | None:
    """`checkpoint_stale`: the newest committed checkpoint is older than the RPO at
    `reference` (now for a running run, the last record for a finished one)."""
    if checkpoint_times:
        newest_step = max(checkpoint_times, key=lambda s: checkpoint_times[s])
        since, step = checkpoint_times[newest_step], newest_step
    elif first_time is not None:
        since, step = first_time, None  # training started, nothing ever committed
    else:
        return None
    age = reference - since
    if age > config.rpo_s:
        severity = Severity.CRITICAL
    elif age > config.rpo_s * config.rpo_warning_fraction:
        severity = Severity.WARNING
    else:
        return None
    return Finding("checkpoint_stale", severity, step, {
        "checkpoint_age_s": round(age, 1), "rpo_s": config.rpo_s,
        "newest_checkpoint_step": step})


def _longest_run(values: Sequence[tuple[int, float]], bad: Any) -> list[tuple[int, float]]:
    best: list[tuple[int, float]] = []
    run: list[tuple[int, float]] = []
    for step, value in values:
        if bad(value):
            run.append((step, value))
            if len(run) > len(best):
                best = list(run)
        else:
            run = []
    return best


def _series(steps: Sequence[Record], key: str) -> list[tuple[int, float]]:
    out = []
    for r in steps:
        value = as_float(r.get(key))
        if value is not None and math.isfinite(value):
            out.append((int(r["step"]), value))
    return out


def utilization_finding(steps: Sequence[Record], config: HealthConfig) -> Finding | None:
    """`low_utilization` (warning): accelerator utilisation below the threshold for
    `utilization_min_steps` step records in a row."""
    run = _longest_run(_series(steps, "accelerator_utilization_pct"),
                       lambda v: v < config.utilization_min_pct)
    if len(run) < config.utilization_min_steps:
        return None
    return Finding("low_utilization", Severity.WARNING, run[-1][0], {
        "first_step": run[0][0], "steps": len(run),
        "median_pct": statistics.median(v for _, v in run),
        "threshold_pct": config.utilization_min_pct})


def throughput_finding(steps: Sequence[Record], config: HealthConfig) -> Finding | None:
    """`throughput_regression` (warning): samples/s below a fraction of the run's own
    baseline for `throughput_min_steps` step records in a row."""
    series = _series(steps, "samples_per_s")
    start = config.throughput_warmup_steps
    baseline_part = series[start:start + config.throughput_window]
    if len(baseline_part) < config.throughput_window:
        return None
    baseline = statistics.median(v for _, v in baseline_part)
    run = _longest_run(series[start + config.throughput_window:],
                       lambda v: v < config.throughput_fraction * baseline)
    if len(run) < config.throughput_min_steps:
        return None
    return Finding("throughput_regression", Severity.WARNING, run[-1][0], {
        "first_step": run[0][0], "steps": len(run),
        "median_samples_per_s": statistics.median(v for _, v in run),
        "baseline_samples_per_s": baseline, "fraction": config.throughput_fraction})


def straggler_finding(steps: Sequence[Record], config: HealthConfig) -> Finding | None:
    """`straggler` (warning): over the last `straggler_min_steps` records carrying
    `rank_step_time_s` (one step time per rank), one rank's median is `straggler_factor`
    times the median of the others'."""
    rows = [(int(r["step"]), r["rank_step_time_s"]) for r in steps
            if isinstance(r.get("rank_step_time_s"), list) and len(r["rank_step_time_s"]) > 1]
    rows = rows[-config.straggler_min_steps:]
    if len(rows) < config.straggler_min_steps:
        return None
    world = min(len(times) for _, times in rows)
    medians = [statistics.median(float(times[rank]) for _, times in rows)
               for rank in range(world)]
    slowest = max(range(world), key=lambda rank: medians[rank])
    others = statistics.median(m for rank, m in enumerate(medians) if rank != slowest)
    if others <= 0 or medians[slowest] <= config.straggler_factor * others:
        return None
    return Finding("straggler", Severity.WARNING, rows[-1][0], {
        "rank": slowest, "median_step_time_s": medians[slowest],
        "others_median_step_time_s": others, "steps": len(rows),
        "factor": config.straggler_factor})


def evaluate(records: Sequence[Record], config: HealthConfig, *, now: float,
             checkpoint_times: Mapping[int, float], completed: bool) -> list[Finding]:
    """Every rule over one run's stream.

    Args:
        records: The metrics stream, oldest first.
        config: The thresholds.
        now: The current unix time.
        checkpoint_times: Committed checkpoint step -> commit time (unix seconds).
        completed: The run has finished (no stall, staleness judged at its end).

    Returns:
        The findings, loss rules first.
    """
    steps = [r for r in records if is_step(r)]
    findings = loss_findings(records, config)
    times = [t for t in (as_float(r.get("time")) for r in steps) if t is not None]
    if not completed:
        stall = stall_finding(steps, config, now)
        if stall is not None:
            findings.append(stall)
    reference = (times[-1] if times else now) if completed else now
    for finding in (staleness_finding(checkpoint_times, times[0] if times else None, config,
                                      reference),
                    utilization_finding(steps, config), throughput_finding(steps, config),
                    straggler_finding(steps, config)):
        if finding is not None:
            findings.append(finding)
    return findings
