"""One way into the Vertex AI SDK: the real service, or the local emulator when
`VERTEX_AI_EMULATOR_HOST` is set.

Everything in the project that talks to Vertex AI calls `init_aiplatform` first, the way every
storage call goes through `Storage` and honours `STORAGE_EMULATOR_HOST`. With the variable set,
the SDK sends plain REST calls to the emulator on loopback with anonymous credentials; without
it, nothing changes (application default credentials, the regional endpoint, gRPC).
"""

from __future__ import annotations

import os
from typing import Any

from vertex_patterns.errors import ConfigError

EMULATOR_ENV = "VERTEX_AI_EMULATOR_HOST"


def emulator_host() -> str | None:
    """The emulator's base URL from `VERTEX_AI_EMULATOR_HOST`, or None when unset or empty.

    Raises:
        ConfigError: The variable is set but is not an http(s) URL.
    """
    value = os.environ.get(EMULATOR_ENV, "").strip()
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ConfigError(
            f"{EMULATOR_ENV}={value!r} is not a URL: expected e.g. http://127.0.0.1:8085 "
            "(the line `vertex-patterns emulators up` prints)"
        )
    return value.rstrip("/")


def init_aiplatform(
    project: str,
    location: str,
    *,
    staging_bucket: str | None = None,
    credentials: Any | None = None,
) -> None:
    """Calls `aiplatform.init` for `project` and `location`, against the emulator when set.

    Args:
        project: The Google Cloud project ID.
        location: The region, e.g. ``us-central1``.
        staging_bucket: Passed on to `aiplatform.init` (gs:// URI).
        credentials: Explicit credentials; ignored against the emulator, which takes none.

    Raises:
        ConfigError: `VERTEX_AI_EMULATOR_HOST` is malformed.
    """
    from google.cloud import aiplatform

    kwargs: dict[str, Any] = {"project": project, "location": location}
    if staging_bucket is not None:
        kwargs["staging_bucket"] = staging_bucket
    host = emulator_host()
    if host is not None:
        from google.auth.credentials import AnonymousCredentials

        kwargs.update(api_endpoint=host, api_transport="rest",
                      credentials=AnonymousCredentials())
        _resolve_project_numbers_at(host)
    elif credentials is not None:
        kwargs["credentials"] = credentials
    aiplatform.init(**kwargs)


def _resolve_project_numbers_at(host: str) -> None:
    """Sends the SDK's Cloud Resource Manager look-ups to the emulator.

    `PipelineJob.submit` checks that a ``gs://`` pipeline root's bucket belongs to the project,
    asking Cloud Resource Manager for the project's number through a client built without
    client options, so it cannot be pointed at a local endpoint: against the emulators it
    retried an unreachable service for about 45 s and then logged a failed check. This points
    that one look-up (`aiplatform.utils.resource_manager_utils.get_project_number`) at the
    emulator, through the real `resourcemanager_v3` client over REST, so the check runs and
    answers in milliseconds. Only with `VERTEX_AI_EMULATOR_HOST` set.
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import resourcemanager_v3
    from google.cloud.aiplatform.utils import resource_manager_utils

    def get_project_number(project_id: str, credentials: Any = None) -> str:
        client = resourcemanager_v3.ProjectsClient(
            credentials=AnonymousCredentials(), transport="rest",
            client_options={"api_endpoint": host})
        project = client.get_project(name=f"projects/{project_id}")
        return str(project.name.split("/", 1)[1])

    resource_manager_utils.get_project_number = get_project_number
