"""Training metrics and goodput as Cloud Monitoring time series, from inside the trainer.

Off by default (`vertex-patterns train --publish-metrics PROJECT`), a no-op without
credentials, never fatal: every failure is logged and training goes on.

    publisher = MetricsPublisher.maybe("my-project", run="lm1", attempt=attempt_id,
                                       ledger=goodput_recorder)
    publisher.record({"loss": 2.1, "samples_per_s": 812.0})   # keeps the latest values
    publisher.close()                                          # last write, then stops

`record` only keeps the latest value of each metric; a background thread writes them all in
one batched `CreateTimeSeries` call (up to 200 series a call) every `interval_s`, never more
often than the API's minimum sampling period (one point per series per 5 s), so the loop never
waits for the API. Series: `custom.googleapis.com/vertex_patterns/<metric>` gauges with labels
`run` and `attempt` on the `global` resource, and `.../goodput_seconds` per ledger category
(ml-goodput-measurement's, label `category`) from the attempt's goodput ledger.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("vertex_patterns.monitoring")

METRIC_PREFIX = "custom.googleapis.com/vertex_patterns/"
MIN_SAMPLING_PERIOD_S = 5.0
"""Cloud Monitoring accepts at most one point per time series every 5 seconds."""
MAX_SERIES_PER_CALL = 200
PUBLISHED = ("loss", "grad_norm", "lr", "samples_per_s", "step_time_s", "step",
             "accelerator_utilization_pct")
"""Keys of a metrics-stream record that become gauges (others are ignored)."""


class MetricsPublisher:
    """Batches the latest values and writes them on a background thread.

    Args:
        project: The project whose Cloud Monitoring receives the series.
        client: A `monitoring_v3.MetricServiceClient`.
        run: The `run` label (the run directory's name).
        attempt: The `attempt` label.
        ledger: A `GoodputRecorder` whose attempt record is published as goodput series.
        interval_s: Seconds between writes (raised to the API's minimum sampling period).
        clock: Monotonic clock (tests pass a fake one).
    """

    def __init__(self, project: str, client: Any, *, run: str, attempt: str,
                 ledger: Any | None = None, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.project, self.client, self.ledger = project, client, ledger
        self.labels = {"run": run, "attempt": attempt}
        self.interval_s = max(interval_s, MIN_SAMPLING_PERIOD_S)
        self._clock = clock
        self._latest: dict[str, float] = {}
        self._lock = threading.Lock()
        self._last_write: float | None = None
        self._pending: threading.Thread | None = None
        self.writes = 0
        self.failures = 0

    @classmethod
    def maybe(cls, project: str | None, *, run: str, attempt: str, ledger: Any | None = None,
              interval_s: float = 60.0, client: Any | None = None) -> MetricsPublisher | None:
        """A publisher, or None when `project` is None or there are no credentials."""
        if project is None:
            return None
        if client is None:
            try:
                import google.auth
                from google.auth.exceptions import DefaultCredentialsError
                from google.cloud import monitoring_v3

                try:
                    google.auth.default()
                except DefaultCredentialsError:
                    log.info("no Google Cloud credentials: metrics are not published")
                    return None
                client = monitoring_v3.MetricServiceClient()
            except Exception as exc:  # telemetry must never stop training
                log.warning("metrics publishing off: %s", exc)
                return None
        return cls(project, client, run=run, attempt=attempt, ledger=ledger,
                   interval_s=interval_s)

    def record(self, values: Mapping[str, Any]) -> None:
        """Keeps the latest finite value of each published key; writes when due."""
        with self._lock:
            for key in PUBLISHED:
                value = values.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and \
                        math.isfinite(value):
                    self._latest[key] = float(value)
            now = self._clock()
            due = self._last_write is None or now - self._last_write >= self.interval_s
            busy = self._pending is not None and self._pending.is_alive()
            if not due or busy:
                return
            self._last_write = now
            batch = dict(self._latest)
        self._pending = threading.Thread(target=self._write, args=(batch,), daemon=True,
                                         name="metrics-publisher")
        self._pending.start()

    def close(self, timeout_s: float = 15.0) -> None:
        """Writes the latest values once more (after the sampling period) and returns."""
        if self._pending is not None:
            self._pending.join(timeout_s)
        with self._lock:
            batch = dict(self._latest)
            wait = 0.0 if self._last_write is None else \
                MIN_SAMPLING_PERIOD_S - (self._clock() - self._last_write)
        if wait > 0:
            time.sleep(min(wait, timeout_s))
        self._write(batch)

    def series(self, batch: Mapping[str, float]) -> list[Any]:
        """The `TimeSeries` to write for `batch` (and the ledger's categories)."""
        from google.api import metric_pb2
        from google.cloud import monitoring_v3

        now = time.time()
        interval = monitoring_v3.TimeInterval(
            end_time={"seconds": int(now), "nanos": int((now % 1) * 1e9)})

        def one(name: str, value: float, **labels: str) -> Any:
            return monitoring_v3.TimeSeries(
                metric={"type": METRIC_PREFIX + name, "labels": {**self.labels, **labels}},
                resource={"type": "global", "labels": {"project_id": self.project}},
                metric_kind=metric_pb2.MetricDescriptor.MetricKind.GAUGE,
                value_type=metric_pb2.MetricDescriptor.ValueType.DOUBLE,
                points=[{"interval": interval, "value": {"double_value": value}}])

        out = [one(name, value) for name, value in sorted(batch.items())]
        if self.ledger is not None:
            record = self.ledger.record
            categories = {
                "productive_s": record.step_time_s - getattr(record, "rewind_wasted_s", 0.0),
                "training_prep_s": record.training_prep_s,
                "checkpoint_restore_s": record.restore_s,
                "checkpoint_save_s": record.checkpoint_save_s,
                "data_loading_s": record.data_loading_s,
                "wasted_by_rewind_s": getattr(record, "rewind_wasted_s", 0.0)}
            out += [one("goodput_seconds", value, category=key)
                    for key, value in categories.items()]
        return out

    def _write(self, batch: Mapping[str, float]) -> None:
        try:
            series = self.series(batch)
            for i in range(0, len(series), MAX_SERIES_PER_CALL):
                self.client.create_time_series(name=f"projects/{self.project}",
                                               time_series=series[i:i + MAX_SERIES_PER_CALL])
            self.writes += 1
        except Exception as exc:  # telemetry must never stop training
            self.failures += 1
            log.warning("metrics not published to Cloud Monitoring: %s", exc)


def publisher_for(loop: Any) -> MetricsPublisher | None:
    """The trainer's publisher (`training.loop._Loop`): on the leader, with
    `--publish-metrics PROJECT`; labels from the run directory's name and the attempt."""
    project = getattr(loop.config, "publish_metrics", None)
    if project is None or not loop.cluster.is_leader:
        return None
    attempt = loop.metrics.attempt if loop.metrics is not None else "unknown"
    run = loop.config.run_dir.rstrip("/").rsplit("/", 1)[-1]
    return MetricsPublisher.maybe(project, run=run, attempt=attempt, ledger=loop.ledger)
