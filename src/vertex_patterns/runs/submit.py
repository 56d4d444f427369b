"""Submitting compiled pipelines and scheduling them, through the Vertex AI SDK.

Plain Python over `google-cloud-aiplatform` (no kfp): `vertex-patterns submit` and
`vertex-patterns schedule ...` call these. Everything a user can get wrong is checked before
the first request (the file, the parameters against the compiled spec and the pipeline's own
rules, the pipeline root, cron, labels, the service account, network and key), so a bad
input submits nothing. With `VERTEX_AI_EMULATOR_HOST` set the same calls go to the emulator.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vertex_patterns.errors import ConfigError
from vertex_patterns.launcher.catalog import check_region
from vertex_patterns.launcher.spec import (
    check_kms_key,
    check_label,
    check_network,
    check_service_account,
)
from vertex_patterns.runs.params import check_parameters
from vertex_patterns.vertex_client import init_aiplatform

_TERMINAL = ("PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED", "PIPELINE_STATE_CANCELLED")


@dataclass(kw_only=True, frozen=True)
class SubmitOptions:
    """Where and how a compiled pipeline runs."""

    project: str
    """Google Cloud project ID."""
    region: str
    """Vertex AI region, e.g. ``us-central1``."""
    pipeline_root: str
    """``gs://bucket/prefix`` for the run's artifacts (Vertex AI accepts no other)."""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    """Pipeline parameter values (typed; defaults fill the rest)."""
    service_account: str | None = None
    """The service account the pipeline's tasks run as."""
    network: str | None = None
    """VPC network: ``projects/NUMBER/global/networks/NAME``."""
    encryption_key: str | None = None
    """Cloud KMS key in `region` for the run's resources."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Labels on the pipeline job."""
    display_name: str = ""
    """Shown in the console; the pipeline's name by default."""
    enable_caching: bool | None = None
    """Override every task's caching setting (None: as compiled)."""

    def __post_init__(self) -> None:
        if not self.project.strip():
            raise ConfigError("--project must not be empty")
        check_region(self.region)
        if not self.pipeline_root.startswith("gs://") or len(self.pipeline_root) < 6:
            raise ConfigError(f"--pipeline-root {self.pipeline_root!r}: Vertex AI Pipelines "
                              "needs a Cloud Storage path, gs://BUCKET/PREFIX")
        if self.service_account is not None:
            check_service_account(self.service_account)
        if self.network is not None:
            check_network(self.network)
        if self.encryption_key is not None:
            check_kms_key(self.encryption_key, self.region)
        for key, value in self.labels.items():
            check_label(key, value)


def load_pipeline(path: str) -> dict[str, Any]:
    """Reads a compiled pipeline (the JSON `vertex-patterns compile` writes).

    Raises:
        ConfigError: Missing, unreadable, not JSON, or not a compiled pipeline spec.
    """
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (compile with `vertex-patterns compile`)"
                          ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a compiled pipeline (JSON): {exc}") from None
    if (not isinstance(spec, dict) or "pipelineInfo" not in spec or "root" not in spec
            or "deploymentSpec" not in spec):
        raise ConfigError(f"{path}: not a compiled KFP pipeline spec (no pipelineInfo/root)")
    return spec


def _job(path: str, options: SubmitOptions, job_id: str | None = None) -> Any:
    from google.cloud import aiplatform

    spec = load_pipeline(path)
    values = check_parameters(spec, dict(options.parameters))
    init_aiplatform(options.project, options.region)
    name = spec["pipelineInfo"]["name"]
    return aiplatform.PipelineJob(
        display_name=options.display_name or name, template_path=path,
        job_id=job_id or f"{name}-{dt.datetime.now(dt.timezone.utc):%Y%m%d%H%M%S}-"
                         f"{uuid.uuid4().hex[:6]}",
        pipeline_root=options.pipeline_root, parameter_values=values,
        enable_caching=options.enable_caching, encryption_spec_key_name=options.encryption_key,
        labels=dict(options.labels) or None, project=options.project,
        location=options.region)


def submit_pipeline(path: str, options: SubmitOptions) -> Any:
    """Validates everything, then submits; returns the submitted `aiplatform.PipelineJob`.

    Raises:
        ConfigError: Bad input (nothing was submitted).
    """
    job = _job(path, options)
    job.submit(service_account=options.service_account, network=options.network)
    return job


def wait_for_job(job: Any, *, poll_seconds: float = 5.0,
                 on_change: Callable[[Any], None] | None = None) -> str:
    """Polls `job` until it ends; calls `on_change(job)` whenever a task changes state.

    Returns:
        The final state's name, e.g. ``PIPELINE_STATE_SUCCEEDED``.
    """
    seen: dict[tuple[int, str], str] = {}
    while True:
        state = job.state.name
        if on_change is not None:
            changed = False
            for task in job.task_details:
                key = (task.task_id, task.task_name)
                if seen.get(key) != task.state.name:
                    seen[key] = task.state.name
                    changed = True
            if changed:
                on_change(job)
        if state in _TERMINAL:
            return str(state)
        time.sleep(poll_seconds)


def failure_message(job: Any) -> str:
    """The failing task's error (or the job's) in one paragraph."""
    for task in job.task_details:
        if task.state.name == "FAILED" and task.error.message and task.parent_task_id:
            return f"task {task.task_name} failed: {task.error.message}"
    return job.gca_resource.error.message or f"job ended {job.state.name}"


@dataclass(kw_only=True, frozen=True)
class ScheduleOptions:
    """When a scheduled pipeline runs."""

    cron: str
    """Unix cron, optionally prefixed ``TZ=Area/City`` (validated here)."""
    max_concurrent_runs: int = 1
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    max_runs: int | None = None
    display_name: str = ""

    def __post_init__(self) -> None:
        from vertex_patterns.emulators.vertex.cron import parse_cron

        try:
            parse_cron(self.cron)
        except ValueError as exc:
            raise ConfigError(f"--cron {self.cron!r}: {exc}") from None
        if self.max_concurrent_runs < 1:
            raise ConfigError("--max-concurrent-runs must be at least 1")
        if self.max_runs is not None and self.max_runs < 1:
            raise ConfigError("--max-runs must be at least 1")
        if self.start and self.end and self.end <= self.start:
            raise ConfigError("--end must be after --start")


def parse_time(text: str, flag: str) -> dt.datetime:
    """An ISO 8601 time (``2026-12-24T09:00:00Z``); naive times are UTC.

    Raises:
        ConfigError: Not an ISO 8601 time.
    """
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected an ISO 8601 time such as "
                          "2026-12-24T09:00:00Z") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def create_schedule(path: str, options: SubmitOptions, schedule: ScheduleOptions) -> Any:
    """Validates everything, then creates a `PipelineJobSchedule`; returns it.

    Raises:
        ConfigError: Bad input (nothing was created).
    """
    from google.cloud import aiplatform

    job = _job(path, options)
    name = options.display_name or load_pipeline(path)["pipelineInfo"]["name"]
    created = aiplatform.PipelineJobSchedule(
        pipeline_job=job, display_name=schedule.display_name or f"{name}-schedule",
        project=options.project, location=options.region)
    created.create(cron=schedule.cron, max_concurrent_run_count=schedule.max_concurrent_runs,
                   max_run_count=schedule.max_runs,
                   start_time=schedule.start.isoformat() if schedule.start else None,
                   end_time=schedule.end.isoformat() if schedule.end else None,
                   service_account=options.service_account, network=options.network)
    return created


def schedule_name(name: str, project: str, region: str) -> str:
    """A schedule's full resource name from its name or numeric ID."""
    if name.startswith("projects/"):
        return name
    if not name.isdigit():
        raise ConfigError(f"schedule {name!r}: give its ID (digits) or its full resource name")
    return f"projects/{project}/locations/{region}/schedules/{name}"


def get_schedule(name: str, project: str, region: str) -> Any:
    """The schedule called `name` (ID or resource name)."""
    from google.cloud import aiplatform

    check_region(region)
    init_aiplatform(project, region)
    return aiplatform.PipelineJobSchedule.get(schedule_name(name, project, region))


def list_schedules(project: str, region: str) -> list[Any]:
    """Every pipeline schedule in `project` and `region`."""
    from google.cloud import aiplatform

    check_region(region)
    init_aiplatform(project, region)
    return list(aiplatform.PipelineJobSchedule.list())

