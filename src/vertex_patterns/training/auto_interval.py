"""`--checkpoint-every-seconds auto`: the trainer's save decision from Young/Daly.

The MTBF is `--mtbf-hours` when given, otherwise estimated from the run's earlier attempts
(their wall time and how many ended in a preemption) with a one-day prior
(`cost.observe.mtbf_with_prior`). The checkpoint cost C is measured by this attempt's own
periodic saves (`cost.interval.AutoCheckpointInterval`); until the first one, the mean save
cost of the earlier attempts stands in for it, so a restart after a preemption does not pay
for re-learning C (a fresh run guesses 1 s and saves within a minute to measure it).
"""

from __future__ import annotations

import logging

from vertex_patterns.cost.interval import DEFAULT_MTBF_HOURS, AutoCheckpointInterval
from vertex_patterns.cost.observe import mtbf_with_prior
from vertex_patterns.errors import StorageError
from vertex_patterns.storage import Storage
from vertex_patterns.training.goodput_summary import read_attempts

log = logging.getLogger("vertex_patterns.training")


class AutoSavePolicy:
    """Saves when Young/Daly's interval (from measured C) has passed since the last save."""

    def __init__(self, interval: AutoCheckpointInterval) -> None:
        self.interval = interval

    @classmethod
    def for_run(cls, run_dir: str, storage: Storage,
                mtbf_hours: float | None) -> AutoSavePolicy:
        """The policy for an attempt of the run in `run_dir`."""
        try:
            records = read_attempts(run_dir, storage)
        except StorageError as exc:  # a guess is fine here; training goes on
            log.warning("auto interval: earlier attempts unreadable (%s); using priors", exc)
            records = []
        mtbf_s = mtbf_hours * 3600 if mtbf_hours is not None else \
            mtbf_with_prior(records, DEFAULT_MTBF_HOURS * 3600)
        saves = sum(r.checkpoints for r in records)
        cost = sum(r.checkpoint_save_s for r in records) / saves if saves else None
        interval = AutoCheckpointInterval(mtbf_s, initial_cost_s=cost)
        log.info("auto checkpoint interval: MTBF %.3g h, C %s; first save after %.1f s",
                 mtbf_s / 3600, "unknown" if cost is None else f"{cost:.4f} s",
                 interval.interval_s)
        return cls(interval)

    def due(self, seconds_since_save: float) -> bool:
        """True when a save is due."""
        return seconds_since_save >= self.interval.interval_s

    def observe(self, blocking_s: float) -> None:
        """Feeds one periodic save's blocking time; logs the new interval."""
        interval = self.interval.observe(blocking_s)
        log.info("auto checkpoint interval %.1f s (C = %.4f s)", interval,
                 self.interval.checkpoint_s or 0.0,
                 extra={"json_fields": {"event": "checkpoint_interval",
                                        "interval_s": interval}})
