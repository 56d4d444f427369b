"""`projects.locations.pipelineJobs`: create, get, list, cancel, delete.

A pipeline job is validated (a compiled KFP PipelineSpec, its pipeline root, and the runtime
parameters against the root's input definitions) and stored; it then moves through QUEUED,
PENDING and RUNNING to SUCCEEDED on the scenario's timings. Its tasks are not executed: the
emulator answers for the pipeline *service*; run components locally with `kfp.local`.

States are derived from the clock whenever the job is read, so no thread runs per job.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass
from typing import Any

from google.cloud.aiplatform_v1.types import PipelineJob, PipelineState

from vertex_patterns.emulators.vertex import errors
from vertex_patterns.emulators.vertex.codec import parse, stamp, to_dict
from vertex_patterns.emulators.vertex.custom_jobs import done_operation
from vertex_patterns.emulators.vertex.scenario import FaultInjector
from vertex_patterns.emulators.vertex.store import Entry, ResourceStore, page
from vertex_patterns.emulators.vertex.validation import PIPELINE_JOB_ID, check_pipeline_job

TERMINAL = frozenset({PipelineState.PIPELINE_STATE_SUCCEEDED, PipelineState.PIPELINE_STATE_FAILED,
                      PipelineState.PIPELINE_STATE_CANCELLED})


@dataclass
class PipelineRun:
    """The clock of one pipeline job: when it was created and when a cancel came."""

    created: float
    queued_seconds: float
    pending_seconds: float
    run_seconds: float
    cancelled_at: float | None = None


def _at(start_wall: dt.datetime, offset: float) -> dt.datetime:
    return start_wall + dt.timedelta(seconds=offset)


class PipelineJobService:
    """Pipeline jobs of every project and region."""

    def __init__(self, store: ResourceStore, injector: FaultInjector) -> None:
        self.store = store
        self.jobs = store.pipeline_jobs
        self.injector = injector

    def create(self, parent: str, body: Any, job_id: str = "", *,
               schedule_name: str = "") -> Any:
        """Validates and stores a pipeline job named `job_id` (generated when empty).

        Raises:
            ApiError: 400 invalid job or ID, 409 when the ID is taken.
        """
        message = parse(body, PipelineJob, "pipeline_job")
        job = to_dict(message)
        check_pipeline_job(job)
        if not job_id:
            stem = re.sub(r"[^a-z0-9-]", "-", job["pipelineSpec"]["pipelineInfo"]["name"].lower())
            job_id = f"{stem[:100]}-{dt.datetime.now(dt.timezone.utc):%Y%m%d%H%M%S%f}"
        if not PIPELINE_JOB_ID.match(job_id):
            raise errors.invalid_argument(
                f"pipeline_job_id {job_id!r} must match [a-z0-9][a-z0-9-]{{0,127}}.")
        message.name = f"{parent}/pipelineJobs/{job_id}"
        if not message.display_name:
            message.display_name = job_id
        for output_only in ("start_time", "end_time", "error", "job_detail"):
            message.ClearField(output_only)
        if schedule_name:
            message.schedule_name = schedule_name
        message.state = PipelineState.PIPELINE_STATE_QUEUED
        stamp(message.create_time)
        message.update_time.CopyFrom(message.create_time)
        t = self.injector.scenario.timings
        run = PipelineRun(created=time.monotonic(), queued_seconds=t.queued_seconds,
                          pending_seconds=t.pending_seconds, run_seconds=t.pipeline_seconds)
        self.jobs.add(message.name, message, run)
        return message

    def get(self, name: str) -> Any:
        """The job called `name`, its state brought up to date (404 when unknown)."""
        entry = self.jobs.get(name)
        with self.store.lock:
            self._advance(entry)
        return entry.message

    def list_page(self, parent: str, *, filter_expression: str = "", page_size: int = 0,
             page_token: str = "") -> tuple[list[Any], str]:
        """One page of the jobs under `parent`, and the next page token."""
        with self.store.lock:
            entries = list(self.jobs.under(parent))
            for entry in entries:
                self._advance(entry)
            return page([e.message for e in entries], filter_expression=filter_expression,
                        page_size=page_size, page_token=page_token)

    def cancel(self, name: str) -> dict[str, Any]:
        """Moves the job to CANCELLING; it reads as CANCELLED from the next poll on.

        Raises:
            ApiError: 404 unknown, 400 FAILED_PRECONDITION when it has ended.
        """
        entry = self.jobs.get(name)
        with self.store.lock:
            self._advance(entry)
            state = PipelineState(entry.message.state)
            if state in TERMINAL:
                raise errors.failed_precondition(
                    f"Cannot cancel PipelineJob {name} in state {state.name}.")
            entry.extra.cancelled_at = time.monotonic()
            self._set(entry.message, PipelineState.PIPELINE_STATE_CANCELLING)
        return {}

    def delete(self, name: str) -> dict[str, Any]:
        """Deletes an ended job (400 FAILED_PRECONDITION while it runs)."""
        entry = self.jobs.get(name)
        with self.store.lock:
            self._advance(entry)
            state = PipelineState(entry.message.state)
            if state not in TERMINAL:
                raise errors.failed_precondition(
                    f"PipelineJob {name} is in state {state.name}; cancel it before deleting.")
            self.jobs.delete(name)
        return done_operation(name, "DeleteOperationMetadata")

    def running_count(self, schedule_name: str) -> int:
        """Unfinished jobs started by `schedule_name`."""
        with self.store.lock:
            count = 0
            for entry in list(self.jobs.entries.values()):
                self._advance(entry)
                if (entry.message.schedule_name == schedule_name
                        and PipelineState(entry.message.state) not in TERMINAL):
                    count += 1
            return count

    def _advance(self, entry: Entry[PipelineRun]) -> None:
        message, run = entry.message, entry.extra
        state = PipelineState(message.state)
        if state in TERMINAL:
            return
        if run.cancelled_at is not None:
            self._set(message, PipelineState.PIPELINE_STATE_CANCELLED)
            message.error.code = errors.CODE_CANCELLED
            message.error.message = errors.CANCELLED_MESSAGE
            stamp(message.end_time)
            return
        elapsed = time.monotonic() - run.created
        created = message.create_time.ToDatetime(tzinfo=dt.timezone.utc)
        started = run.queued_seconds + run.pending_seconds
        if elapsed < run.queued_seconds:
            return
        if elapsed < started:
            self._set(message, PipelineState.PIPELINE_STATE_PENDING)
            return
        if not message.HasField("start_time"):
            stamp(message.start_time, _at(created, started))
        if elapsed < started + run.run_seconds:
            self._set(message, PipelineState.PIPELINE_STATE_RUNNING)
            return
        self._set(message, PipelineState.PIPELINE_STATE_SUCCEEDED)
        stamp(message.end_time, _at(created, started + run.run_seconds))

    @staticmethod
    def _set(message: Any, state: int) -> None:
        if message.state != state:
            message.state = state
            stamp(message.update_time)
