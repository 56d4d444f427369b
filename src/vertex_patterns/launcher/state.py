"""The launch's restart record: every CustomJob it created, in KFP's `gcp_resources` format.

google-cloud-pipeline-components writes the job it launched to the `gcp_resources` output
before waiting on it, so that a retried or cancelled pipeline task can find the job again:

    {"resources": [{"resourceType": "CustomJob",
                    "resourceUri": "https://us-central1-aiplatform.googleapis.com/v1/projects/P/
                                    locations/us-central1/customJobs/123"}]}

The launcher lists every job of the launch there, oldest first, the current one last. A
restarted launcher reads them back: ended jobs replay into the planner, a still-running last one
is re-attached instead of being launched again. Written atomically (temporary file + rename).
"""

from __future__ import annotations

import json
import os
import re

from vertex_patterns.errors import ConfigError
from vertex_patterns.storage.local import atomic_write

_URI = re.compile(r"^https://([a-z0-9-]+)-aiplatform\.googleapis\.com/v1/"
                  r"(projects/[^/]+/locations/([a-z0-9-]+)/customJobs/[^/]+)$")


def resource_uri(name: str) -> str:
    """The `resourceUri` of CustomJob `name` (``projects/P/locations/R/customJobs/ID``)."""
    region = name.split("/")[3]
    return f"https://{region}-aiplatform.googleapis.com/v1/{name}"


def job_name(uri: str) -> str:
    """The CustomJob resource name in a `resourceUri`.

    Raises:
        ConfigError: Not a CustomJob URI.
    """
    match = _URI.match(uri)
    if not match:
        raise ConfigError(f"state file: {uri!r} is not a Vertex AI CustomJob URI")
    return match.group(2)


class StateFile:
    """The `gcp_resources` file at `path` (None: keep nothing, nothing to re-attach to)."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def load(self) -> list[str]:
        """The job names recorded so far, oldest first ([] when there is no file yet).

        Raises:
            ConfigError: The file exists but is not a gcp_resources document of CustomJobs.
        """
        if self.path is None or not os.path.exists(self.path):
            return []
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            resources = data["resources"]
            return [job_name(r["resourceUri"]) for r in resources
                    if r.get("resourceType") == "CustomJob"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"--state-file {self.path}: not a gcp_resources file ({exc})"
                              ) from exc

    def save(self, names: list[str]) -> None:
        """Records `names` (every job of the launch so far)."""
        if self.path is None:
            return
        body = {"resources": [{"resourceType": "CustomJob", "resourceUri": resource_uri(n)}
                              for n in names]}
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        with atomic_write(os.path.abspath(self.path), fsync=True) as f:
            f.write(json.dumps(body).encode())
