"""Each health rule over synthetic metrics streams: it fires on the fault it names, and one
noisy point (or a value flapping around the threshold) never makes it act."""

from __future__ import annotations

import math
import random

import pytest

from vertex_patterns.errors import ConfigError
from vertex_patterns.health import HealthConfig, LossMonitor, Severity, Verdict, verdict_of
from vertex_patterns.health.config import rpo_seconds
from vertex_patterns.health.rules import evaluate, loss_findings

T0 = 1_800_000_000.0


def stream(losses, *, start_time=T0, interval=1.0, **extra_series):
    """Step records 1..n with `loss`, one per `interval` seconds, plus any other series."""
    records = []
    for i, loss in enumerate(losses):
        record = {"step": i + 1, "loss": loss, "grad_norm": 1.0,
                  "time": start_time + i * interval}
        for key, values in extra_series.items():
            record[key] = values[i]
        records.append(record)
    return records


def noisy_decay(n, seed=0):
    """A loss curve that falls from 4 to about 2 with 5% noise."""
    rng = random.Random(seed)
    return [(2 + 2 * math.exp(-i / 200)) * (1 + rng.uniform(-0.05, 0.05)) for i in range(n)]


def rules(findings):
    return [f.rule for f in findings]


def check(records, config=None, *, now=None, checkpoints=None, completed=False):
    now = records[-1]["time"] + 1 if now is None else now
    return evaluate(records, config or HealthConfig(), now=now,
                    checkpoint_times=checkpoints if checkpoints is not None
                    else {len(records): now}, completed=completed)


class TestHealthyStream:
    """A normal run produces no findings and a healthy verdict."""

    def test_clean_decay_is_healthy(self):
        findings = check(stream(noisy_decay(600)))
        assert findings == []
        assert verdict_of(findings) == Verdict.HEALTHY


class TestNonFinite:
    """A NaN loss is critical at once; a non-finite gradient norm only when it persists."""

    def test_nan_loss_is_critical_with_its_step(self):
        losses = noisy_decay(100)
        losses[60] = float("nan")
        findings = loss_findings(stream(losses), HealthConfig())
        assert rules(findings) == ["non_finite"]
        assert findings[0].severity == Severity.CRITICAL
        assert findings[0].step == 61
        assert findings[0].evidence["value"] == "loss"

    def test_nan_as_written_by_the_metrics_stream(self):
        # to_json_line writes NaN as the string "nan"; the rule must read it back.
        records = stream(noisy_decay(30))
        records[10]["loss"] = "nan"
        assert rules(loss_findings(records, HealthConfig())) == ["non_finite"]

    def test_one_overflowing_grad_norm_is_not_acted_on(self):
        records = stream(noisy_decay(50))
        records[20]["grad_norm"] = float("inf")
        assert loss_findings(records, HealthConfig()) == []

    def test_grad_norm_inf_three_times_in_a_row_is_critical(self):
        records = stream(noisy_decay(50))
        for i in (20, 21, 22):
            records[i]["grad_norm"] = "inf"
        findings = loss_findings(records, HealthConfig())
        assert rules(findings) == ["non_finite"]
        assert findings[0].step == 23


class TestSpikeAgainstDrift:
    """One high point never acts; a persisting spike is critical; a slow drift is
    divergence, not a spike, and one spike is not divergence."""

    def test_single_spike_is_ignored(self):
        losses = noisy_decay(300)
        losses[150] = 50.0
        assert check(stream(losses)) == []

    def test_persisting_spike_is_critical(self):
        losses = noisy_decay(300)
        for i in range(150, 155):
            losses[i] = 30.0
        findings = check(stream(losses))
        assert rules(findings) == ["loss_spike"]
        spike = findings[0]
        assert spike.severity == Severity.CRITICAL
        assert spike.evidence["first_step"] == 151 and spike.step == 152
        assert 2.5 < spike.evidence["median"] < 3.5

    def test_slow_drift_is_divergence_not_a_spike(self):
        losses = noisy_decay(300) + [2.0 * (1 + i / 100) for i in range(300)]
        findings = check(stream(losses))
        assert rules(findings) == ["loss_divergence"]
        assert findings[0].evidence["steps"] == HealthConfig().divergence_min_steps

    def test_flapping_around_the_spike_threshold_never_acts(self):
        # Every other loss is just above 3x the median: never two in a row.
        losses = noisy_decay(200, seed=1)
        for i in range(100, 200, 2):
            losses[i] = 3.3 * 2.5
        assert "loss_spike" not in rules(check(stream(losses)))


class TestStall:
    """No new step for max(floor, factor x the run's own step interval) is critical."""

    def test_stall_after_the_learned_limit(self):
        records = stream(noisy_decay(100), interval=30.0)  # limit: 20 x 30 s = 600 s
        last = records[-1]["time"]
        assert "stalled" not in rules(check(records, now=last + 500))
        findings = [f for f in check(records, now=last + 700) if f.rule == "stalled"]
        assert findings and findings[0].severity == Severity.CRITICAL
        assert findings[0].evidence["limit_s"] == 600.0

    def test_floor_protects_fast_runs(self):
        records = stream(noisy_decay(100), interval=0.01)
        assert "stalled" not in rules(check(records, now=records[-1]["time"] + 200))
        assert "stalled" in rules(check(records, now=records[-1]["time"] + 301))

    def test_completed_run_is_not_stalled(self):
        records = stream(noisy_decay(100))
        assert check(records, now=records[-1]["time"] + 10_000, completed=True,
                     checkpoints={100: records[-1]["time"]}) == []


class TestCheckpointStaleness:
    """The newest committed checkpoint against the RPO: warning near it, critical past it."""

    def test_tiers(self):
        assert rpo_seconds("critical") == 900
        assert rpo_seconds("production") == 3600
        assert rpo_seconds("research") == 86400

    def test_stale_checkpoint_against_the_critical_tier(self):
        records = stream(noisy_decay(2000), interval=1.0)
        now = records[-1]["time"] + 1
        config = HealthConfig(rpo_s=rpo_seconds("critical"))
        fresh = check(records, config, now=now, checkpoints={1900: now - 100})
        assert "checkpoint_stale" not in rules(fresh)
        near = [f for f in check(records, config, now=now, checkpoints={1200: now - 800})
                if f.rule == "checkpoint_stale"]
        assert near[0].severity == Severity.WARNING
        stale = [f for f in check(records, config, now=now, checkpoints={1000: now - 1000})
                 if f.rule == "checkpoint_stale"]
        assert stale[0].severity == Severity.CRITICAL
        assert stale[0].step == 1000 and stale[0].evidence["rpo_s"] == 900

    def test_never_checkpointed_counts_from_the_first_step(self):
        records = stream(noisy_decay(2000), interval=1.0)
        config = HealthConfig(rpo_s=rpo_seconds("critical"))
        stale = [f for f in check(records, config, checkpoints={}) if f.rule == "checkpoint_stale"]
        assert stale[0].severity == Severity.CRITICAL and stale[0].step is None


class TestUtilizationAndThroughput:
    """Low utilisation and throughput regressions need a sustained run of bad records."""

    def test_sustained_low_utilization_warns(self):
        util = [90.0] * 100 + [30.0] * 60
        findings = check(stream(noisy_decay(160), accelerator_utilization_pct=util))
        assert rules(findings) == ["low_utilization"]
        assert findings[0].severity == Severity.WARNING
        assert findings[0].evidence["first_step"] == 101

    def test_flapping_around_the_threshold_does_not_warn(self):
        util = [45.0 if i % 2 else 55.0 for i in range(300)]
        assert check(stream(noisy_decay(300), accelerator_utilization_pct=util)) == []

    def test_throughput_regression_against_the_runs_own_baseline(self):
        rate = [100.0] * 100 + [50.0] * 60
        findings = check(stream(noisy_decay(160), samples_per_s=rate))
        assert rules(findings) == ["throughput_regression"]
        assert findings[0].evidence["baseline_samples_per_s"] == 100.0

    def test_slow_checkpoint_steps_are_not_a_regression(self):
        rate = [100.0 if i % 10 else 5.0 for i in range(300)]
        assert check(stream(noisy_decay(300), samples_per_s=rate)) == []


class TestStraggler:
    """One rank whose step time is well above the others' is a straggler."""

    def test_one_slow_rank(self):
        times = [[0.10, 0.11, 0.25, 0.10] for _ in range(40)]
        findings = check(stream(noisy_decay(40), rank_step_time_s=times))
        assert rules(findings) == ["straggler"]
        assert findings[0].evidence["rank"] == 2

    def test_even_ranks_are_fine(self):
        rng = random.Random(3)
        times = [[0.1 + rng.uniform(0, 0.02) for _ in range(4)] for _ in range(40)]
        assert check(stream(noisy_decay(40), rank_step_time_s=times)) == []


class TestEvents:
    """Rewind events resolve the loss findings they answered; incidents carry their action."""

    def test_rewind_resolves_the_spike(self):
        losses = noisy_decay(300)
        records = stream([*losses[:200], 30.0, 30.0])
        records.append({"event": "rewind", "step": 202, "to_step": 190,
                        "skipped_batches": 12})
        records += [{**r, "step": r["step"] + 190} for r in stream(losses[190:260])]
        findings = check(records)
        assert rules(findings) == ["loss_spike"]
        assert findings[0].severity == Severity.INFO
        assert findings[0].action == "rewound to step 190, skipped 12 batch(es)"
        assert verdict_of(findings) == Verdict.HEALTHY

    def test_incident_names_its_action(self):
        records = stream([*noisy_decay(50), float("nan")])
        records.append({"event": "incident", "rule": "non_finite", "severity": "critical",
                        "action": "stopped (exit 3)", "step": 51})
        findings = loss_findings(records, HealthConfig())
        assert [(f.rule, f.action) for f in findings] == [("non_finite", "stopped (exit 3)")]


class TestLossMonitorIncremental:
    """The trainer's monitor fires once per episode and re-arms after `reset_episode`."""

    def test_once_per_episode(self):
        monitor = LossMonitor(HealthConfig(nonfinite_loss_count=1))
        fired = [monitor.observe(i, float("nan")) for i in range(3)]
        assert [len(f) for f in fired] == [1, 0, 0]
        monitor.reset_episode()
        assert len(monitor.observe(3, float("nan"))) == 1


class TestBadConfig:
    """Impossible thresholds and unknown tiers are one-line ConfigErrors."""

    @pytest.mark.parametrize("kwargs", [{"spike_window": 0}, {"stall_floor_s": -1},
                                        {"spike_factor": 1.0}, {"rpo_s": 0},
                                        {"throughput_fraction": 1.5}])
    def test_rejected(self, kwargs):
        with pytest.raises(ConfigError):
            HealthConfig(**kwargs)

    def test_unknown_tier(self):
        with pytest.raises(ConfigError, match="unknown RPO tier 'gold'"):
            rpo_seconds("gold")
