"""Check a run directory's health once, or follow it until it ends.

    report = check_run("gs://bucket/runs/lm1", HealthConfig(rpo_s=rpo_seconds("critical")))
    print(report.verdict, report.to_table())

Reads `<run-dir>/metrics/` (the trainer's stream), the committed checkpoints' manifests under
`<run-dir>/checkpoints/` (their commit times) and `<run-dir>/model/config.json` (written last by
a completed run). Read-only.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from vertex_patterns.checkpoint.io import list_committed
from vertex_patterns.errors import ConfigError, StorageError
from vertex_patterns.health.config import HealthConfig
from vertex_patterns.health.findings import HealthReport, Verdict
from vertex_patterns.health.rules import evaluate, is_step
from vertex_patterns.storage import Storage
from vertex_patterns.storage.uri import parse_uri
from vertex_patterns.training.metrics import read_metrics

log = logging.getLogger("vertex_patterns.health")


def _run_dir(store: Storage, uri: str) -> str:
    location = parse_uri(uri)
    if location.is_gcs:
        if not store.bucket_exists(uri):
            raise ConfigError(f"run dir bucket gs://{location.bucket} does not exist: give the "
                              "trainer's --run-dir")
    elif not os.path.isdir(location.path):
        raise ConfigError(f"run dir {location} does not exist: give the trainer's --run-dir")
    return str(location).rstrip("/")


def check_run(run_dir: str, config: HealthConfig | None = None, *, now: float | None = None,
              storage: Storage | None = None) -> HealthReport:
    """Evaluates every rule over a run directory as it stands now.

    Args:
        run_dir: The trainer's `--run-dir` (`gs://...` or local).
        config: Rule thresholds (defaults: `HealthConfig()`).
        now: The current unix time (tests pass a fixed one).
        storage: The storage facade (a default one when None).

    Returns:
        The report; its `verdict` is the worst finding.

    Raises:
        ConfigError: The run directory (or its bucket) does not exist.
    """
    store = storage or Storage()
    config = config or HealthConfig()
    base = _run_dir(store, run_dir)
    records = read_metrics(f"{base}/metrics", store)
    try:
        committed = list_committed(store, f"{base}/checkpoints")
    except (StorageError, OSError) as exc:
        log.warning("cannot list checkpoints under %s: %s", base, exc)
        committed = {}
    completed = store.exists(f"{base}/model/config.json")
    findings = evaluate(records, config, now=time.time() if now is None else now,
                        checkpoint_times={s: m.wall_time for s, m in committed.items()},
                        completed=completed)
    steps = [r for r in records if is_step(r)]
    return HealthReport(run_dir=base, findings=tuple(findings), steps=len(steps),
                        last_step=int(steps[-1]["step"]) if steps else None,
                        completed=completed)


def follow_run(run_dir: str, config: HealthConfig | None = None, *, poll_s: float = 30.0,
               timeout_s: float | None = None, storage: Storage | None = None,
               on_report: Callable[[HealthReport], None] | None = None,
               sleep: Callable[[float], None] = time.sleep) -> HealthReport:
    """Checks every `poll_s` until the run completes, turns critical, or `timeout_s` passes.

    Args:
        run_dir: The trainer's `--run-dir`.
        config: Rule thresholds.
        poll_s: Seconds between checks.
        timeout_s: Stop following after this long (None: until the run ends).
        storage: The storage facade.
        on_report: Called with each intermediate report (e.g. to print progress).
        sleep: How to wait (tests pass a fake).

    Returns:
        The last report.

    Raises:
        ConfigError: A bad run directory or a non-positive interval.
    """
    if poll_s <= 0 or (timeout_s is not None and timeout_s < 0):
        raise ConfigError("--poll-seconds must be > 0 and --timeout-seconds >= 0")
    started = time.monotonic()
    while True:
        report = check_run(run_dir, config, storage=storage)
        if report.completed or report.verdict == Verdict.CRITICAL:
            return report
        if timeout_s is not None and time.monotonic() - started >= timeout_s:
            return report
        if on_report is not None:
            on_report(report)
        sleep(poll_s)
