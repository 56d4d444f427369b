"""The life of one custom job: queued, provisioned, run as local processes, restarted after
preemptions, and ended the way Vertex AI ends jobs.

States go QUEUED -> PENDING -> RUNNING -> SUCCEEDED | FAILED | CANCELLING -> CANCELLED. What
decides the end, following Vertex AI's documented behaviour:

- the primary replica (workerpool0-0) exits 0: SUCCEEDED, the other replicas are shut down;
- a replica exits non-zero: FAILED with code 3 and "The replica ... exited with a non-zero status
  of N"; exits by SIGABRT/SIGSEGV (6, 134, 11, 139) are retried first, up to three times;
- a Spot VM is preempted: SIGTERM to the workers, SIGKILL after the grace period, and the job is
  restarted, up to six times, after which it fails with the stockout error (code 8);
- no capacity (stockout scenario): FAILED with code 8 after PENDING, no worker ever started;
- an internal error (scenario): FAILED with code 13, "Internal error occurred for the current
  attempt.";
- running past `scheduling.timeout` ("the maximum job running time", counted from the first
  RUNNING, restarts included): the workers are stopped like a preemption and the job is
  FAILED with code 4 (DEADLINE_EXCEEDED);
- cancel: CANCELLING, workers stopped like a preemption, then CANCELLED with code 1.

During a restart the job stays RUNNING; `startTime` is the first time it entered RUNNING.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.cloud.aiplatform_v1.types import JobState

from vertex_patterns.emulators.vertex import errors
from vertex_patterns.emulators.vertex.codec import seconds, stamp, to_dict, to_snake_dict
from vertex_patterns.emulators.vertex.scenario import FaultPlan, Scenario
from vertex_patterns.emulators.vertex.workers import WorkerGroup

log = logging.getLogger("vertex_patterns.emulators.vertex")

TERMINAL_STATES = frozenset({JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED,
                             JobState.JOB_STATE_CANCELLED})
# Exit statuses Vertex AI treats as possibly transient and retries (SIGABRT, SIGSEGV, raw or
# as a container runtime reports them); negative values are this emulator's killed-by-signal.
_TRANSIENT_EXITS = frozenset({6, 134, 11, 139, -6, -11})


@dataclass
class Attempt:
    """One run of a job's workers."""

    number: int
    started: float
    log_dir: str
    pids: dict[str, int]
    ended: float | None = None
    outcome: str | None = None
    """succeeded, preempted, failed, transient_failure, internal_error or cancelled."""
    exit_codes: dict[str, int | None] = field(default_factory=dict)


@dataclass
class _Outcome:
    kind: str
    replica: str = ""
    exit_code: int = 0


class CustomJobRunner(threading.Thread):
    """Drives one custom job's state in the store from creation to its end.

    Args:
        message: The job's CustomJob protobuf, mutated under `lock`.
        lock: The store's lock.
        plan: The faults this job meets.
        scenario: Timings and restart limits.
        job_dir: Where attempts write their logs and run (`attempt-N/`).
        job_env: Variables the workers get on top of the emulator's environment.
    """

    def __init__(self, *, message: Any, lock: threading.RLock, plan: FaultPlan,
                 scenario: Scenario, job_dir: str,
                 job_env: Mapping[str, str] | None = None) -> None:
        super().__init__(name=f"vertex-job-{message.name.rsplit('/', 1)[-1]}", daemon=True)
        self.message = message
        self.lock = lock
        self.plan = plan
        self.timings = scenario.timings
        self.max_preemption_restarts = scenario.max_preemption_restarts
        self.max_transient_restarts = scenario.max_transient_restarts
        self.job_dir = job_dir
        self.job_env = dict(job_env or {})
        self.job_id = message.name.rsplit("/", 1)[-1]
        self.attempts: list[Attempt] = []
        self.preemptions = 0
        self._cancel = threading.Event()
        self._cancel_grace: float | None = None
        self._group: WorkerGroup | None = None

    def request_cancel(self, *, grace_seconds: float | None = None) -> None:
        """Asks the runner to cancel the job (the cancel call returns at once, as on Vertex).

        Args:
            grace_seconds: SIGTERM-to-SIGKILL time for this cancel; the scenario's by default.
        """
        if grace_seconds is not None:
            self._cancel_grace = grace_seconds
        self._cancel.set()

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a bug in the emulator: end the job, never hang its pollers
            log.exception("emulator job %s crashed", self.message.name)
            if self._group is not None:
                self._group.stop(grace_seconds=0)
            self._finish(JobState.JOB_STATE_FAILED, errors.CODE_INTERNAL,
                         f"{errors.INTERNAL_ERROR_MESSAGE} (emulator: {exc})")

    def _run(self) -> None:
        t = self.timings
        if self._sleep(t.queued_seconds):
            return self._cancelled()
        self._set_state(JobState.JOB_STATE_PENDING)
        if self._sleep(t.pending_seconds):
            return self._cancelled()
        if self.plan.stockout:
            return self._finish(JobState.JOB_STATE_FAILED, errors.CODE_RESOURCE_EXHAUSTED,
                                errors.stockout_message(self.plan.region))
        with self.lock:
            spec = to_dict(self.message)["jobSpec"]
            spec_snake = to_snake_dict(self.message.job_spec)
            timeout = seconds(self.message.job_spec.scheduling.timeout)
        first_run: float | None = None
        transient_restarts = 0
        while True:
            number = len(self.attempts) + 1
            attempt_dir = os.path.join(self.job_dir, f"attempt-{number}")
            try:
                self._group = WorkerGroup.start(
                    job_id=self.job_id, job_spec=spec, job_spec_snake=spec_snake,
                    base_env=self.job_env, log_dir=attempt_dir,
                    work_dir=os.path.join(attempt_dir, "work"))
            except ValueError as exc:
                return self._finish(JobState.JOB_STATE_FAILED, errors.CODE_INVALID_ARGUMENT,
                                    str(exc))
            except OSError as exc:
                log.warning("job %s: cannot start worker: %s", self.job_id, exc)
                return self._finish(JobState.JOB_STATE_FAILED, errors.CODE_INVALID_ARGUMENT,
                                    errors.replica_exit_message("workerpool0-0", 127))
            attempt = Attempt(number=number, started=time.time(), log_dir=attempt_dir,
                              pids=self._group.pids)
            self.attempts.append(attempt)
            now = time.monotonic()
            first_run = now if first_run is None else first_run
            self._set_state(JobState.JOB_STATE_RUNNING)
            delay = self.plan.preemption_delay(number)
            internal = self.plan.internal_error_after_seconds
            outcome = self._watch(self._group,
                                  preempt_at=None if delay is None else now + delay,
                                  internal_at=None if internal is None else first_run + internal,
                                  timeout_at=first_run + timeout if timeout > 0 else None)
            attempt.ended, attempt.exit_codes = time.time(), self._group.exit_codes()
            attempt.outcome = outcome.kind
            self._group = None
            if outcome.kind == "succeeded":
                return self._finish(JobState.JOB_STATE_SUCCEEDED)
            if outcome.kind == "cancelled":
                return self._cancelled()
            if outcome.kind == "internal_error":
                return self._finish(JobState.JOB_STATE_FAILED, errors.CODE_INTERNAL,
                                    errors.INTERNAL_ERROR_MESSAGE)
            if outcome.kind == "timed_out":
                return self._finish(JobState.JOB_STATE_FAILED, errors.CODE_DEADLINE_EXCEEDED,
                                    errors.timeout_message(timeout))
            if outcome.kind == "preempted":
                self.preemptions += 1
                if self.preemptions > self.max_preemption_restarts:
                    return self._finish(JobState.JOB_STATE_FAILED,
                                        errors.CODE_RESOURCE_EXHAUSTED,
                                        errors.stockout_message(self.plan.region))
            elif (outcome.exit_code in _TRANSIENT_EXITS
                  and transient_restarts < self.max_transient_restarts):
                attempt.outcome = "transient_failure"
                transient_restarts += 1
            else:
                return self._finish(JobState.JOB_STATE_FAILED, errors.CODE_INVALID_ARGUMENT,
                                    errors.replica_exit_message(outcome.replica,
                                                                outcome.exit_code))
            if self._sleep(t.restart_seconds):
                return self._cancelled()

    def _watch(self, group: WorkerGroup, *, preempt_at: float | None,
               internal_at: float | None, timeout_at: float | None) -> _Outcome:
        """Waits for the attempt to end: success, a failed replica, a fault, the job's
        `scheduling.timeout` (counted from its first RUNNING, restarts included) or a cancel."""
        grace = self.timings.grace_seconds
        primary = group.workers[0].replica.name
        while True:
            if self._cancel.is_set():
                self._set_state(JobState.JOB_STATE_CANCELLING)
                group.stop(grace_seconds=grace if self._cancel_grace is None
                           else self._cancel_grace)
                return _Outcome("cancelled")
            now = time.monotonic()
            if internal_at is not None and now >= internal_at:
                group.stop(grace_seconds=grace)
                return _Outcome("internal_error")
            if timeout_at is not None and now >= timeout_at:
                log.info("job %s: past its scheduling.timeout", self.job_id)
                group.stop(grace_seconds=grace)
                return _Outcome("timed_out")
            if preempt_at is not None and now >= preempt_at:
                log.info("job %s: preempting attempt %d", self.job_id, len(self.attempts))
                group.stop(grace_seconds=grace)
                return _Outcome("preempted")
            codes = group.exit_codes()
            if codes[primary] == 0:
                group.stop(grace_seconds=grace)  # Vertex shuts the other workers down
                return _Outcome("succeeded")
            for replica, code in codes.items():
                if code not in (None, 0):
                    group.stop(grace_seconds=grace)
                    return _Outcome("failed", replica, code)
            self._cancel.wait(self.timings.poll_seconds)

    def _sleep(self, seconds: float) -> bool:
        """Waits `seconds`; True when a cancel arrived meanwhile."""
        return self._cancel.wait(seconds)

    def _set_state(self, state: int) -> None:
        with self.lock:
            if self.message.state == state:
                return
            self.message.state = state
            stamp(self.message.update_time)
            if state == JobState.JOB_STATE_RUNNING and not self.message.HasField("start_time"):
                stamp(self.message.start_time)

    def _cancelled(self) -> None:
        self._set_state(JobState.JOB_STATE_CANCELLING)
        self._finish(JobState.JOB_STATE_CANCELLED, errors.CODE_CANCELLED,
                     errors.CANCELLED_MESSAGE)

    def _finish(self, state: int, code: int = 0, message: str = "") -> None:
        with self.lock:
            self.message.state = state
            if code:
                self.message.error.code = code
                self.message.error.message = message
            stamp(self.message.end_time)
            stamp(self.message.update_time)
        log.info("job %s ended %s %s", self.job_id, JobState(state).name, message)
