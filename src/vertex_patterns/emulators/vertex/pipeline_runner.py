"""The life of one pipeline job: queued, checked, executed for real, ended as Vertex AI ends it.

States go QUEUED -> PENDING -> RUNNING -> SUCCEEDED | FAILED | CANCELLING -> CANCELLED. The
DAG runs in a child process (`pipeline_exec`) under kfp's local orchestrator; this thread
tails the events it writes and keeps the job's ``jobDetail.taskDetails`` current, so the SDK's
`PipelineJob.task_details` shows each task's state, times, output parameters
(``execution.metadata["output:NAME"]``, as on Vertex AI) and artifacts while the job runs.

Before anything runs, every task's executor is checked the way Vertex AI would fail it: an
image the emulator cannot stand in for (see `images`), a container component (kfp.local runs
lightweight Python components only), or packages to install that this environment lacks. The
job then fails at once, naming the task.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from google.cloud.aiplatform_v1.types import PipelineState, PipelineTaskDetail

from vertex_patterns.emulators.vertex import errors
from vertex_patterns.emulators.vertex.codec import stamp, to_dict
from vertex_patterns.emulators.vertex.images import UnrunnableImageError, resolve_image
from vertex_patterns.emulators.vertex.scenario import Timings

log = logging.getLogger("vertex_patterns.emulators.vertex")

TERMINAL = frozenset({PipelineState.PIPELINE_STATE_SUCCEEDED, PipelineState.PIPELINE_STATE_FAILED,
                      PipelineState.PIPELINE_STATE_CANCELLED})
_TaskState = PipelineTaskDetail.State
_PIP_INSTALL = re.compile(r"pip install\b(?P<args>.*?)(?:&&|\n|$)")


def executor_problems(spec: dict[str, Any]) -> list[str]:
    """What in a compiled PipelineSpec (JSON) the emulator cannot run, one line per task."""
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    problems = []
    for label, executor in sorted(executors.items()):
        if "importer" in executor:
            continue
        container = executor.get("container")
        if container is None:
            problems.append(f"{label}: unsupported executor {sorted(executor)}")
            continue
        image = container.get("image", "")
        try:
            resolve_image(image)
        except UnrunnableImageError as exc:
            problems.append(f"{label}: {exc}")
            continue
        command = " ".join([*container.get("command", []), *container.get("args", [])])
        if "kfp.dsl.executor_main" not in command or "ephemeral_component" not in command:
            problems.append(
                f"{label}: a container component (image {image}): the emulator runs KFP "
                "lightweight Python components (@dsl.component) only, as kfp.local does")
            continue
        missing = [r for r in _pip_requirements(command) if not _satisfied(r)]
        if missing:
            problems.append(
                f"{label}: installs {', '.join(missing)}, which this environment lacks; the "
                "emulator installs nothing: pip install them locally (or build them into the "
                "image and use packages_to_install=[])")
    return problems


def _pip_requirements(command: str) -> list[str]:
    requirements: list[str] = []
    for m in _PIP_INSTALL.finditer(command):
        try:
            tokens = shlex.split(m.group("args"))
        except ValueError:
            tokens = m.group("args").split()
        requirements.extend(t for t in tokens if t and not t.startswith(("-", "$")))
    return requirements


def _satisfied(requirement: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import InvalidRequirement, Requirement

    try:
        req = Requirement(requirement)
    except InvalidRequirement:
        return False
    if req.marker is not None and not req.marker.evaluate():
        return True  # not meant for this interpreter
    try:
        installed = version(req.name)
    except PackageNotFoundError:
        return False
    return not req.specifier or req.specifier.contains(installed, prereleases=True)


class PipelineJobRunner(threading.Thread):
    """Drives one pipeline job from creation to its end.

    Args:
        message: The job's PipelineJob protobuf, mutated under `lock`.
        lock: The store's lock.
        timings: Queue and provisioning times, grace on cancel, poll interval.
        job_dir: Where the run keeps its spec, events, logs and local artifacts.
        job_env: Variables the tasks get on top of the emulator's environment.
    """

    def __init__(self, *, message: Any, lock: threading.RLock, timings: Timings, job_dir: str,
                 job_env: Mapping[str, str] | None = None) -> None:
        super().__init__(name=f"vertex-pipeline-{message.name.rsplit('/', 1)[-1]}", daemon=True)
        self.message = message
        self.lock = lock
        self.timings = timings
        self.job_dir = job_dir
        self.job_env = dict(job_env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self._cancel = threading.Event()
        self._cancel_grace: float | None = None
        self._events_offset = 0
        self._tasks: dict[int, Any] = {}

    def request_cancel(self, *, grace_seconds: float | None = None) -> None:
        """Asks the runner to cancel the job; the running task gets SIGTERM, then SIGKILL."""
        if grace_seconds is not None:
            self._cancel_grace = grace_seconds
        self._cancel.set()

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a bug in the emulator: end the job, never hang its pollers
            log.exception("emulator pipeline job %s crashed", self.message.name)
            self._kill(0)
            self._finish(PipelineState.PIPELINE_STATE_FAILED, errors.CODE_INTERNAL,
                         f"{errors.INTERNAL_ERROR_MESSAGE} (emulator: {exc})")

    def _run(self) -> None:
        t = self.timings
        if self._cancel.wait(t.queued_seconds):
            return self._cancelled()
        self._set_state(PipelineState.PIPELINE_STATE_PENDING)
        with self.lock:
            job = to_dict(self.message)
        spec = job["pipelineSpec"]
        problems = executor_problems(spec)
        if problems:
            return self._finish(PipelineState.PIPELINE_STATE_FAILED,
                                errors.CODE_INVALID_ARGUMENT,
                                "The pipeline cannot run on the emulator: " + "; ".join(problems))
        if self._cancel.wait(t.pending_seconds):
            return self._cancelled()
        self._start(job)
        self._set_state(PipelineState.PIPELINE_STATE_RUNNING)
        while True:
            self._poll_events()
            if self._cancel.is_set():
                with self.lock:
                    self._set_state(PipelineState.PIPELINE_STATE_CANCELLING)
                self._kill(self.timings.grace_seconds if self._cancel_grace is None
                           else self._cancel_grace)
                self._poll_events()
                return self._cancelled()
            assert self.process is not None
            if self.process.poll() is not None:
                self._kill(0)  # leftover children of the run die with it, as with a pod
                self._poll_events()
                return self._ended()
            self._cancel.wait(self.timings.poll_seconds)

    def _start(self, job: dict[str, Any]) -> None:
        os.makedirs(self.job_dir, exist_ok=True)
        runtime = job.get("runtimeConfig", {})
        root = runtime["gcsOutputDirectory"].rstrip("/")
        job_id = self.message.name.rsplit("/", 1)[-1]
        values = {**runtime.get("parameters", {}), **runtime.get("parameterValues", {})}
        with open(os.path.join(self.job_dir, "job.json"), "w", encoding="utf-8") as f:
            json.dump({"pipelineSpec": job["pipelineSpec"], "parameterValues": values,
                       "local_root": os.path.join(self.job_dir, "root"),
                       "gcs_root": f"{root}/{job_id}"}, f)
        env = {**os.environ, **self.job_env}
        with open(os.path.join(self.job_dir, "orchestrator.log"), "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "vertex_patterns.emulators.vertex.pipeline_exec",
                 self.job_dir], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=self.job_dir, start_new_session=True)
        with self.lock:
            self._root_task(PipelineTaskDetail.State.RUNNING)

    def _kill(self, grace: float) -> None:
        process = self.process
        if process is None:
            return
        for signum, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signum)
            deadline = time.monotonic() + wait
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
        process.wait()

    def _poll_events(self) -> None:
        path = os.path.join(self.job_dir, "events.jsonl")
        try:
            with open(path, encoding="utf-8") as f:
                f.seek(self._events_offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        complete, _, _rest = chunk.rpartition("\n")
        if not complete:
            return
        self._events_offset += len(complete.encode()) + 1
        with self.lock:
            for line in complete.splitlines():
                self._apply(json.loads(line))

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "task_start":
            detail = self.message.job_detail.task_details.add()
            detail.task_id = int(event["id"]) + 1  # 1 is the pipeline's root task
            detail.parent_task_id = 1
            detail.task_name = event["task"]
            stamp(detail.create_time, _when(event))
            stamp(detail.start_time, _when(event))
            detail.state = _TaskState.RUNNING
            detail.execution.display_name = event["task"]
            detail.execution.state = 2  # RUNNING
            self._tasks[int(event["id"])] = detail
            stamp(self.message.update_time)
        elif kind == "task_end":
            detail = self._tasks.get(int(event["id"]))
            if detail is None:
                return
            stamp(detail.end_time, _when(event))
            failed = event.get("state") == "FAILED"
            detail.state = _TaskState.FAILED if failed else _TaskState.SUCCEEDED
            detail.execution.state = 4 if failed else 3  # FAILED / COMPLETE
            if failed:
                detail.error.code = errors.CODE_FAILED_PRECONDITION
                detail.error.message = event.get("error", "")
            for name, output in event.get("outputs", {}).items():
                if "parameter" in output:
                    detail.execution.metadata.update({f"output:{name}": output["parameter"]})
                else:
                    for artifact in output.get("artifacts", []):
                        a = detail.outputs[name].artifacts.add()
                        a.display_name = artifact.get("name") or name
                        a.uri = artifact["uri"]
                        a.schema_title = artifact.get("schema_title", "system.Artifact")
                        a.metadata.update(artifact.get("metadata", {}))
            stamp(self.message.update_time)

    def _root_task(self, state: Any) -> None:
        details = self.message.job_detail.task_details
        if not details or details[0].task_id != 1:
            root = details.add()
            root.task_id = 1
            root.task_name = self.message.pipeline_spec["pipelineInfo"]["name"]
            stamp(root.create_time)
            stamp(root.start_time)
        root = details[0]
        root.state = state
        if state != _TaskState.RUNNING:
            stamp(root.end_time)

    def _ended(self) -> None:
        with self.lock:
            failed = [d for d in self.message.job_detail.task_details
                      if d.task_id != 1 and d.state == _TaskState.FAILED]
            running = [d for d in self.message.job_detail.task_details
                       if d.task_id != 1 and d.state == _TaskState.RUNNING]
        end_event = self._last_event("pipeline_end")
        if not failed and not running and end_event.get("state") == "SUCCEEDED":
            return self._finish(PipelineState.PIPELINE_STATE_SUCCEEDED)
        if failed:
            first = failed[0]
            message = (f"The DAG failed because some tasks failed. The failed tasks are: "
                       f"[{', '.join(d.task_name for d in failed)}]. Task {first.task_name}: "
                       f"{first.error.message}")
        else:
            code = self.process.returncode if self.process else None
            message = end_event.get("error") or (
                f"The pipeline's orchestrator exited with status {code} "
                f"(see {self.job_dir}/orchestrator.log)")
        with self.lock:
            for d in running:
                d.state = _TaskState.FAILED
                stamp(d.end_time)
        self._finish(PipelineState.PIPELINE_STATE_FAILED, errors.CODE_FAILED_PRECONDITION, message)

    def _last_event(self, kind: str) -> dict[str, Any]:
        try:
            with open(os.path.join(self.job_dir, "events.jsonl"), encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return {}
        for line in reversed(lines):
            event = json.loads(line)
            if event.get("event") == kind:
                return dict(event)
        return {}

    def _cancelled(self) -> None:
        with self.lock:
            for d in self.message.job_detail.task_details:
                if d.task_id != 1 and d.state == _TaskState.RUNNING:
                    d.state = _TaskState.CANCELLED
                    d.execution.state = 6  # CANCELLED
                    stamp(d.end_time)
        self._set_state(PipelineState.PIPELINE_STATE_CANCELLING)
        self._finish(PipelineState.PIPELINE_STATE_CANCELLED, errors.CODE_CANCELLED,
                     errors.CANCELLED_MESSAGE)

    def _set_state(self, state: int) -> None:
        with self.lock:
            if self.message.state == state:
                return
            self.message.state = state
            stamp(self.message.update_time)
            if (state == PipelineState.PIPELINE_STATE_RUNNING
                    and not self.message.HasField("start_time")):
                stamp(self.message.start_time)

    def _finish(self, state: int, code: int = 0, message: str = "") -> None:
        root_state = {PipelineState.PIPELINE_STATE_SUCCEEDED: _TaskState.SUCCEEDED,
                      PipelineState.PIPELINE_STATE_CANCELLED: _TaskState.CANCELLED}.get(
                          PipelineState(state), _TaskState.FAILED)
        with self.lock:
            if self.message.job_detail.task_details:
                self._root_task(root_state)
            self.message.state = state
            if code:
                self.message.error.code = code
                self.message.error.message = message
            stamp(self.message.end_time)
            stamp(self.message.update_time)
        log.info("pipeline job %s ended %s %s", self.message.name, PipelineState(state).name,
                 message)


def _when(event: dict[str, Any]) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(float(event["time"]), tz=dt.timezone.utc)
