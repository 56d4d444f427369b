"""`VertexEmulator`: the Vertex AI emulator on a loopback port, as a context manager.

    with VertexEmulator(scenario=Scenario(timings=Timings(grace_seconds=2))) as vertex:
        os.environ["VERTEX_AI_EMULATOR_HOST"] = vertex.url
        init_aiplatform("my-project", "us-central1")
        aiplatform.CustomJob(...).run()

The server runs in threads of the calling process; the jobs' workers are child processes in
their own process groups. `stop()` cancels unfinished jobs and shuts the server down.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from vertex_patterns.emulators.gcs import EMULATOR_ENV as GCS_ENV
from vertex_patterns.emulators.gcs import free_port
from vertex_patterns.emulators.vertex.custom_jobs import CustomJobService
from vertex_patterns.emulators.vertex.pipeline_jobs import PipelineJobService
from vertex_patterns.emulators.vertex.scenario import FaultInjector, Scenario
from vertex_patterns.emulators.vertex.schedules import ScheduleService
from vertex_patterns.emulators.vertex.server import VertexApi, make_server
from vertex_patterns.emulators.vertex.store import ResourceStore
from vertex_patterns.vertex_client import EMULATOR_ENV as VERTEX_ENV

log = logging.getLogger("vertex_patterns.emulators.vertex")

# Workers still running at shutdown get this long between SIGTERM and SIGKILL (at most).
_SHUTDOWN_GRACE_SECONDS = 5.0
_TICK_SECONDS = 1.0


class VertexEmulator:
    """The Vertex AI REST API (custom jobs, pipeline jobs, schedules) on loopback.

    Args:
        port: The port; a free one by default.
        host: The address to bind (loopback).
        scenario: Faults and timings; no faults and default timings when None.
        state_dir: Where job logs and work directories go; a temporary directory (removed by
            `stop`) when None.
        job_env: Variables every job gets on top of the emulator's own environment (custom
            job workers and pipeline tasks), e.g. `STORAGE_EMULATOR_HOST` so that jobs reach
            the GCS emulator as jobs on Vertex reach GCS. `VERTEX_AI_EMULATOR_HOST` is always
            set to this emulator's URL.
    """

    def __init__(self, *, port: int | None = None, host: str = "127.0.0.1",
                 scenario: Scenario | None = None, state_dir: str | None = None,
                 job_env: Mapping[str, str] | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self._own_state_dir = state_dir is None
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="vertex-emulator-")
        self.job_env = {**(job_env or {}), VERTEX_ENV: self.url}
        self.store = ResourceStore()
        self.initial_scenario = scenario or Scenario()
        injector = FaultInjector(self.initial_scenario)
        self.custom_jobs = CustomJobService(self.store, self.state_dir, injector, self.job_env)
        self.pipeline_jobs = PipelineJobService(self.store, self.state_dir, injector,
                                               self.job_env)
        self.schedules = ScheduleService(self.store, self.pipeline_jobs)
        self.api = VertexApi(self.custom_jobs, self.pipeline_jobs, self.schedules,
                             self.set_scenario, self.project)
        self._server: Any = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    @property
    def scenario(self) -> Scenario:
        """The scenario new jobs get their faults and timings from."""
        return self.custom_jobs.injector.scenario

    def set_scenario(self, scenario: Scenario) -> None:
        """Replaces the scenario for jobs created from now on (running jobs keep theirs)."""
        injector = FaultInjector(scenario)
        self.custom_jobs.injector = injector
        self.pipeline_jobs.injector = injector

    def project(self, project_id: str) -> dict[str, Any]:
        """Cloud Resource Manager's Project for `project_id`.

        The emulators are one project: its number is the one the GCS emulator stamps on the
        project's buckets (asked once per call), so the SDK's bucket-ownership check on a
        pipeline root passes for buckets on the GCS emulator, as it does on Google Cloud for
        the project's own buckets.
        """
        number = "0"
        gcs = self.job_env.get(GCS_ENV)
        if gcs:
            try:
                import requests

                listing = requests.get(f"{gcs.rstrip('/')}/storage/v1/b",
                                       params={"project": project_id, "maxResults": "1"},
                                       timeout=5).json()
                number = str(listing.get("items", [{}])[0].get("projectNumber", number))
            except (OSError, ValueError, IndexError) as exc:
                log.warning("cannot read the GCS emulator's project number: %s", exc)
        return {"name": f"projects/{number}", "projectId": project_id, "state": "ACTIVE"}

    def reset_scenario(self) -> None:
        """Goes back to the scenario the emulator was created with."""
        self.set_scenario(self.initial_scenario)

    def start(self) -> VertexEmulator:
        """Binds the port and starts serving.

        Raises:
            OSError: The port is taken.
        """
        self._server = make_server(self.host, self.port, self.api)
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                             name="vertex-emulator-http", daemon=True),
            threading.Thread(target=self._tick, name="vertex-emulator-schedules", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def _tick(self) -> None:
        while not self._stopping.wait(_TICK_SECONDS):
            try:
                self.schedules.tick()
            except Exception:  # a bad schedule must not stop the others: log and carry on
                log.exception("schedule tick failed")

    def stop(self) -> None:
        """Cancels unfinished jobs (their workers get a short grace), stops serving."""
        self._stopping.set()
        grace = min(self.scenario.timings.grace_seconds, _SHUTDOWN_GRACE_SECONDS)
        self.pipeline_jobs.stop_all(grace_seconds=grace)
        self.custom_jobs.stop_all(grace_seconds=grace)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        if self._own_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def job_record(self, name: str) -> dict[str, Any]:
        """What the emulator recorded about custom job `name`: attempts, pids, log dirs."""
        return self.custom_jobs.record(name)

    def worker_log(self, name: str, replica: str = "workerpool0-0") -> str:
        """Everything `replica` of custom job `name` wrote to stdout/stderr, all attempts."""
        parts = []
        for attempt in self.job_record(name)["attempts"]:
            path = f"{attempt['log_dir']}/{replica}.log"
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    parts.append(f.read())
            except FileNotFoundError:
                continue
        return "".join(parts)

    def __enter__(self) -> VertexEmulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
