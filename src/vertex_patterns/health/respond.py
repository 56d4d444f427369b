"""Acting from outside the job: cancel the CustomJob of a run whose verdict is critical.

    report = check_run(run_dir)
    report = cancel_on_critical(report, "projects/p/locations/us-central1/customJobs/123")

Goes through the aiplatform SDK's job client (`launcher.jobs.JobClient`), so
`VERTEX_AI_EMULATOR_HOST` points it at the local emulator. With `dry_run` nothing is sent;
the findings say what would have been done.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from vertex_patterns.errors import ConfigError
from vertex_patterns.health.findings import HealthReport, Severity, Verdict

log = logging.getLogger("vertex_patterns.health")

_ENDED = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
          "JOB_STATE_CANCELLING", "JOB_STATE_EXPIRED")


def parse_job_name(name: str) -> tuple[str, str]:
    """(project, region) of `projects/P/locations/R/customJobs/ID`.

    Raises:
        ConfigError: Not a CustomJob resource name.
    """
    parts = name.split("/")
    if len(parts) != 6 or parts[0] != "projects" or parts[2] != "locations" or \
            parts[4] != "customJobs" or not all(parts):
        raise ConfigError(f"--cancel-job {name!r} is not a CustomJob name: give "
                          "projects/P/locations/REGION/customJobs/ID")
    return parts[1], parts[3]


def cancel_on_critical(report: HealthReport, job_name: str, *, dry_run: bool = False,
                       client: Any | None = None) -> HealthReport:
    """Cancels `job_name` when `report` is critical; the critical findings name the action.

    Args:
        report: The health report of the job's run directory.
        job_name: The CustomJob resource name.
        dry_run: Report what would be done; send nothing.
        client: A `launcher.jobs.JobClient` (one for the job's project by default).

    Returns:
        The report with the action on each critical finding (unchanged when not critical).

    Raises:
        ConfigError: A malformed job name.
        google.api_core.exceptions.GoogleAPICallError: The get or cancel call failed.
    """
    project, _ = parse_job_name(job_name)
    if report.verdict != Verdict.CRITICAL:
        return report
    if dry_run:
        action = f"would cancel {job_name} (dry run)"
    else:
        from google.cloud.aiplatform_v1.types import JobState

        from vertex_patterns.launcher.jobs import JobClient

        client = client or JobClient(project)
        state = JobState(client.get(job_name).state).name
        if state in _ENDED:
            action = f"job {job_name} already {state.removeprefix('JOB_STATE_').lower()}"
        else:
            client.cancel(job_name)
            action = f"cancelled {job_name}"
            log.warning("health: critical verdict, cancelled %s", job_name)
    findings = tuple(replace(f, action=action) if f.severity == Severity.CRITICAL and
                     f.action == "none" else f for f in report.findings)
    return replace(report, findings=findings)
