"""What a finished (or running) training run tells about its own checkpoint and preemption
costs, read from its run directory: the goodput ledger and the metrics stream."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from vertex_patterns.errors import ConfigError
from vertex_patterns.storage import Storage
from vertex_patterns.training.goodput_summary import (
    AttemptRecord,
    GoodputSummary,
    read_attempts,
    summarize,
)
from vertex_patterns.training.metrics import read_metrics

# Outcomes of an attempt that ended because its VM went away (None: killed without a word).
DISRUPTED = ("preempted", "preempted-unsaved", None)


@dataclass(frozen=True)
class RunObservations:
    """Costs measured by one run.

    Attributes:
        run_dir: Where they were read.
        summary: The goodput ledger over the attempts found.
        checkpoint_s: Median blocking time of the periodic checkpoint saves (None: no save).
        checkpoints: Periodic saves seen.
        preemptions: Attempts that ended by a preemption or a kill, before the last one.
        restart_s: Mean cost of one restart: time between attempts, program startup,
            training prep and restore of the attempt that followed (None: no restart).
        interval_s: Mean productive seconds between checkpoints (None: no save).
    """

    run_dir: str
    summary: GoodputSummary
    checkpoint_s: float | None
    checkpoints: int
    preemptions: int
    restart_s: float | None
    interval_s: float | None

    @property
    def wall_s(self) -> float:
        """First process start to last record, seconds."""
        return self.summary.wall_s

    @property
    def mtbf_s(self) -> float | None:
        """Wall time per preemption (None: no preemption observed)."""
        return self.wall_s / self.preemptions if self.preemptions else None


def observe_run(run_dir: str, storage: Storage | None = None) -> RunObservations:
    """Reads `run_dir`'s goodput ledger and metrics stream.

    Raises:
        ConfigError: The directory holds no goodput records (not a run directory).
    """
    storage = storage or Storage()
    base = run_dir.rstrip("/")
    records = read_attempts(base, storage)
    if not records:
        raise ConfigError(f"{run_dir} holds no goodput records (<run-dir>/goodput/*.json): "
                          "give the run directory the trainer wrote")
    summary = summarize(records)
    saves = [float(r["blocking_s"]) for r in read_metrics(f"{base}/metrics", storage)
             if r.get("event") == "checkpoint" and r.get("blocking") is False
             and isinstance(r.get("blocking_s"), (int, float))]
    if not saves:  # no periodic save recorded: fall back on the ledger's mean
        count = sum(r.checkpoints for r in records)
        total = sum(r.checkpoint_save_s for r in records)
        saves = [total / count] if count else []
    attempts = summary.attempts
    preemptions = sum(1 for a in attempts[:-1] if a.outcome in DISRUPTED)
    restarts = [a.seconds["infrastructure_recovery_s"] + a.seconds["program_startup_s"]
                + a.seconds["training_prep_s"] + a.seconds["checkpoint_restore_s"]
                for a in attempts[1:]]
    checkpoints = sum(r.checkpoints for r in records)
    productive = summary.seconds["productive_s"]
    return RunObservations(
        run_dir=base, summary=summary,
        checkpoint_s=statistics.median(saves) if saves else None,
        checkpoints=checkpoints, preemptions=preemptions,
        restart_s=statistics.fmean(restarts) if restarts else None,
        interval_s=productive / checkpoints if checkpoints else None)


def mtbf_with_prior(records: list[AttemptRecord], prior_s: float) -> float:
    """Mean time between preemptions from a run's earlier attempts, with a prior.

    One pseudo-preemption after `prior_s` seconds is added to what was observed (a Gamma
    prior on the rate), so the estimate is the prior before anything happened and moves to
    the observed MTBF as preemptions accumulate; never zero, never infinite.
    """
    observed = sum(max(r.updated - r.process_start, 0.0) for r in records)
    preemptions = sum(1 for r in records if r.outcome in DISRUPTED)
    return (observed + prior_s) / (preemptions + 1)
