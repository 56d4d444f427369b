"""The REST surface: Vertex AI's URL patterns routed to the services, JSON in and out.

Paths are those of the SDK's REST transport (`aiplatform_v1.services.*.transports.rest_base`),
under ``/v1/`` or ``/v1beta1/``. The emulator adds ``/_emulator/...``: ``health``, ``scenario``
(PUT a scenario object to change faults and timings for jobs created afterwards) and
``v1/{custom job name}`` (the job's attempts, pids and log directories) and ``logs/{custom job
name or ID}`` (a replica's stdout and stderr, see `logs`); and Cloud Resource Manager's
``GET /v3/projects/ID``, which the SDK needs to check a pipeline root's owner.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from google.cloud.aiplatform_v1.types import CustomJob, PipelineJob, Schedule

from vertex_patterns.emulators.vertex.codec import to_json
from vertex_patterns.emulators.vertex.custom_jobs import CustomJobService
from vertex_patterns.emulators.vertex.errors import ApiError, invalid_argument, unimplemented
from vertex_patterns.emulators.vertex.pipeline_jobs import PipelineJobService
from vertex_patterns.emulators.vertex.request_guard import check_loopback_bind, refusal
from vertex_patterns.emulators.vertex.scenario import Scenario
from vertex_patterns.emulators.vertex.schedules import ScheduleService
from vertex_patterns.emulators.vertex.store import check_filter

log = logging.getLogger("vertex_patterns.emulators.vertex")

_LOC = r"(?P<parent>projects/[^/]+/locations/[^/:]+)"
_V = r"^/v1(?:beta1)?/"
Handler = Callable[[dict[str, str], dict[str, str], Any], Any]
# What each collection holds, for checking list filters against its fields.
_RESOURCE_TYPES = {"customJobs": CustomJob, "pipelineJobs": PipelineJob, "schedules": Schedule}


class VertexApi:
    """Routes requests to the custom job, pipeline job and schedule services.

    Args:
        custom_jobs: The custom job service.
        pipeline_jobs: The pipeline job service.
        schedules: The schedule service.
        set_scenario: Called with a new `Scenario` when a client PUTs one.
        projects: Answers Cloud Resource Manager's ``GET /v3/projects/ID`` (see
            `VertexEmulator.project`).
    """

    def __init__(self, custom_jobs: CustomJobService, pipeline_jobs: PipelineJobService,
                 schedules: ScheduleService, set_scenario: Callable[[Scenario], None],
                 projects: Callable[[str], dict[str, Any]] | None = None) -> None:
        self.custom_jobs = custom_jobs
        self.pipeline_jobs = pipeline_jobs
        self.schedules = schedules
        self.set_scenario = set_scenario
        cj, pj, sc = custom_jobs, pipeline_jobs, schedules
        projects = projects or (lambda project: {"name": "projects/0", "projectId": project})
        routes: list[tuple[str, str, Handler]] = [
            ("POST", rf"{_V}{_LOC}/customJobs$", lambda g, q, b: cj.create(g["parent"], b)),
            ("GET", rf"{_V}{_LOC}/customJobs$", lambda g, q, b: self._list(
                "customJobs", cj.list_page, g, q)),
            ("GET", rf"{_V}(?P<name>{_LOC}/customJobs/[^/:]+)$", lambda g, q, b: cj.get(
                g["name"])),
            ("POST", rf"{_V}(?P<name>{_LOC}/customJobs/[^/:]+):cancel$",
             lambda g, q, b: cj.cancel(g["name"])),
            ("DELETE", rf"{_V}(?P<name>{_LOC}/customJobs/[^/:]+)$",
             lambda g, q, b: cj.delete(g["name"])),
            ("POST", rf"{_V}{_LOC}/pipelineJobs$", lambda g, q, b: pj.create(
                g["parent"], b, q.get("pipelineJobId", ""))),
            ("GET", rf"{_V}{_LOC}/pipelineJobs$", lambda g, q, b: self._list(
                "pipelineJobs", pj.list_page, g, q)),
            ("GET", rf"{_V}(?P<name>{_LOC}/pipelineJobs/[^/:]+)$", lambda g, q, b: pj.get(
                g["name"])),
            ("POST", rf"{_V}(?P<name>{_LOC}/pipelineJobs/[^/:]+):cancel$",
             lambda g, q, b: pj.cancel(g["name"])),
            ("DELETE", rf"{_V}(?P<name>{_LOC}/pipelineJobs/[^/:]+)$",
             lambda g, q, b: pj.delete(g["name"])),
            ("POST", rf"{_V}{_LOC}/schedules$", lambda g, q, b: sc.create(g["parent"], b)),
            ("GET", rf"{_V}{_LOC}/schedules$", lambda g, q, b: self._list(
                "schedules", sc.list_page, g, q)),
            ("GET", rf"{_V}(?P<name>{_LOC}/schedules/[^/:]+)$", lambda g, q, b: sc.get(
                g["name"])),
            ("PATCH", rf"{_V}(?P<name>{_LOC}/schedules/[^/:]+)$", lambda g, q, b: sc.update(
                g["name"], b, q.get("updateMask", ""))),
            ("POST", rf"{_V}(?P<name>{_LOC}/schedules/[^/:]+):pause$",
             lambda g, q, b: sc.pause(g["name"])),
            ("POST", rf"{_V}(?P<name>{_LOC}/schedules/[^/:]+):resume$",
             lambda g, q, b: sc.resume(g["name"], b)),
            ("DELETE", rf"{_V}(?P<name>{_LOC}/schedules/[^/:]+)$",
             lambda g, q, b: sc.delete(g["name"])),
            ("GET", r"^/v3/projects/(?P<project>[^/:]+)$", lambda g, q, b: projects(
                g["project"])),
            ("GET", r"^/_emulator/health$", lambda g, q, b: {"ok": True}),
            ("PUT", r"^/_emulator/scenario$", lambda g, q, b: self._put_scenario(b)),
            ("GET", rf"^/_emulator/v1/(?P<name>{_LOC}/customJobs/[^/:]+)$",
             lambda g, q, b: cj.record(g["name"])),
            ("GET", r"^/_emulator/logs/(?P<job>.+)$", lambda g, q, b: self._log(g["job"], q)),
        ]
        self._routes = [(m, re.compile(p), h) for m, p, h in routes]

    def dispatch(self, method: str, target: str, body: Any) -> tuple[int, dict[str, Any]]:
        """Serves one request; returns the HTTP status and the JSON body."""
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        enums_as_ints = "enum-encoding=int" in query.get("$alt", "")
        try:
            for route_method, pattern, handler in self._routes:
                m = pattern.match(url.path)
                if m and route_method == method:
                    result = handler(m.groupdict(), query, body)
                    if not isinstance(result, dict):
                        result = to_json(result, enums_as_ints=enums_as_ints)
                    return 200, result
            raise unimplemented(method, url.path)
        except ApiError as exc:
            return exc.http_status, exc.body()

    def _list(self, key: str, lister: Callable[..., tuple[list[Any], str]],
              groups: dict[str, str], query: dict[str, str]) -> dict[str, Any]:
        try:
            size = int(query.get("pageSize", "0") or 0)
        except ValueError:
            raise invalid_argument(f"Invalid page_size {query['pageSize']!r}") from None
        check_filter(query.get("filter", ""), _RESOURCE_TYPES[key])
        items, token = lister(groups["parent"], filter_expression=query.get("filter", ""),
                              page_size=size, page_token=query.get("pageToken", ""))
        enums_as_ints = "enum-encoding=int" in query.get("$alt", "")
        out: dict[str, Any] = {key: [to_json(m, enums_as_ints=enums_as_ints) for m in items]}
        if token:
            out["nextPageToken"] = token
        return out

    def _log(self, job: str, query: dict[str, str]) -> dict[str, Any]:
        try:
            offset = int(query.get("offset", "0") or 0)
            tail = int(query["tail"]) if query.get("tail") else None
        except ValueError:
            raise invalid_argument("offset and tail must be integers") from None
        return self.custom_jobs.log(job, replica=query.get("replica", "workerpool0-0"),
                                    offset=offset, tail=tail)

    def _put_scenario(self, body: Any) -> dict[str, Any]:
        try:
            scenario = Scenario.from_dict(body if isinstance(body, dict) else {})
        except (ValueError, TypeError) as exc:
            raise invalid_argument(f"Invalid scenario: {exc}") from None
        self.set_scenario(scenario)
        return {"ok": True}


def make_server(host: str, port: int, api: VertexApi) -> ThreadingHTTPServer:
    """A threading HTTP server on `host:port` that serves `api` to local clients only.

    Requests a web page could send are refused before they are read (`request_guard`).

    Raises:
        OSError: The port is taken.
        ValueError: `host` is not a loopback address.
    """
    check_loopback_bind(host)

    class RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            refused = refusal(self.command, self.headers, listen_host=host, listen_port=port)
            if refused is not None:
                # The body is never read: close the connection instead of draining it.
                self.close_connection = True
                log.warning("refused %s %s: %s", self.command, self.path, refused.message)
                return self._reply(refused.http_status, refused.body())
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw.strip() else {}
            except json.JSONDecodeError as exc:
                status, payload = 400, invalid_argument(
                    f"Invalid JSON payload received. {exc.msg}.").body()
            else:
                status, payload = api.dispatch(self.command, self.path, body)
            self._reply(status, payload)

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _serve

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    server = ThreadingHTTPServer((host, port), RequestHandler)
    server.daemon_threads = True
    return server
