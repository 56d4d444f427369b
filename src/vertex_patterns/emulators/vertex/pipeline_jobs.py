"""`projects.locations.pipelineJobs`: create, get, list, cancel, delete.

A pipeline job is validated (a compiled KFP PipelineSpec, a ``gs://`` pipeline root, and the
runtime parameters against the root's input definitions and types) and then really runs: a
`PipelineJobRunner` executes its DAG with kfp's local orchestrator, each task a process of the
emulator's Python environment, and keeps ``jobDetail.taskDetails`` current. A failing task
fails the job, naming it; cancel stops the running task.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Mapping
from typing import Any

from google.cloud.aiplatform_v1.types import PipelineJob, PipelineState

from vertex_patterns.emulators.vertex import errors
from vertex_patterns.emulators.vertex.codec import parse, stamp, to_dict
from vertex_patterns.emulators.vertex.custom_jobs import done_operation
from vertex_patterns.emulators.vertex.pipeline_runner import TERMINAL, PipelineJobRunner
from vertex_patterns.emulators.vertex.scenario import FaultInjector
from vertex_patterns.emulators.vertex.store import ResourceStore, cancel_and_join, page
from vertex_patterns.emulators.vertex.validation import PIPELINE_JOB_ID, check_pipeline_job

__all__ = ["TERMINAL", "PipelineJobService"]


class PipelineJobService:
    """Pipeline jobs of every project and region, each driven by a `PipelineJobRunner`.

    Args:
        store: Where jobs live.
        state_dir: Jobs keep their spec, events, logs and artifacts under
            ``state_dir/pipelineJobs/ID/``.
        injector: The scenario's timings apply to jobs created afterwards.
        job_env: Variables every task gets on top of the emulator's environment.
    """

    def __init__(self, store: ResourceStore, state_dir: str, injector: FaultInjector,
                 job_env: Mapping[str, str] | None = None) -> None:
        self.store = store
        self.jobs = store.pipeline_jobs
        self.state_dir = state_dir
        self.injector = injector
        self.job_env = dict(job_env or {})

    def create(self, parent: str, body: Any, job_id: str = "", *,
               schedule_name: str = "") -> Any:
        """Validates, stores and starts a pipeline job named `job_id` (generated when empty).

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
        runner = PipelineJobRunner(message=message, lock=self.store.lock,
                                   timings=self.injector.scenario.timings,
                                   job_dir=os.path.join(self.state_dir, "pipelineJobs", job_id),
                                   job_env=self.job_env)
        self.jobs.add(message.name, message, runner)
        runner.start()
        return message

    def get(self, name: str) -> Any:
        """The job called `name` (404 when unknown)."""
        return self.jobs.get(name).message

    def list_page(self, parent: str, *, filter_expression: str = "", page_size: int = 0,
                  page_token: str = "") -> tuple[list[Any], str]:
        """One page of the jobs under `parent`, and the next page token."""
        with self.store.lock:
            messages = [e.message for e in self.jobs.under(parent)]
            return page(messages, filter_expression=filter_expression, page_size=page_size,
                        page_token=page_token)

    def cancel(self, name: str) -> dict[str, Any]:
        """Starts cancelling the job; the running task is stopped, then the job is CANCELLED.

        Raises:
            ApiError: 404 unknown, 400 FAILED_PRECONDITION when it has ended.
        """
        entry = self.jobs.get(name)
        with self.store.lock:
            state = PipelineState(entry.message.state)
            if state in TERMINAL:
                raise errors.failed_precondition(
                    f"Cannot cancel PipelineJob {name} in state {state.name}.")
        entry.extra.request_cancel()
        return {}

    def delete(self, name: str) -> dict[str, Any]:
        """Deletes an ended job (400 FAILED_PRECONDITION while it runs)."""
        entry = self.jobs.get(name)
        with self.store.lock:
            state = PipelineState(entry.message.state)
            if state not in TERMINAL:
                raise errors.failed_precondition(
                    f"PipelineJob {name} is in state {state.name}; cancel it before deleting.")
            self.jobs.delete(name)
        return done_operation(name, "DeleteOperationMetadata")

    def running_count(self, schedule_name: str) -> int:
        """Unfinished jobs started by `schedule_name`."""
        with self.store.lock:
            return sum(1 for e in self.jobs.entries.values()
                       if e.message.schedule_name == schedule_name
                       and PipelineState(e.message.state) not in TERMINAL)

    def job_dir(self, name: str) -> str:
        """Where job `name` keeps its spec, events, task logs and local artifacts."""
        runner: PipelineJobRunner = self.jobs.get(name).extra
        return runner.job_dir

    def stop_all(self, *, grace_seconds: float) -> None:
        """Cancels every unfinished job and waits for its runner."""
        with self.store.lock:
            runners = [e.extra for e in self.jobs.entries.values()]
        cancel_and_join(runners, grace_seconds=grace_seconds)
