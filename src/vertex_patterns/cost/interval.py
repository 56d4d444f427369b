"""The checkpoint interval: Young/Daly from measured costs, and the trainer's `auto` policy.

    decision = interval_from_costs(checkpoint_s=3.4, mtbf_s=6 * 3600)   # 383 s
    auto = AutoCheckpointInterval(mtbf_s=6 * 3600)                       # the trainer's
    auto.observe(blocking_s)          # after every periodic save
    if since_last_save >= auto.interval_s: save()
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from vertex_patterns.cost.goodput_model import young_daly_interval
from vertex_patterns.errors import ConfigError
from vertex_patterns.storage import Storage

DEFAULT_MTBF_HOURS = 24.0
"""Prior mean time between preemptions when a run has observed none (Spot VMs carry no
guarantee; a day is a middle-of-the-road figure for GPU Spot capacity)."""


@dataclass(frozen=True)
class IntervalDecision:
    """A checkpoint interval and what it was computed from."""

    interval_seconds: float
    checkpoint_seconds: float
    mtbf_seconds: float
    source: str
    """Where C and the MTBF came from (``given``, a run directory, a history file)."""

    def to_dict(self) -> dict[str, float | str]:
        """`cost interval --json`: ``interval_seconds`` and its inputs."""
        return {"interval_seconds": round(self.interval_seconds, 3),
                "checkpoint_seconds": self.checkpoint_seconds,
                "mtbf_hours": round(self.mtbf_seconds / 3600, 6), "source": self.source}


def interval_from_costs(*, checkpoint_s: float, mtbf_s: float,
                        source: str = "given") -> IntervalDecision:
    """Young/Daly's interval for a checkpoint cost and an MTBF (both seconds).

    Raises:
        ConfigError: A non-positive cost or MTBF.
    """
    return IntervalDecision(interval_seconds=young_daly_interval(checkpoint_s, mtbf_s),
                            checkpoint_seconds=checkpoint_s, mtbf_seconds=mtbf_s,
                            source=source)


class AutoCheckpointInterval:
    """Young/Daly's interval from the blocking cost this process measures as it saves.

    Until the first save the interval is Young/Daly's for `initial_cost_s`: the cost that
    earlier attempts of the run measured when known (then taken as is), else a guess of
    1 s, capped at `initial_s` so that C is measured early. After
    each periodic save it is sqrt(2 * median(C so far) * MTBF), clamped to
    [`min_s`, `max_s`]. The median keeps one slow save (a cold cache, a retry) from
    stretching the interval.

    Args:
        mtbf_s: Mean time between preemptions, seconds.
        initial_s: Longest first interval when C is a guess.
        initial_cost_s: C measured by earlier attempts (None: unknown, guess 1 s).
        min_s: Lower bound (a very cheap save must not mean saving every step).
        max_s: Upper bound.
        window: Saves the median runs over (the most recent).

    Raises:
        ConfigError: A non-positive MTBF or bound, or min_s > max_s.
    """

    def __init__(self, mtbf_s: float, *, initial_s: float = 60.0,
                 initial_cost_s: float | None = None, min_s: float = 1.0,
                 max_s: float = 3600.0, window: int = 16) -> None:
        if mtbf_s <= 0 or initial_s <= 0 or min_s <= 0 or max_s < min_s or window < 1 \
                or (initial_cost_s is not None and initial_cost_s < 0):
            raise ConfigError("auto checkpoint interval: MTBF, initial and bounds must be "
                              "positive, with min <= max")
        self.mtbf_s = mtbf_s
        self.min_s = min_s
        self.max_s = max_s
        self.window = window
        self._costs: list[float] = []
        if initial_cost_s is None:
            first = min(young_daly_interval(1.0, mtbf_s), initial_s)
        else:
            first = young_daly_interval(max(initial_cost_s, 1e-6), mtbf_s)
        self._interval = min(max(first, min_s), max_s)

    @property
    def interval_s(self) -> float:
        """The interval in effect, seconds of training between saves."""
        return self._interval

    @property
    def checkpoint_s(self) -> float | None:
        """The median blocking cost measured so far (None before the first save)."""
        return statistics.median(self._costs) if self._costs else None

    def observe(self, blocking_s: float) -> float:
        """Records one periodic save's blocking time; returns the new interval."""
        if blocking_s < 0:
            raise ValueError(f"blocking time cannot be negative: {blocking_s}")
        self._costs = [*self._costs, blocking_s][-self.window:]
        cost = max(self.checkpoint_s or 0.0, 1e-6)  # a free save still has a cost > 0
        self._interval = min(max(young_daly_interval(cost, self.mtbf_s), self.min_s),
                             self.max_s)
        return self._interval


def mtbf_from_history(history: dict[str, Any], where: str = "history") -> float:
    """Seconds of Spot running time per preemption in a launch history.

    Raises:
        ConfigError: No preemption in it (the MTBF is unknown: give one).
    """
    from vertex_patterns.cost.ledger import NOT_RUN, _parse_time

    running = 0.0
    preemptions = 0
    for i, a in enumerate(history.get("attempts", []), 1):
        if not isinstance(a, dict) or a.get("outcome") in NOT_RUN:
            continue
        if a.get("started") and a.get("ended"):
            running += max(_parse_time(a["ended"], f"{where} attempt {i}")
                           - _parse_time(a["started"], f"{where} attempt {i}"), 0.0)
        preemptions += a.get("outcome") == "preempted"
    if not preemptions:
        raise ConfigError(f"{where} records no preemption, so it gives no MTBF: add "
                          "--mtbf-hours H")
    return running / preemptions


def decide_interval(*, checkpoint_s: float | None = None, mtbf_hours: float | None = None,
                    run_dir: str | None = None, history: str | None = None,
                    storage: Storage | None = None) -> IntervalDecision:
    """`cost interval`: C and the MTBF given, or read from a run directory and a history.

    A given value wins over a measured one.

    Raises:
        ConfigError: A non-positive C or MTBF, or one that is neither given nor measurable.
    """
    from vertex_patterns.cost.ledger import read_history
    from vertex_patterns.cost.observe import observe_run

    if checkpoint_s is not None and not (math.isfinite(checkpoint_s) and checkpoint_s > 0):
        raise ConfigError(f"--checkpoint-seconds must be > 0, got {checkpoint_s}")
    if mtbf_hours is not None and not (math.isfinite(mtbf_hours) and mtbf_hours > 0):
        raise ConfigError(f"--mtbf-hours must be > 0, got {mtbf_hours}")
    sources = []
    mtbf_s = mtbf_hours * 3600 if mtbf_hours is not None else None
    if history and mtbf_s is None:
        mtbf_s = mtbf_from_history(read_history(history), history)
        sources.append(f"MTBF from {history}")
    if run_dir:
        observed = observe_run(run_dir, storage)
        if checkpoint_s is None:
            if observed.checkpoint_s is None or observed.checkpoint_s <= 0:
                raise ConfigError(f"{run_dir} recorded no checkpoint save: add "
                                  "--checkpoint-seconds C")
            checkpoint_s = observed.checkpoint_s
            sources.append(f"C: median of {observed.checkpoints} save(s) in {run_dir}")
        if mtbf_s is None:
            if observed.mtbf_s is None:
                raise ConfigError(f"{run_dir} records no preemption, so it gives no MTBF: "
                                  "add --mtbf-hours H or --history FILE")
            mtbf_s = observed.mtbf_s
            sources.append(f"MTBF: {observed.preemptions} preemption(s) in "
                           f"{observed.wall_s:.0f} s")
    if checkpoint_s is None:
        raise ConfigError("give --checkpoint-seconds C or --from-run RUN_DIR")
    if mtbf_s is None:
        raise ConfigError("give --mtbf-hours H, --history FILE or --from-run RUN_DIR")
    return interval_from_costs(checkpoint_s=checkpoint_s, mtbf_s=mtbf_s,
                               source="; ".join(sources) or "given")
