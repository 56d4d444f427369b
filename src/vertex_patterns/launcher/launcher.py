"""The launch loop: create a CustomJob in the planner's region, record it, poll it, classify
how it ended, and go again until it succeeds or the planner gives up.

Restart-safe: every created job is written to the state file (`gcp_resources`) before it is
polled, and before creating attempt N in region R the launcher looks for a job it may have
created just before dying (its display name ``NAME-R-aN``), so a restarted launcher re-attaches
instead of launching a duplicate. SIGTERM (a cancelled pipeline task, Ctrl-C's cousin) cancels
the remote job and waits until Vertex AI reports it CANCELLED.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from vertex_patterns.launcher.build import attempt_display_name, build_custom_job
from vertex_patterns.launcher.history import AttemptRecord, LaunchHistory, iso
from vertex_patterns.launcher.job_logs import failure_log_hint
from vertex_patterns.launcher.jobs import JobClient, region_of
from vertex_patterns.launcher.outcome import (
    Classified,
    Outcome,
    classify_api_error,
    classify_job,
)
from vertex_patterns.launcher.policy import RegionPlanner
from vertex_patterns.launcher.spec import JobSpec, LaunchPolicy
from vertex_patterns.launcher.state import StateFile

log = logging.getLogger("vertex_patterns.launcher")

# After a cancel, how long to wait for Vertex AI to report the job CANCELLED.
_CANCEL_WAIT_S = 300.0


class Launcher:
    """Runs one launch of `spec` under `policy`.

    Args:
        spec: The job to run.
        policy: Regions, failover and budgets.
        state_path: The `gcp_resources` file to record jobs in (None: not restart-safe).
        client: The job client (one for `policy.project` by default).
        history_uri: Where to keep the history JSON current (a `gs://` object or local file),
            written after every attempt and at the end; None: nowhere.
    """

    def __init__(self, spec: JobSpec, policy: LaunchPolicy, *, state_path: str | None = None,
                 client: JobClient | None = None, history_uri: str | None = None) -> None:
        self.spec = spec
        self.history_uri = history_uri
        self.policy = policy
        self.state = StateFile(state_path)
        self.client = client or JobClient(policy.project)
        self.planner = RegionPlanner(policy, spec.strategy)
        self.history = LaunchHistory()
        self.stop_requested = threading.Event()
        self._names: list[str] = []

    def run(self) -> LaunchHistory:
        """Launches (or re-attaches) until success or the planner stops; returns the history.

        Raises:
            ConfigError: The state file is unreadable.
        """
        with self._sigterm_cancels():
            running = self._replay(self.state.load())
            while not self.stop_requested.is_set():
                if running is None:
                    running = self._create_next()
                    if running is None:
                        break
                if running is not _REFUSED:
                    self._observe(running, self._wait(running))
                running = None
                if self.planner.final is not None:
                    break
        if self.planner.final is None:  # stopped by SIGTERM between jobs
            self.planner.final, self.planner.failure = Outcome.CANCELLED, "launcher stopped"
        self.history.final_outcome = self.planner.final.value
        self.history.final_region = self.planner.final_region
        self.history.failure = self.planner.failure
        self._publish_history()
        return self.history

    def _publish_history(self) -> None:
        """Writes the history to `history_uri`; a report, never a reason to fail the launch."""
        if not self.history_uri:
            return
        try:
            from vertex_patterns.storage import Storage

            Storage().write_bytes(self.history_uri, self.history.to_json().encode())
        except Exception as exc:  # logged and carried on: the launch itself is what matters
            log.warning("cannot write the history to %s: %s", self.history_uri, exc)

    def request_stop(self) -> None:
        """Cancels the running job and ends the launch (what SIGTERM does)."""
        self.stop_requested.set()

    @contextlib.contextmanager
    def _sigterm_cancels(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _replay(self, names: list[str]) -> Any:
        """Feeds recorded jobs into the planner; returns the still-running one, if any."""
        running = None
        for name in names:
            job = self.client.get(name)
            self._names.append(name)
            result = classify_job(job)
            if result is None:
                log.info("re-attaching to %s", name)
                running = job
            else:
                self._observe(job, result)
        return running

    def _create_next(self) -> Any:
        nxt = self.planner.next()
        if nxt is None:
            return None
        number = len(self.history.attempts) + 1
        display_name = attempt_display_name(self.spec, nxt.region, number)
        if self.state.path is not None:  # a job created just before a crash, not yet recorded
            for job in self.client.find(nxt.region, display_name):
                if job.name not in self._names and classify_job(job) is None:
                    log.info("re-attaching to unrecorded %s", job.name)
                    self._record(job.name)
                    return job
        body = build_custom_job(self.spec, self.policy, nxt.region, strategy=nxt.strategy,
                                number=number)
        started = time.time()
        try:
            job = self.client.create(nxt.region, body)
        except Exception as exc:  # classified: quota, bad request, transient
            result = classify_api_error(exc)
            log.warning("create in %s refused: %s", nxt.region, result.error)
            self._append(nxt.region, nxt.strategy, "", result, started, time.time())
            self.planner.observe(nxt.region, result)
            return _REFUSED
        log.info("created %s (%s, %s)", job.name, nxt.region, nxt.strategy)
        self._record(job.name)
        return job

    def _record(self, name: str) -> None:
        self._names.append(name)
        self.state.save(self._names)

    def _wait(self, job: Any) -> Classified:
        name = job.name
        while True:
            if self.stop_requested.is_set():
                return self._cancel(name)
            try:
                job = self.client.get(name)
            except Exception as exc:  # a failed poll is not a failed job: poll again
                log.warning("polling %s failed: %s", name, exc)
            else:
                result = classify_job(job)
                if result is not None:
                    return result
            self.stop_requested.wait(self.policy.poll_seconds)

    def _cancel(self, name: str) -> Classified:
        log.warning("stopping: cancelling %s", name)
        with contextlib.suppress(Exception):  # already ended: the state below says how
            self.client.cancel(name)
        deadline = time.monotonic() + _CANCEL_WAIT_S
        while time.monotonic() < deadline:
            try:
                result = classify_job(self.client.get(name))
            except Exception as exc:  # keep trying until the deadline
                log.warning("polling %s failed: %s", name, exc)
                result = None
            if result is not None:
                return result
            time.sleep(min(self.policy.poll_seconds, 1.0))
        return Classified(Outcome.CANCELLED, "cancel requested; job not yet CANCELLED")

    def _observe(self, job: Any, result: Classified) -> None:
        region = region_of(job.name)
        strategy = job.job_spec.scheduling.strategy.name
        start = job.start_time if job.start_time else job.create_time
        end = job.end_time if job.end_time else None
        self._append(region, strategy, job.name, result, start.timestamp() if start else None,
                     end.timestamp() if end else time.time())
        if result.outcome == Outcome.CANCELLED and not self.stop_requested.is_set():
            log.warning("%s was cancelled outside the launcher", job.name)
        if result.outcome == Outcome.USER_ERROR:
            log.error("%s failed: %s\n%s", job.name, result.error,
                      failure_log_hint(job.name, result.error))
        self.planner.observe(region, result)

    def _append(self, region: str, strategy: str, job: str, result: Classified,
                started: float | None, ended: float | None) -> None:
        self.history.attempts.append(AttemptRecord(
            region=region, strategy=strategy, job=job, outcome=result.outcome.value,
            started=iso(started), ended=iso(ended), error=result.error))
        log.info("attempt %d in %s: %s", len(self.history.attempts), region,
                 result.outcome.value)
        self._publish_history()


_REFUSED = object()
"""A create call that was refused: the attempt is recorded, there is nothing to poll."""


def launch(spec: JobSpec, policy: LaunchPolicy, *, state_path: str | None = None) -> LaunchHistory:
    """Runs `spec` under `policy` until it succeeds or every region is exhausted.

    Args:
        spec: The job.
        policy: Regions, failover strategy, budgets.
        state_path: `gcp_resources` file for restart safety.

    Returns:
        The history; `history.succeeded` says whether a job succeeded, `history.failure` why
        not (each region's reason).
    """
    return Launcher(spec, policy, state_path=state_path).run()


def final_uris(policy: LaunchPolicy, region: str | None) -> tuple[str, str]:
    """The final checkpoint directory and model directory of a launch that ended in `region`
    (empty strings when it never ran anywhere)."""
    if region is None:
        return "", ""
    from vertex_patterns.checkpoint.io import list_committed
    from vertex_patterns.checkpoint.layout import join, step_dir_name
    from vertex_patterns.storage import Storage

    directory = policy.checkpoint_dir(region)
    # A query: read the committed listing. A CheckpointManager would clean up (delete or
    # quarantine uncommitted steps) and start thread pools.
    committed = list_committed(Storage(), directory)
    step = max(committed) if committed else None
    checkpoint = join(directory, step_dir_name(step)) if step is not None else ""
    return checkpoint, f"{policy.run_dir(region)}/model"
