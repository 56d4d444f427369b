"""`projects.locations.schedules`: create, get, list, pause, resume, update, delete, and the
ticker that starts a pipeline job at each cron time of an ACTIVE schedule.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.cloud.aiplatform_v1.types import Schedule

from vertex_patterns.emulators.vertex import errors
from vertex_patterns.emulators.vertex.codec import parse, snake_case, stamp, to_dict
from vertex_patterns.emulators.vertex.cron import parse_cron
from vertex_patterns.emulators.vertex.custom_jobs import done_operation
from vertex_patterns.emulators.vertex.pipeline_jobs import PipelineJobService
from vertex_patterns.emulators.vertex.store import ResourceStore, numeric_id, page
from vertex_patterns.emulators.vertex.validation import REQUIRED, check_pipeline_job

_ACTIVE = Schedule.State.ACTIVE
_PAUSED = Schedule.State.PAUSED
_COMPLETED = Schedule.State.COMPLETED
_UPDATABLE = frozenset({"display_name", "cron", "start_time", "end_time", "allow_queueing",
                        "max_run_count", "max_concurrent_run_count"})


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _check(schedule: dict[str, Any]) -> None:
    problems: list[tuple[str, str]] = []
    if not schedule.get("displayName"):
        problems.append(("schedule.display_name", REQUIRED))
    if not schedule.get("cron"):
        problems.append(("schedule.cron", REQUIRED))
    if int(schedule.get("maxConcurrentRunCount", 0)) <= 0:
        problems.append(("schedule.max_concurrent_run_count", "Must be positive."))
    if int(schedule.get("maxRunCount", 0)) < 0:
        problems.append(("schedule.max_run_count", "Must not be negative."))
    request = schedule.get("createPipelineJobRequest")
    if not request:
        problems.append(("schedule.create_pipeline_job_request", REQUIRED))
    if problems:
        raise errors.field_errors(problems)
    try:
        parse_cron(schedule["cron"])
    except ValueError as exc:
        raise errors.invalid_argument(f"Invalid cron {schedule['cron']!r}: {exc}.") from None
    assert request is not None
    check_pipeline_job(request.get("pipelineJob", {}),
                       root="schedule.create_pipeline_job_request.pipeline_job")


class ScheduleService:
    """Schedules of every project and region; runs go through `PipelineJobService`."""

    def __init__(self, store: ResourceStore, pipelines: PipelineJobService) -> None:
        self.store = store
        self.schedules = store.schedules
        self.pipelines = pipelines

    def create(self, parent: str, body: Any) -> Any:
        """Validates (cron included) and stores an ACTIVE schedule.

        Raises:
            ApiError: 400 naming what is invalid.
        """
        message = parse(body, Schedule, "schedule")
        _check(to_dict(message))
        message.name = f"{parent}/schedules/{numeric_id()}"
        for output_only in ("started_run_count", "next_run_time", "last_pause_time",
                            "last_resume_time", "last_scheduled_run_response"):
            message.ClearField(output_only)
        message.state = _ACTIVE
        message.create_pipeline_job_request.parent = parent
        stamp(message.create_time)
        message.update_time.CopyFrom(message.create_time)
        if not message.HasField("start_time"):
            message.start_time.CopyFrom(message.create_time)
        self._schedule_next(message, _now())
        self.schedules.add(message.name, message, None)
        return message

    def get(self, name: str) -> Any:
        """The schedule called `name` (404 when unknown)."""
        return self.schedules.get(name).message

    def list_page(self, parent: str, *, filter_expression: str = "", page_size: int = 0,
             page_token: str = "") -> tuple[list[Any], str]:
        """One page of the schedules under `parent`, and the next page token."""
        with self.store.lock:
            messages = [e.message for e in self.schedules.under(parent)]
            return page(messages, filter_expression=filter_expression, page_size=page_size,
                        page_token=page_token)

    def pause(self, name: str) -> dict[str, Any]:
        """ACTIVE -> PAUSED (400 FAILED_PRECONDITION from any other state)."""
        message = self.get(name)
        with self.store.lock:
            self._require(message, _ACTIVE, "pause")
            message.state = _PAUSED
            stamp(message.last_pause_time)
            message.update_time.CopyFrom(message.last_pause_time)
            message.ClearField("next_run_time")
        return {}

    def resume(self, name: str, body: Any) -> dict[str, Any]:
        """PAUSED -> ACTIVE; `catchUp` in the body backfills runs missed while paused."""
        message = self.get(name)
        with self.store.lock:
            self._require(message, _PAUSED, "resume")
            message.state = _ACTIVE
            message.catch_up = bool(isinstance(body, dict) and body.get("catchUp", False))
            stamp(message.last_resume_time)
            message.update_time.CopyFrom(message.last_resume_time)
            since = (message.last_pause_time.ToDatetime(tzinfo=dt.timezone.utc)
                     if message.catch_up else _now())
            self._schedule_next(message, since)
        return {}

    def update(self, name: str, body: Any, update_mask: str) -> Any:
        """Changes the fields named in `update_mask` (snake_case or camelCase, comma-separated).

        Raises:
            ApiError: 400 for an empty or unsupported mask or an invalid result.
        """
        message = self.get(name)
        patch = parse(body, Schedule, "schedule")
        paths = {snake_case(p.strip()) for p in update_mask.split(",") if p.strip()}
        if not paths or not paths <= _UPDATABLE:
            raise errors.invalid_argument(
                f"update_mask {update_mask!r}: the emulator updates {sorted(_UPDATABLE)}.")
        with self.store.lock:
            candidate = type(message)()
            candidate.CopyFrom(message)
            for path in paths:
                if path.endswith("_time"):
                    candidate.ClearField(path)
                    if patch.HasField(path):
                        getattr(candidate, path).CopyFrom(getattr(patch, path))
                else:
                    setattr(candidate, path, getattr(patch, path))
            _check(to_dict(candidate))
            message.CopyFrom(candidate)
            stamp(message.update_time)
            if message.state == _ACTIVE:
                self._schedule_next(message, _now())
        return message

    def delete(self, name: str) -> dict[str, Any]:
        """Deletes the schedule; runs it started are kept."""
        self.schedules.delete(name)
        return done_operation(name, "DeleteOperationMetadata")

    def tick(self, now: dt.datetime | None = None) -> list[str]:
        """Starts the runs that are due at `now` (the clock by default).

        Returns:
            The names of the pipeline jobs started.
        """
        now = now or _now()
        started: list[str] = []
        with self.store.lock:
            for entry in list(self.schedules.entries.values()):
                message = entry.message
                while (message.state == _ACTIVE and message.HasField("next_run_time")
                       and message.next_run_time.ToDatetime(tzinfo=dt.timezone.utc) <= now):
                    due = message.next_run_time.ToDatetime(tzinfo=dt.timezone.utc)
                    job = self._start_run(message, due)
                    if job:
                        started.append(job)
                    self._schedule_next(message, due if message.catch_up else max(due, now))
        return started

    def _start_run(self, message: Any, due: dt.datetime) -> str:
        running = self.pipelines.running_count(message.name)
        if running >= message.max_concurrent_run_count and not message.allow_queueing:
            return ""
        request = to_dict(message.create_pipeline_job_request)
        job = self.pipelines.create(request.get("parent", ""), request["pipelineJob"],
                                    schedule_name=message.name)
        message.started_run_count += 1
        stamp(message.last_scheduled_run_response.scheduled_run_time, due)
        message.last_scheduled_run_response.run_response = job.name
        stamp(message.update_time)
        return str(job.name)

    def _schedule_next(self, message: Any, after: dt.datetime) -> None:
        """Sets `next_run_time`, or COMPLETED when the end time or run count is reached."""
        start = message.start_time.ToDatetime(tzinfo=dt.timezone.utc)
        moment = max(after, start - dt.timedelta(minutes=1))
        following = parse_cron(message.cron).next_after(moment)
        end = (message.end_time.ToDatetime(tzinfo=dt.timezone.utc)
               if message.HasField("end_time") else None)
        reached = 0 < message.max_run_count <= message.started_run_count
        if following is None or reached or (end is not None and following > end):
            message.state = _COMPLETED
            message.ClearField("next_run_time")
            return
        stamp(message.next_run_time, following)

    @staticmethod
    def _require(message: Any, state: Any, verb: str) -> None:
        if message.state != state:
            current = Schedule.State(message.state).name
            raise errors.failed_precondition(
                f"Cannot {verb} schedule {message.name} in state {current}.")
