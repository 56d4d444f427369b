"""`projects.locations.customJobs`: create, get, list, cancel, delete, plus what the emulator
records about each job's attempts (for tests and `GET /_emulator/...`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from google.cloud.aiplatform_v1.types import CustomJob, JobState

from vertex_patterns.emulators.vertex import errors, logs
from vertex_patterns.emulators.vertex.codec import parse, stamp, to_dict, to_json
from vertex_patterns.emulators.vertex.runner import TERMINAL_STATES, CustomJobRunner
from vertex_patterns.emulators.vertex.scenario import FaultInjector
from vertex_patterns.emulators.vertex.store import ResourceStore, cancel_and_join, numeric_id, page
from vertex_patterns.emulators.vertex.validation import check_custom_job


def done_operation(name: str, metadata_type: str) -> dict[str, Any]:
    """A finished long-running operation with an empty response (what delete calls return)."""
    return {
        "name": f"{name}/operations/{numeric_id()}",
        "done": True,
        "metadata": {"@type": f"type.googleapis.com/google.cloud.aiplatform.v1.{metadata_type}",
                     "genericMetadata": {}},
        "response": {"@type": "type.googleapis.com/google.protobuf.Empty"},
    }


class CustomJobService:
    """Custom jobs of every project and region, each driven by a `CustomJobRunner`.

    Args:
        store: Where jobs live.
        state_dir: Jobs write logs under ``state_dir/customJobs/ID/attempt-N/``.
        injector: Hands each new job its faults (replaced when the scenario changes).
        job_env: Variables every worker gets on top of the emulator's environment.
    """

    def __init__(self, store: ResourceStore, state_dir: str, injector: FaultInjector,
                 job_env: Mapping[str, str] | None = None) -> None:
        self.store = store
        self.job_env = dict(job_env or {})
        self.jobs = store.custom_jobs
        self.state_dir = state_dir
        self.injector = injector

    def create(self, parent: str, body: Any) -> Any:
        """Validates, applies the region's quota fault, stores and starts the job.

        Raises:
            ApiError: 400 for an invalid job, 429 when the scenario exceeds the region's quota.
        """
        message = parse(body, CustomJob, "custom_job")
        job = to_dict(message)
        check_custom_job(job)
        region = parent.rsplit("/", 1)[-1]
        scenario = self.injector.scenario
        if scenario.faults(region).quota_exceeded:
            raise errors.quota_exceeded(
                errors.quota_metric(job["jobSpec"]["workerPoolSpecs"][0]["machineSpec"]))
        strategy = job["jobSpec"].get("scheduling", {}).get("strategy", "STANDARD")
        plan = self.injector.plan(region, "STANDARD" if strategy == "STRATEGY_UNSPECIFIED"
                                  else strategy)
        job_id = numeric_id()
        message.name = f"{parent}/customJobs/{job_id}"
        message.state = JobState.JOB_STATE_QUEUED
        for output_only in ("start_time", "end_time", "error", "web_access_uris"):
            message.ClearField(output_only)
        stamp(message.create_time)
        message.update_time.CopyFrom(message.create_time)
        runner = CustomJobRunner(message=message, lock=self.store.lock, plan=plan,
                                 scenario=scenario, job_env=self.job_env,
                                 job_dir=os.path.join(self.state_dir, "customJobs", job_id))
        self.jobs.add(message.name, message, runner)
        runner.start()
        return message

    def get(self, name: str) -> Any:
        """The job called `name` (404 when unknown)."""
        return self.jobs.get(name).message

    def list_page(self, parent: str, *, filter_expression: str = "", page_size: int = 0,
             page_token: str = "") -> tuple[list[Any], str]:
        """One page of the jobs under `parent` matching the filter, and the next page token."""
        messages = [e.message for e in self.jobs.under(parent)]
        with self.store.lock:
            return page(messages, filter_expression=filter_expression, page_size=page_size,
                        page_token=page_token)

    def cancel(self, name: str) -> dict[str, Any]:
        """Starts cancelling the job; it reaches CANCELLED once its workers are stopped.

        Raises:
            ApiError: 404 unknown job, 400 FAILED_PRECONDITION when it has already ended.
        """
        entry = self.jobs.get(name)
        with self.store.lock:
            state = JobState(entry.message.state)
            if state in TERMINAL_STATES:
                raise errors.failed_precondition(
                    f"Cannot cancel CustomJob {name} in state {state.name}.")
        entry.extra.request_cancel()
        return {}

    def delete(self, name: str) -> dict[str, Any]:
        """Deletes an ended job; returns the (finished) delete operation.

        Raises:
            ApiError: 404 unknown job, 400 FAILED_PRECONDITION while it is still running.
        """
        entry = self.jobs.get(name)
        with self.store.lock:
            state = JobState(entry.message.state)
            if state not in TERMINAL_STATES:
                raise errors.failed_precondition(
                    f"CustomJob {name} is in state {state.name}; cancel it before deleting.")
            self.jobs.delete(name)
        return done_operation(name, "DeleteOperationMetadata")

    def record(self, name: str) -> dict[str, Any]:
        """What the emulator knows beyond the resource: the fault plan and each attempt.

        Returns:
            ``{"job": <CustomJob JSON>, "region", "stockout", "preemptions",
            "attempts": [{number, started, ended, outcome, pids, exit_codes, log_dir}]}``.
        """
        entry = self.jobs.get(name)
        runner: CustomJobRunner = entry.extra
        with self.store.lock:
            job = to_json(entry.message)
        return {
            "job": job,
            "region": runner.plan.region,
            "stockout": runner.plan.stockout,
            "preemptions": runner.preemptions,
            "attempts": [asdict(a) for a in list(runner.attempts)],
        }

    def resolve(self, job: str) -> str:
        """The resource name of `job`, given as its resource name or its numeric ID.

        Raises:
            ApiError: 404 when no job has that name or ID.
        """
        with self.store.lock:
            if job in self.jobs.entries:
                return job
            for name in self.jobs.entries:
                if name.rsplit("/", 1)[-1] == job:
                    return name
        raise errors.not_found(job)

    def log(self, job: str, *, replica: str, offset: int = 0,
            tail: int | None = None) -> dict[str, Any]:
        """A piece of one replica's log (see `logs`): from `offset`, or its last `tail` lines.

        Raises:
            ApiError: 404 unknown job, 400 unknown replica.
        """
        name = self.resolve(job)
        entry = self.jobs.get(name)
        runner: CustomJobRunner = entry.extra
        # The state is read before the log: a job seen ended has written its last byte.
        with self.store.lock:
            state = JobState(entry.message.state)
            error = entry.message.error.message
            pool_sizes = [int(p.replica_count) for p in entry.message.job_spec.worker_pool_specs]
        replicas = [f"workerpool{i}-{j}" for i, n in enumerate(pool_sizes) for j in range(n)]
        if replica not in replicas:
            raise errors.invalid_argument(f"Job {name} has no replica {replica!r}; it has "
                                          f"{', '.join(replicas)}.")
        log_dirs = [a.log_dir for a in list(runner.attempts)]
        if tail is not None:
            text, next_offset = logs.tail_log(log_dirs, replica, tail), offset
            done = state in TERMINAL_STATES
        else:
            data, next_offset = logs.read_log(log_dirs, replica, offset)
            text = data
            done = state in TERMINAL_STATES and not data
        return {"name": name, "replica": replica, "state": state.name, "error": error,
                "text": text.decode("utf-8", errors="replace"), "offset": next_offset,
                "done": done}

    def stop_all(self, *, grace_seconds: float) -> None:
        """Cancels every unfinished job and waits until its workers are gone.

        Args:
            grace_seconds: SIGTERM-to-SIGKILL time given to running workers.
        """
        with self.store.lock:
            runners = [e.extra for e in self.jobs.entries.values()]
        cancel_and_join(runners, grace_seconds=grace_seconds)
