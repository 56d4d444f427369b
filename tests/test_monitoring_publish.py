"""Goodput and training metrics as Cloud Monitoring time series: batched, never more often
than the API's sampling period, a no-op without credentials, never fatal to training."""

from __future__ import annotations

import grpc
import pytest

from vertex_patterns.emulators.monitoring import MonitoringEmulator
from vertex_patterns.monitoring.publish import METRIC_PREFIX, MetricsPublisher
from vertex_patterns.training.goodput import GoodputRecorder


@pytest.fixture(scope="module")
def emulator():
    with MonitoringEmulator() as em:
        yield em


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def points(emulator, name: str, **labels: str) -> list[float]:
    out = []
    for (metric, metric_labels, _, _), values in emulator.resources("time_series").items():
        if metric == METRIC_PREFIX + name and all(
                dict(metric_labels).get(k) == v for k, v in labels.items()):
            out += [value for _, value in values]
    return out


class TestPublisher:
    """Latest values only, one batched call per interval, goodput categories included; the
    emulator enforces the 5 s sampling period as Cloud Monitoring does."""

    def test_batched_and_rate_limited(self, emulator, tmp_path):
        ledger = GoodputRecorder(str(tmp_path / "run"), attempt="a1")
        ledger.step(1, 0.25)
        clock = FakeClock()
        publisher = MetricsPublisher("p-pub", emulator.metric_client(), run="lm1",
                                     attempt="a1", ledger=ledger, interval_s=1.0, clock=clock)
        assert publisher.interval_s == 5.0  # raised to the API's minimum sampling period
        before = emulator.writes["time_series"]
        for step in range(1, 101):  # 100 steps within one interval: one write
            publisher.record({"step": step, "loss": 3.0 - step / 100, "samples_per_s": 800.0,
                              "sample_ids": [1, 2], "event": "x"})
        assert publisher._pending is not None
        publisher._pending.join(10)
        assert emulator.writes["time_series"] == before + 1
        assert points(emulator, "loss", run="lm1") == [pytest.approx(2.99)]
        assert points(emulator, "goodput_seconds", run="lm1", category="productive_s") == \
            [0.25]
        publisher.close()  # waits out the sampling period, then writes the latest values
        assert points(emulator, "loss", run="lm1") == [pytest.approx(2.99), 2.0]
        assert publisher.failures == 0

    def test_failures_are_never_fatal(self, emulator):
        dead = MetricsPublisher("p-pub", emulator.metric_client(), run="r", attempt="a",
                                interval_s=5.0)
        dead.client = type(emulator.metric_client())(
            transport=type(emulator.metric_client().transport)(
                channel=grpc.insecure_channel("127.0.0.1:9")))  # nothing listens there
        dead.record({"loss": 1.0})
        dead.close(timeout_s=0.1)
        assert dead.failures >= 1 and dead.writes == 0

    def test_off_by_default_and_without_credentials(self, monkeypatch, tmp_path):
        assert MetricsPublisher.maybe(None, run="r", attempt="a") is None
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
        assert MetricsPublisher.maybe("p-pub", run="r", attempt="a") is None
