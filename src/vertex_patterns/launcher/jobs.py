"""CustomJob calls per region through the google-cloud-aiplatform SDK's GAPIC job client.

`init_aiplatform` points the SDK at Vertex AI or, with VERTEX_AI_EMULATOR_HOST set, at the local
emulator; the client is the SDK's own (`JobClientWithOverride`), one per region, so requests go
to that region's endpoint exactly as `aiplatform.CustomJob` sends them.
"""

from __future__ import annotations

import logging
from typing import Any

from vertex_patterns.vertex_client import init_aiplatform

log = logging.getLogger("vertex_patterns.launcher")


class JobClient:
    """create / get / cancel / find CustomJobs of `project` in any region.

    Args:
        project: The Google Cloud project ID.
    """

    def __init__(self, project: str) -> None:
        self.project = project
        self._clients: dict[str, Any] = {}

    def _client(self, region: str) -> Any:
        if region not in self._clients:
            from google.cloud.aiplatform import initializer, utils

            init_aiplatform(self.project, region)
            self._clients[region] = initializer.global_config.create_client(
                client_class=utils.JobClientWithOverride, location_override=region)
        return self._clients[region]

    def parent(self, region: str) -> str:
        """``projects/P/locations/R``."""
        return f"projects/{self.project}/locations/{region}"

    def create(self, region: str, job: Any) -> Any:
        """Submits `job` (an `aiplatform_v1.types.CustomJob`) in `region`; returns the created
        job. Raises google.api_core exceptions as the API answers."""
        return self._client(region).create_custom_job(parent=self.parent(region),
                                                      custom_job=job)

    def get(self, name: str) -> Any:
        """The CustomJob called `name`."""
        return self._client(region_of(name)).get_custom_job(name=name)

    def cancel(self, name: str) -> None:
        """Asks Vertex AI to cancel job `name` (it ends CANCELLED once its workers stopped)."""
        self._client(region_of(name)).cancel_custom_job(name=name)

    def find(self, region: str, display_name: str) -> list[Any]:
        """Jobs in `region` whose display name is `display_name`."""
        pages = self._client(region).list_custom_jobs(
            request={"parent": self.parent(region), "filter": f'display_name="{display_name}"'})
        return list(pages)


def region_of(name: str) -> str:
    """The region in a resource name ``projects/P/locations/R/customJobs/ID``."""
    parts = name.split("/")
    if len(parts) < 6 or parts[2] != "locations":
        raise ValueError(f"not a CustomJob resource name: {name!r}")
    return parts[3]
