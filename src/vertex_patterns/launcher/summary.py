"""Numbers that sum a launch up: attempts, preemptions, regions used and the trainer's goodput
over every region it ran in (its ledgers live in each region's run directory)."""

from __future__ import annotations

import logging

from vertex_patterns.launcher.history import LaunchHistory
from vertex_patterns.launcher.spec import LaunchPolicy

log = logging.getLogger("vertex_patterns.launcher")


def launch_metrics(history: LaunchHistory, policy: LaunchPolicy) -> dict[str, float]:
    """``attempts``, ``preemptions``, ``stockouts``, ``regions_used``, ``succeeded`` (1/0) and,
    when the trainer wrote goodput ledgers, ``goodput_pct`` and ``steps_lost`` over all regions.
    """
    metrics: dict[str, float] = {
        "attempts": len(history.attempts),
        "preemptions": history.count("preempted"),
        "stockouts": history.count("stockout"),
        "regions_used": len(history.regions_used()),
        "succeeded": 1 if history.succeeded else 0,
    }
    try:
        from vertex_patterns.training.goodput_summary import read_attempts, summarize

        records = [r for region in history.regions_used()
                   for r in read_attempts(policy.run_dir(region))]
        if records:
            summary = summarize(records)
            metrics["goodput_pct"] = round(summary.goodput_pct, 3)
            metrics["steps_lost"] = summary.steps_lost
    except Exception as exc:  # goodput is a report, never a reason to fail the launch
        log.warning("goodput ledgers unreadable: %s", exc)
    return metrics
