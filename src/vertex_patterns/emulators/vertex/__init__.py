"""A local Vertex AI: the REST API the google-cloud-aiplatform SDK speaks, on loopback.

Custom jobs run their containers' commands as local processes with Vertex AI's environment;
pipeline jobs and schedules are validated, stored and move through their states; fault
scenarios inject Spot stockouts, preemptions, quota errors and internal errors per region.
Point the SDK at it with `vertex_patterns.vertex_client.init_aiplatform` and
`VERTEX_AI_EMULATOR_HOST`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vertex_patterns.emulators.vertex.scenario import RegionFaults, Scenario, Timings
from vertex_patterns.vertex_client import EMULATOR_ENV

if TYPE_CHECKING:
    from vertex_patterns.emulators.vertex.emulator import VertexEmulator

__all__ = ["EMULATOR_ENV", "RegionFaults", "Scenario", "Timings", "VertexEmulator"]


def __getattr__(name: str) -> Any:
    # The emulator pulls in the aiplatform protos (seconds to import); scenarios do not.
    if name == "VertexEmulator":
        from vertex_patterns.emulators.vertex.emulator import VertexEmulator

        return VertexEmulator
    raise AttributeError(name)
