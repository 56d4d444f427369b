"""Fault scenarios: what goes wrong in which region, and how fast the emulator moves.

A scenario file is JSON::

    {"seed": 1,
     "grace_seconds": 2,
     "timings": {"queued_seconds": 0.1, "pending_seconds": 0.1},
     "max_preemption_restarts": 6,
     "regions": {"us-central1": {"stockout": true},
                 "us-east1": {"preempt_after_seconds": [20, 40]},
                 "europe-west1": {"quota_exceeded": true},
                 "asia-east1": {"preempt_rate_per_hour": 4,
                                "internal_error_after_seconds": 600}}}

Faults apply to jobs created after the scenario is set. Preemptions and stockouts hit Spot jobs
(`scheduling.strategy: SPOT`) only, as on Vertex AI; `"stockout": ["SPOT", "STANDARD"]` names
the strategies explicitly. `preempt_after_seconds[i]` is how long attempt i + 1 runs before its
VM is reclaimed; attempts past the list are preempted at the seeded `preempt_rate_per_hour`.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from vertex_patterns.errors import ConfigError

SPOT = "SPOT"
STRATEGIES = ("STANDARD", "SPOT", "FLEX_START", "ON_DEMAND", "LOW_COST")

# Vertex AI restarts a preempted Spot job up to six times ("Use Spot VMs with training",
# Preemption handling) and retries a job whose code died of SIGABRT/SIGSEGV up to three times
# ("Understand the serverless training service", Handle common errors).
DEFAULT_MAX_PREEMPTION_RESTARTS = 6
DEFAULT_MAX_TRANSIENT_RESTARTS = 3


@dataclass(kw_only=True, frozen=True)
class Timings:
    """How long each phase takes. Real Vertex AI takes minutes; tests want tenths of seconds."""

    queued_seconds: float = 1.0
    """Time in JOB_STATE_QUEUED before a job moves to PENDING."""
    pending_seconds: float = 2.0
    """Time in PENDING (provisioning) before workers start, or a stockout fails the job."""
    restart_seconds: float = 2.0
    """Time between a preempted attempt's end and its workers' restart."""
    grace_seconds: float = 30.0
    """Time between SIGTERM and SIGKILL when a worker is preempted or cancelled."""
    poll_seconds: float = 0.05
    """How often a job's runner checks its workers."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"timings.{f.name} must be >= 0, got {getattr(self, f.name)}")
        if self.poll_seconds <= 0:
            raise ValueError("timings.poll_seconds must be > 0")


@dataclass(kw_only=True, frozen=True)
class RegionFaults:
    """The faults of one region."""

    stockout_strategies: tuple[str, ...] = ()
    """Scheduling strategies that find no capacity: their jobs fail after PENDING."""
    quota_exceeded: bool = False
    """`customJobs.create` answers 429 RESOURCE_EXHAUSTED."""
    preempt_after_seconds: tuple[float, ...] = ()
    """Run time of attempt 1, 2, ... of a Spot job before its VM is reclaimed."""
    preempt_rate_per_hour: float = 0.0
    """Poisson rate of preemptions of a Spot attempt once `preempt_after_seconds` is used up."""
    internal_error_after_seconds: float | None = None
    """Wall time after a job first runs at which it fails with an internal error."""

    def __post_init__(self) -> None:
        unknown = set(self.stockout_strategies) - set(STRATEGIES)
        if unknown:
            raise ValueError(f"stockout: unknown strategy {sorted(unknown)}; use {STRATEGIES}")
        if any(s <= 0 for s in self.preempt_after_seconds):
            raise ValueError("preempt_after_seconds must all be > 0")
        if self.preempt_rate_per_hour < 0:
            raise ValueError("preempt_rate_per_hour must be >= 0")
        if self.internal_error_after_seconds is not None and self.internal_error_after_seconds < 0:
            raise ValueError("internal_error_after_seconds must be >= 0")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RegionFaults:
        """Builds from a scenario file's region object."""
        known = {"stockout", "quota_exceeded", "preempt_after_seconds", "preempt_rate_per_hour",
                 "internal_error_after_seconds"}
        _reject_unknown(data, known, "region")
        stockout = data.get("stockout", False)
        if stockout is True:
            strategies: tuple[str, ...] = (SPOT,)
        elif stockout is False:
            strategies = ()
        elif isinstance(stockout, list):
            strategies = tuple(str(s) for s in stockout)
        else:
            raise ValueError("stockout must be true, false or a list of strategies")
        internal = data.get("internal_error_after_seconds")
        return cls(
            stockout_strategies=strategies,
            quota_exceeded=bool(data.get("quota_exceeded", False)),
            preempt_after_seconds=tuple(float(s) for s in data.get("preempt_after_seconds", ())),
            preempt_rate_per_hour=float(data.get("preempt_rate_per_hour", 0.0)),
            internal_error_after_seconds=None if internal is None else float(internal),
        )


@dataclass(kw_only=True, frozen=True)
class Scenario:
    """Faults per region plus the emulator's timings. The empty scenario has no faults."""

    seed: int = 0
    """Seeds the random preemptions (per region, in job creation order)."""
    regions: Mapping[str, RegionFaults] = field(default_factory=dict)
    """Region -> its faults; regions not named have none."""
    timings: Timings = field(default_factory=Timings)
    """Phase durations."""
    max_preemption_restarts: int = DEFAULT_MAX_PREEMPTION_RESTARTS
    """Restarts of a preempted Spot job before it fails with a stockout error."""
    max_transient_restarts: int = DEFAULT_MAX_TRANSIENT_RESTARTS
    """Restarts of a job whose worker died of SIGABRT or SIGSEGV before it fails."""

    def __post_init__(self) -> None:
        if self.max_preemption_restarts < 0 or self.max_transient_restarts < 0:
            raise ValueError("max_preemption_restarts and max_transient_restarts must be >= 0")

    def faults(self, region: str) -> RegionFaults:
        """The faults of `region` (none when it is not named)."""
        return self.regions.get(region, RegionFaults())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scenario:
        """Builds from a decoded scenario file.

        Raises:
            ValueError: An unknown key or a bad value, named in the message.
        """
        _reject_unknown(data, {"seed", "regions", "timings", "grace_seconds",
                               "max_preemption_restarts", "max_transient_restarts"}, "scenario")
        timings_data = dict(data.get("timings", {}))
        _reject_unknown(timings_data, {f.name for f in fields(Timings)}, "timings")
        if "grace_seconds" in data:
            timings_data["grace_seconds"] = data["grace_seconds"]
        regions: dict[str, RegionFaults] = {}
        for region, faults in dict(data.get("regions", {})).items():
            try:
                regions[region] = RegionFaults.from_dict(faults)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"regions.{region}: {exc}") from exc
        return cls(
            seed=int(data.get("seed", 0)),
            regions=regions,
            timings=Timings(**{k: float(v) for k, v in timings_data.items()}),
            max_preemption_restarts=int(data.get("max_preemption_restarts",
                                                 DEFAULT_MAX_PREEMPTION_RESTARTS)),
            max_transient_restarts=int(data.get("max_transient_restarts",
                                                DEFAULT_MAX_TRANSIENT_RESTARTS)),
        )

    @classmethod
    def from_file(cls, path: str) -> Scenario:
        """Reads a scenario JSON file.

        Raises:
            ConfigError: The file is missing, not JSON, or not a valid scenario.
        """
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as exc:
            raise ConfigError(f"--scenario {path}: {exc.strerror}") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--scenario {path}: not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"--scenario {path}: expected a JSON object")
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"--scenario {path}: {exc}") from exc

    def with_timings(self, **changes: float) -> Scenario:
        """A copy with some timings changed."""
        return replace(self, timings=replace(self.timings, **changes))


def _reject_unknown(data: Mapping[str, Any], known: set[str], what: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what}: expected an object")
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {unknown}; known: {sorted(known)}")


@dataclass
class FaultPlan:
    """The faults one job will meet, fixed when it is created."""

    region: str
    stockout: bool
    preempt_after_seconds: tuple[float, ...]
    preempt_rate_per_hour: float
    internal_error_after_seconds: float | None
    rng: random.Random

    def preemption_delay(self, attempt: int) -> float | None:
        """Seconds attempt `attempt` (1-based) runs before preemption; None: not preempted."""
        if attempt <= len(self.preempt_after_seconds):
            return self.preempt_after_seconds[attempt - 1]
        if self.preempt_rate_per_hour > 0:
            return self.rng.expovariate(self.preempt_rate_per_hour / 3600.0)
        return None


class FaultInjector:
    """Hands out `FaultPlan`s for new jobs from the current scenario, reproducibly per seed."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._lock = threading.Lock()
        self._rngs: dict[str, random.Random] = {}

    def plan(self, region: str, strategy: str) -> FaultPlan:
        """The plan for a job created now in `region` with scheduling `strategy`."""
        faults = self.scenario.faults(region)
        with self._lock:
            rng = self._rngs.setdefault(region, random.Random(f"{self.scenario.seed}/{region}"))
            job_rng = random.Random(rng.getrandbits(64))
        spot = strategy == SPOT
        return FaultPlan(
            region=region,
            stockout=strategy in faults.stockout_strategies,
            preempt_after_seconds=faults.preempt_after_seconds if spot else (),
            preempt_rate_per_hour=faults.preempt_rate_per_hour if spot else 0.0,
            internal_error_after_seconds=faults.internal_error_after_seconds,
            rng=job_rng,
        )
