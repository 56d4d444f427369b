"""The goodput recorder: what one attempt of a run spent its time on, kept safe across kills.

Each attempt (one process start on one VM) records durations in the categories of Google's
ml-goodput-measurement and writes them to `<run_dir>/goodput/<attempt>.json`, overwriting it
atomically (`Storage.write_bytes`) every `flush_every_s` and at checkpoints, so a SIGKILL
loses at most the time since the last flush. `finish()` folds every attempt's file into
`<run_dir>/goodput.json` (rules in `goodput_summary`).

    goodput = GoodputRecorder(run_dir, attempt=attempt_id)
    goodput.startup_done()                    # process start .. here: program startup
    goodput.training_prep(prep_s)             # building workload, model, optimizer
    goodput.restore(restore_s, restored.step if restored else None)
    for step in ...:
        goodput.step(step, step_s)
        if saved:
            goodput.checkpoint(step, blocking_s)
    print(goodput.finish("completed").to_table())

Steps are productive when recorded; the summary moves the time of steps that a later attempt
recomputed (those beyond the step it resumed from) into wasted progress.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

from vertex_patterns.errors import StorageError
from vertex_patterns.storage import Storage
from vertex_patterns.training.goodput_summary import (
    AttemptRecord,
    GoodputSummary,
    read_attempts,
    summarize,
)
from vertex_patterns.training.metrics import validate_attempt

log = logging.getLogger("vertex_patterns.training")

# A resume lands on a recent checkpoint; older marks only feed the estimate fallback.
_MAX_MARKS = 256


def process_start_time() -> float:
    """When this process started (unix seconds), from /proc; now where /proc is missing."""
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
        # Fields after "(comm)" start at field 3; starttime is field 22, in clock ticks
        # since boot. /proc/uptime (10 ms resolution) beats /proc/stat btime (1 s).
        start_ticks = int(stat[stat.rindex(")") + 2:].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


class GoodputRecorder:
    """Records one attempt's time and writes it where every later attempt can read it.

    Args:
        run_dir: The run directory (`gs://...` or local).
        attempt: This attempt's id (letters, digits, '.', '_', '-').
        storage: The storage facade (a default one when None).
        process_start: Unix time the process started; read from /proc by default.
        flush_every_s: `step()` writes the attempt file in the background this often.
        clock: Wall clock (unix seconds); tests pass a fake one.

    Raises:
        ValueError: A bad attempt id or a non-positive flush interval.
    """

    def __init__(
        self,
        run_dir: str,
        *,
        attempt: str,
        storage: Storage | None = None,
        process_start: float | None = None,
        flush_every_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if flush_every_s <= 0:
            raise ValueError("flush_every_s must be positive")
        self.run_dir = run_dir.rstrip("/")
        self.storage = storage or Storage()
        self.flush_every_s = flush_every_s
        self._clock = clock
        now = clock()
        start = process_start_time() if process_start is None else process_start
        self._record = AttemptRecord(attempt=validate_attempt(attempt),
                                     process_start=min(start, now), updated=now)
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="goodput")
        self._pending: Future[bool] | None = None
        self._last_flush = now
        self._finished = False

    @property
    def attempt_uri(self) -> str:
        """`<run_dir>/goodput/<attempt>.json`."""
        return f"{self.run_dir}/goodput/{self._record.attempt}.json"

    @property
    def record(self) -> AttemptRecord:
        """A copy of what has been recorded so far."""
        with self._lock:
            return replace(self._record, marks=dict(self._record.marks))

    def startup_done(self) -> None:
        """Marks the end of program startup (process start until now)."""
        with self._lock:
            self._record.startup_done = self._clock()

    def accelerator_init(self, seconds: float) -> None:
        """Adds time spent initialising accelerators (CUDA context, NCCL process group)."""
        with self._lock:
            self._record.accelerator_init_s += _duration(seconds)

    def training_prep(self, seconds: float) -> None:
        """Adds time spent building the workload: model, optimizer, data pipeline."""
        with self._lock:
            self._record.training_prep_s += _duration(seconds)

    def restore(self, seconds: float, step: int | None) -> None:
        """Records the checkpoint restore: its time and the step resumed from (None: fresh)."""
        with self._lock:
            self._record.restored = True
            self._record.restore_s += _duration(seconds)
            self._record.resumed_from_step = step

    def step(self, step: int, seconds: float) -> None:
        """Records one productive step that ended at `step`; flushes now and then."""
        with self._lock:
            rec = self._record
            rec.step_time_s += _duration(seconds)
            rec.steps += 1
            if rec.first_step is None:
                rec.first_step = step
            rec.last_step = step
            due = self._clock() - self._last_flush >= self.flush_every_s
        if due:
            self._submit()

    def checkpoint(self, step: int, blocking_s: float) -> None:
        """Records a checkpoint save of `step` that blocked the loop `blocking_s`; flushes."""
        with self._lock:
            rec = self._record
            rec.checkpoint_save_s += _duration(blocking_s)
            rec.checkpoints += 1
            if rec.last_step is None or step >= rec.last_step:
                rec.marks[step] = rec.step_time_s
                if len(rec.marks) > _MAX_MARKS:
                    del rec.marks[min(rec.marks)]
        self._submit()

    def rewind(self, restore_s: float, wasted_s: float) -> None:
        """Records a health rewind: the restore, and the step time it threw away."""
        with self._lock:
            self._record.restore_s += _duration(restore_s)
            self._record.rewind_wasted_s += _duration(wasted_s)
            self._record.rewinds += 1
        self._submit()

    def data_loading(self, seconds: float) -> None:
        """Adds time the loop waited for data (blocking loads only)."""
        with self._lock:
            self._record.data_loading_s += _duration(seconds)

    def flush(self) -> None:
        """Writes the attempt file now and waits; a storage failure is logged, not raised."""
        future = self._submit()
        future.result()

    def finish(self, outcome: str) -> GoodputSummary:
        """Final flush, then folds all attempts of the run into `<run_dir>/goodput.json`.

        Args:
            outcome: How this attempt ended (`completed`, `preempted`, `failed`, ...).

        Returns:
            The summary over every attempt found (this one included, even if unwritable).
        """
        with self._lock:
            self._record.outcome = outcome
        self.flush()
        with self._lock:
            self._finished = True
        self._executor.shutdown(wait=True)
        mine = self.record
        try:
            others = [a for a in read_attempts(self.run_dir, self.storage)
                      if a.attempt != mine.attempt]
        except StorageError as exc:
            log.warning("goodput: could not read other attempts under %s: %s",
                        self.run_dir, exc)
            others = []
        summary = summarize([*others, mine])
        try:
            self.storage.write_bytes(f"{self.run_dir}/goodput.json",
                                     json.dumps(summary.to_dict(), indent=1).encode())
        except StorageError as exc:
            log.warning("goodput: %s/goodput.json not written: %s", self.run_dir, exc)
        return summary

    def _submit(self) -> Future[bool]:
        """Queues a write of a snapshot taken now; writes land in the order queued."""
        with self._lock:
            now = self._clock()
            self._record.updated = now
            self._last_flush = now
            snapshot = self._record.to_json()
            if self._finished:
                # After finish() the writer thread is gone: write in the caller's thread.
                done: Future[bool] = Future()
                done.set_result(self._write(snapshot))
                return done
            self._pending = self._executor.submit(self._write, snapshot)
            return self._pending

    def _write(self, data: bytes) -> bool:
        try:
            self.storage.write_bytes(self.attempt_uri, data)
        except (StorageError, OSError) as exc:
            # The ledger is telemetry: a failed write must not stop training.
            log.warning("goodput: %s not written: %s", self.attempt_uri, exc)
            return False
        return True


def _duration(seconds: float) -> float:
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {seconds}")
    return float(seconds)
