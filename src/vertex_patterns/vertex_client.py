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
    elif credentials is not None:
        kwargs["credentials"] = credentials
    aiplatform.init(**kwargs)
