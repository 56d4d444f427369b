"""The goodput ledger across all attempts of a run: records, aggregation, `goodput.json`.

Categories follow ml-goodput-measurement's `GoodputType` / `BadputType` (see `CATEGORIES`).
Attempts are ordered by process start. Wall time runs from the first attempt's process start
to the last attempt's last record. Inside an attempt (process start .. last record), time
not reported in any category is OTHER (idle: logging, evaluation, waiting). The gap from one
attempt's last record to the next attempt's process start is
INFRASTRUCTURE_RECOVERY_FROM_DISRUPTION: the kill, the VM replacement, the container start,
and whatever the killed attempt did after its last flush. Step time of an attempt beyond the
step that the next restoring attempt resumed from is WASTED_PROGRESS_FROM_DISRUPTION.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from vertex_patterns.formatting import format_table, iso_utc
from vertex_patterns.storage import Storage

log = logging.getLogger("vertex_patterns.training")

RECORD_VERSION = 1
_ATTEMPT_FILE = re.compile(r"^(?P<attempt>[A-Za-z0-9._-]+)\.json$")

# (key in goodput.json, ml-goodput-measurement type, label for the table)
CATEGORIES: tuple[tuple[str, str, str], ...] = (
    ("productive_s", "GoodputType.TOTAL", "productive training"),
    ("program_startup_s", "BadputType.PROGRAM_STARTUP", "program startup"),
    ("accelerator_init_s", "BadputType.TPU_INITIALIZATION", "accelerator init"),
    ("training_prep_s", "BadputType.TRAINING_PREP", "training prep"),
    ("data_loading_s", "BadputType.DATA_LOADING_SYNC", "data loading (blocking)"),
    ("checkpoint_save_s", "BadputType.UNPRODUCTIVE_CHECKPOINT_SAVE_TIME",
     "checkpoint save (blocking)"),
    ("checkpoint_restore_s", "BadputType.UNPRODUCTIVE_CHECKPOINT_RESTORE_TIME",
     "checkpoint restore"),
    ("wasted_progress_s", "BadputType.WASTED_PROGRESS_FROM_DISRUPTION", "wasted progress"),
    # ml-goodput-measurement has no rewind category: its closest is OTHER.
    ("wasted_by_rewind_s", "BadputType.OTHER", "wasted by rewind"),
    ("infrastructure_recovery_s", "BadputType.INFRASTRUCTURE_RECOVERY_FROM_DISRUPTION",
     "between attempts"),
    ("other_s", "BadputType.OTHER", "other / idle"),
)
CATEGORY_KEYS = tuple(key for key, _, _ in CATEGORIES)


@dataclass
class AttemptRecord:
    """What one attempt recorded; the content of `<run_dir>/goodput/<attempt>.json`.

    Times are unix seconds (`process_start`, `startup_done`, `updated`); `*_s` are durations.
    `marks` maps a checkpointed step to the cumulative step time up to and including it, so
    the time of steps beyond any resume point can be taken back exactly.
    """

    attempt: str
    process_start: float
    updated: float
    startup_done: float | None = None
    accelerator_init_s: float = 0.0
    training_prep_s: float = 0.0
    restored: bool = False
    restore_s: float = 0.0
    resumed_from_step: int | None = None
    checkpoint_save_s: float = 0.0
    checkpoints: int = 0
    data_loading_s: float = 0.0
    step_time_s: float = 0.0
    steps: int = 0
    first_step: int | None = None
    last_step: int | None = None
    marks: dict[int, float] = field(default_factory=dict)
    outcome: str | None = None
    rewinds: int = 0
    rewind_wasted_s: float = 0.0

    def to_json(self) -> bytes:
        """The file's bytes."""
        body = asdict(self)
        body["marks"] = {str(k): v for k, v in self.marks.items()}
        body["version"] = RECORD_VERSION
        return json.dumps(body, indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> AttemptRecord:
        """Parses a file written by `to_json`.

        Raises:
            ValueError: Not an attempt record.
        """
        try:
            body = json.loads(data)
            body.pop("version", None)
            body["marks"] = {int(k): float(v) for k, v in body.get("marks", {}).items()}
            return cls(**body)
        except (TypeError, KeyError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a goodput attempt record: {exc}") from exc


def read_attempts(run_dir: str, storage: Storage | None = None) -> list[AttemptRecord]:
    """Every attempt record under `<run_dir>/goodput/`; unreadable files are skipped, logged."""
    storage = storage or Storage()
    records = []
    for info in storage.list(f"{run_dir.rstrip('/')}/goodput"):
        if not _ATTEMPT_FILE.match(info.key):
            continue
        try:
            records.append(AttemptRecord.from_json(storage.read_bytes(info.uri)))
        except ValueError as exc:
            log.warning("goodput: skipping %s: %s", info.uri, exc)
    return records


def lost_work(record: AttemptRecord, resumed_from: int | None) -> tuple[float, int]:
    """(seconds, steps) of `record`'s steps beyond `resumed_from`, the step a later attempt
    resumed from (None: it started afresh, so every step was lost)."""
    if record.steps == 0 or record.last_step is None or record.first_step is None:
        return 0.0, 0
    if resumed_from is None or resumed_from < record.first_step:
        return record.step_time_s, record.steps
    if resumed_from >= record.last_step:
        return 0.0, 0
    lost_steps = record.last_step - resumed_from
    if resumed_from in record.marks:
        return record.step_time_s - record.marks[resumed_from], lost_steps
    # Resumed from a step this attempt recorded no checkpoint for: use the mean step time.
    return record.step_time_s * lost_steps / record.steps, lost_steps


@dataclass(frozen=True)
class AttemptBreakdown:
    """One attempt's share of the wall time.

    Attributes:
        attempt: The attempt id.
        start_time: Process start (unix seconds).
        end_time: Last record (unix seconds).
        outcome: How it ended (None: killed or still running).
        resumed_from_step: The step it restored (None: fresh start).
        first_step: Its first recorded step.
        last_step: Its last recorded step.
        steps: Steps it recorded.
        steps_lost: Its steps that a later attempt computed again.
        seconds: Category key -> seconds (`CATEGORY_KEYS`); `infrastructure_recovery_s` is
            the gap before this attempt.
    """

    attempt: str
    start_time: float
    end_time: float
    outcome: str | None
    resumed_from_step: int | None
    first_step: int | None
    last_step: int | None
    steps: int
    steps_lost: int
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """The attempt's entry in goodput.json."""
        body = {k: v for k, v in asdict(self).items() if k != "seconds"}
        body["start"] = iso_utc(self.start_time)
        body["elapsed_s"] = self.end_time - self.start_time
        return {**body, **self.seconds}


@dataclass(frozen=True)
class GoodputSummary:
    """The run's goodput over all its attempts.

    Attributes:
        attempts: Per-attempt breakdowns, in start order.
        wall_s: First process start to last record.
        seconds: Category key -> seconds, summed over attempts.
        goodput_pct: Productive time / wall time, in percent.
        goodput_after_startup_pct: Productive time / (wall time less program startup and the
            gaps between attempts), in percent: the share of the time the processes ran after
            starting up.
        steps_lost: Steps computed twice because of disruptions.
    """

    attempts: list[AttemptBreakdown]
    wall_s: float
    seconds: dict[str, float]
    goodput_pct: float
    goodput_after_startup_pct: float
    steps_lost: int

    def to_dict(self) -> dict[str, Any]:
        """The content of goodput.json."""
        total: dict[str, Any] = {"wall_s": self.wall_s, **self.seconds,
                                 "goodput_pct": self.goodput_pct,
                                 "goodput_after_startup_pct": self.goodput_after_startup_pct,
                                 "steps_lost": self.steps_lost,
                                 "disruptions": max(0, len(self.attempts) - 1)}
        return {"attempts": [a.to_dict() for a in self.attempts], "total": total,
                "categories": {key: kind for key, kind, _ in CATEGORIES}}

    def to_table(self) -> str:
        """A fixed-width table: categories by attempt, with totals and shares of wall time."""
        headers = ["category", *(f"#{i}" for i in range(1, len(self.attempts) + 1)),
                   "total", "% wall"]
        rows = []
        for key, _, label in CATEGORIES:
            share = 100 * self.seconds[key] / self.wall_s if self.wall_s > 0 else 0.0
            rows.append([label, *(f"{a.seconds[key]:.1f}" for a in self.attempts),
                         f"{self.seconds[key]:.1f}", f"{share:.1f}"])
        rows.append(["steps lost", *(str(a.steps_lost) for a in self.attempts),
                     str(self.steps_lost), ""])
        rows.append(["resumed from step",
                     *("-" if a.resumed_from_step is None else str(a.resumed_from_step)
                       for a in self.attempts), "", ""])
        lines = [f"goodput ledger: {len(self.attempts)} attempt(s), wall {self.wall_s:.1f} s"]
        lines += format_table(headers, rows, left={0})
        lines += [f"#{i}: {a.attempt} ({a.outcome or 'killed'})"
                  for i, a in enumerate(self.attempts, 1)]
        lines.append(f"goodput {self.goodput_pct:.1f}% of wall time; "
                     f"{self.goodput_after_startup_pct:.1f}% after program startup "
                     f"and restarts")
        return "\n".join(lines)


def summarize(records: Iterable[AttemptRecord]) -> GoodputSummary:
    """Folds attempt records into the run's ledger (rules in the module docstring).

    Args:
        records: Every attempt of the run, in any order.

    Returns:
        The summary; an empty one (all zeros) for no records.
    """
    ordered = sorted(records, key=lambda r: (r.process_start, r.attempt))
    breakdowns: list[AttemptBreakdown] = []
    for i, rec in enumerate(ordered):
        later = next((r for r in ordered[i + 1:] if r.restored), None)
        wasted, lost = lost_work(rec, later.resumed_from_step) if later else (0.0, 0)
        end = max(rec.updated, rec.process_start)
        elapsed = end - rec.process_start
        startup = 0.0
        if rec.startup_done is not None:
            startup = min(max(rec.startup_done - rec.process_start, 0.0), elapsed)
        gap = max(rec.process_start - ordered[i - 1].updated, 0.0) if i else 0.0
        seconds = {
            "productive_s": max(rec.step_time_s - wasted - rec.rewind_wasted_s, 0.0),
            "program_startup_s": startup,
            "accelerator_init_s": rec.accelerator_init_s,
            "training_prep_s": rec.training_prep_s,
            "data_loading_s": rec.data_loading_s,
            "checkpoint_save_s": rec.checkpoint_save_s,
            "checkpoint_restore_s": rec.restore_s,
            "wasted_progress_s": wasted,
            "wasted_by_rewind_s": rec.rewind_wasted_s,
            "infrastructure_recovery_s": gap,
        }
        inside = sum(v for k, v in seconds.items() if k != "infrastructure_recovery_s")
        seconds["other_s"] = max(elapsed - inside, 0.0)
        breakdowns.append(AttemptBreakdown(
            attempt=rec.attempt, start_time=rec.process_start, end_time=end,
            outcome=rec.outcome,
            resumed_from_step=rec.resumed_from_step if rec.restored else None,
            first_step=rec.first_step, last_step=rec.last_step, steps=rec.steps,
            steps_lost=lost, seconds=seconds))
    totals = {key: sum(b.seconds[key] for b in breakdowns) for key in CATEGORY_KEYS}
    wall = breakdowns[-1].end_time - breakdowns[0].start_time if breakdowns else 0.0
    after_startup = wall - totals["program_startup_s"] - totals["infrastructure_recovery_s"]
    productive = totals["productive_s"]
    return GoodputSummary(
        attempts=breakdowns,
        wall_s=wall,
        seconds=totals,
        goodput_pct=100 * productive / wall if wall > 0 else 0.0,
        goodput_after_startup_pct=100 * productive / after_startup if after_startup > 0 else 0.0,
        steps_lost=sum(b.steps_lost for b in breakdowns),
    )


def summarize_run(run_dir: str, storage: Storage | None = None) -> GoodputSummary:
    """The ledger of the run in `run_dir`, from its attempt files (e.g. for a report)."""
    return summarize(read_attempts(run_dir, storage))
