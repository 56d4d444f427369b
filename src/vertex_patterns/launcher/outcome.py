"""What ended an attempt, read from the job's state and error the way Vertex AI reports them.

- SUCCEEDED -> succeeded; CANCELLED -> cancelled.
- FAILED with code 8 (RESOURCE_EXHAUSTED, "Resources are insufficient in region"): a job that
  never started (no `startTime`) found no capacity -> stockout; one that ran and was then
  failed is a Spot job whose preemptions outlasted Vertex AI's restarts -> preempted.
- A replica exit of the trainer's "preempted, restart to resume" codes (75, 76) -> preempted.
- A replica exit 3 (the trainer's health incident) -> unhealthy; exit 4 (hang watchdog) -> hung.
- Any other replica non-zero exit (code 3, "exited with a non-zero status of N") -> user_error,
  with N kept so the policy can retry exit codes the user listed.
- FAILED with code 13 or an unrecognised failure -> internal.
- A create call answered 429 RESOURCE_EXHAUSTED -> quota; 400 -> user_error; 5xx -> internal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from vertex_patterns.training.config import (
    EXIT_HUNG,
    EXIT_PREEMPTED,
    EXIT_PREEMPTED_UNSAVED,
    EXIT_UNHEALTHY,
)


class Outcome(str, Enum):
    """How an attempt ended."""

    SUCCEEDED = "succeeded"
    PREEMPTED = "preempted"
    STOCKOUT = "stockout"
    QUOTA = "quota"
    USER_ERROR = "user_error"
    INTERNAL = "internal"
    CANCELLED = "cancelled"
    UNHEALTHY = "unhealthy"
    """The trainer stopped on a health incident it could not fix (exit 3): not retried."""
    HUNG = "hung"
    """The trainer's hang watchdog fired (exit 4): retried in place, a bounded number of times."""


CAPACITY_OUTCOMES = frozenset({Outcome.PREEMPTED, Outcome.STOCKOUT, Outcome.QUOTA})
"""Failures that say "no (more) capacity here", not "your job is wrong"."""

_CODE_RESOURCE_EXHAUSTED = 8
_CODE_INVALID_ARGUMENT = 3
_CODE_INTERNAL = 13
_EXIT = re.compile(r"exited with a non-zero status of (\d+)")


@dataclass(frozen=True)
class Classified:
    """An outcome, the error message behind it, and the user's exit code when there is one."""

    outcome: Outcome
    error: str | None = None
    exit_code: int | None = None


def classify_job(job: Any) -> Classified | None:
    """The outcome of an ended `aiplatform_v1.types.CustomJob`; None while it is still going."""
    from google.cloud.aiplatform_v1.types import JobState

    state = JobState(job.state)
    if state == JobState.JOB_STATE_SUCCEEDED:
        return Classified(Outcome.SUCCEEDED)
    if state in (JobState.JOB_STATE_CANCELLED, JobState.JOB_STATE_CANCELLING):
        return Classified(Outcome.CANCELLED, job.error.message or "cancelled") \
            if state == JobState.JOB_STATE_CANCELLED else None
    if state not in (JobState.JOB_STATE_FAILED, JobState.JOB_STATE_EXPIRED):
        return None
    code, message = int(job.error.code), str(job.error.message)
    started = bool(job.start_time) and job.start_time.timestamp() > 0
    return classify_failure(code, message, started=started)


def classify_failure(code: int, message: str, *, started: bool) -> Classified:
    """The outcome of a FAILED job with error `code`/`message`; `started`: it ever ran."""
    if code == _CODE_RESOURCE_EXHAUSTED or "Resources are insufficient" in message:
        if "quota" in message.lower() and not started:
            return Classified(Outcome.QUOTA, message)
        return Classified(Outcome.PREEMPTED if started else Outcome.STOCKOUT, message)
    match = _EXIT.search(message)
    if match:
        exit_code = int(match.group(1))
        if exit_code in (EXIT_PREEMPTED, EXIT_PREEMPTED_UNSAVED):
            return Classified(Outcome.PREEMPTED, message, exit_code)
        if exit_code == EXIT_UNHEALTHY:
            return Classified(Outcome.UNHEALTHY, message, exit_code)
        if exit_code == EXIT_HUNG:
            return Classified(Outcome.HUNG, message, exit_code)
        return Classified(Outcome.USER_ERROR, message, exit_code)
    if code == _CODE_INVALID_ARGUMENT:
        return Classified(Outcome.USER_ERROR, message)
    return Classified(Outcome.INTERNAL, message or f"job failed with code {code}")


def classify_api_error(exc: Exception) -> Classified:
    """The outcome of a create call that raised `exc` (a google.api_core exception)."""
    from google.api_core import exceptions as api

    message = f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}"
    if isinstance(exc, (api.TooManyRequests, api.ResourceExhausted)):
        return Classified(Outcome.QUOTA, message)
    if isinstance(exc, (api.BadRequest, api.PermissionDenied, api.NotFound, api.Unauthenticated)):
        return Classified(Outcome.USER_ERROR, message)
    return Classified(Outcome.INTERNAL, message)
