"""Where to read a failed job's logs: the last lines of the failing replica under the
emulator, the Cloud Logging query and link on Vertex AI.

Vertex AI writes each replica's stdout and stderr to Cloud Logging as resource type
``ml_job`` with labels ``job_id`` and ``task_name`` (the filters `gcloud ai custom-jobs
stream-logs` uses); the emulator serves them itself (`vertex_patterns.emulators.vertex.logs`).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote

from vertex_patterns.vertex_client import emulator_host

log = logging.getLogger("vertex_patterns.launcher")

TAIL_LINES = 20
_REPLICA = re.compile(r"The replica (workerpool\d+-\d+) exited")


def failing_replica(error: str | None) -> str:
    """The replica a job error names (``workerpool0-0`` when it names none)."""
    match = _REPLICA.search(error or "")
    return match.group(1) if match else "workerpool0-0"


def cloud_logging_query(job_name: str, replica: str | None = None) -> str:
    """The Cloud Logging query for job `job_name`'s logs (one replica's when given)."""
    job_id = job_name.rsplit("/", 1)[-1]
    query = f'resource.type="ml_job"\nresource.labels.job_id="{job_id}"'
    if replica:
        query += f'\nresource.labels.task_name="{replica}"'
    return query


def cloud_logging_link(job_name: str, replica: str | None = None) -> str:
    """The Cloud Console Logs Explorer URL showing `cloud_logging_query`."""
    project = job_name.split("/")[1]
    query = quote(cloud_logging_query(job_name, replica), safe="")
    return f"https://console.cloud.google.com/logs/query;query={query}?project={project}"


def failure_log_hint(job_name: str, error: str | None, *, lines: int = TAIL_LINES) -> str:
    """What to show with a user_error: the failing replica's last `lines` lines under the
    emulator, the Cloud Logging query and link on Vertex AI. Never raises: logs that cannot
    be read are reported in the text."""
    replica = failing_replica(error)
    host = emulator_host()
    if host is None:
        return (f"logs of {replica}: {cloud_logging_link(job_name, replica)}\n"
                f"  query: {' AND '.join(cloud_logging_query(job_name, replica).splitlines())}")
    from vertex_patterns.emulators.vertex.logs import fetch_log
    from vertex_patterns.errors import VertexPatternsError

    try:
        text = fetch_log(host, job_name, replica=replica, tail=lines)["text"]
    except VertexPatternsError as exc:
        return f"logs of {replica}: cannot read them ({exc})"
    job_id = job_name.rsplit("/", 1)[-1]
    body = "".join(f"  | {line}\n" for line in text.splitlines()) or "  (empty)\n"
    return (f"last {lines} lines of {replica} (all of it: vertex-patterns emulators logs "
            f"{job_id} --replica {replica}):\n{body}").rstrip("\n")
