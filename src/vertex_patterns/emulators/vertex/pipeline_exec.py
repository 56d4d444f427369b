"""Runs one pipeline job's DAG with kfp's own local orchestrator, in a child process.

`python -m vertex_patterns.emulators.vertex.pipeline_exec JOB_DIR` reads ``JOB_DIR/job.json``
(written by `PipelineJobRunner`), runs the compiled PipelineSpec with
`kfp.local.pipeline_orchestrator.run_local_pipeline` (conditions, loops and exit handlers are
kfp's), each lightweight component as a subprocess of this Python environment, and reports
what happens as JSON lines in ``JOB_DIR/events.jsonl``:

    {"event": "task_start", "id": 1, "task": "replicate-data", "time": ...}
    {"event": "task_end", "id": 1, "task": ..., "state": "SUCCEEDED", "time": ...,
     "outputs": {"name": {"parameter": V} | {"artifacts": [{"uri", "schema_title",
     "metadata", "name"}]}}, "error": "..."}
    {"event": "pipeline_end", "state": "SUCCEEDED" | "FAILED", "time": ...}

Each task's own output goes to ``JOB_DIR/tasks/<id>-<task>.log``. kfp.local keeps artifacts
on local disk; with a ``gs://`` pipeline root each task's output artifacts are uploaded there
when the task ends, and reported under their ``gs://`` URIs, as Vertex AI reports them.

`local.init` is process-wide state, so each job gets its own process; the emulator cancels a
job by signalling this process group, which holds the running component too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")


class EventLog:
    """Appends one JSON object per line, flushed at once (the emulator tails the file)."""

    def __init__(self, path: str) -> None:
        self._f: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close
        self._lock = threading.Lock()

    def write(self, **event: Any) -> None:
        with self._lock:
            self._f.write(json.dumps({**event, "time": time.time()}, default=str) + "\n")
            self._f.flush()

    def close(self) -> None:
        self._f.close()


def error_summary(log_text: str, limit: int = 2000) -> str:
    """The error a failed task reports: its last exception line, else its last lines."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line[:limit]
    return "\n".join(lines[-5:])[:limit] or "the task exited non-zero with no output"


def _artifact_json(artifact: Any, mirror: Callable[[str], str]) -> dict[str, Any]:
    return {"name": getattr(artifact, "name", ""), "uri": mirror(artifact.uri),
            "schema_title": getattr(artifact, "schema_title", "system.Artifact"),
            "metadata": dict(getattr(artifact, "metadata", {}) or {})}


def outputs_json(outputs: dict[str, Any], mirror: Callable[[str], str]) -> dict[str, Any]:
    """A task's outputs as JSON: parameters by value, artifacts by (mirrored) URI."""
    result: dict[str, Any] = {}
    for name, value in outputs.items():
        items = value if isinstance(value, list) else [value]
        if items and all(hasattr(v, "uri") and hasattr(v, "schema_title") for v in items):
            result[name] = {"artifacts": [_artifact_json(v, mirror) for v in items]}
        else:
            result[name] = {"parameter": value}
    return result


class GcsMirror:
    """Copies artifacts from the local pipeline root to the job's ``gs://`` root."""

    def __init__(self, local_root: str, gcs_root: str) -> None:
        self.local_root = os.path.abspath(local_root)
        self.gcs_root = gcs_root.rstrip("/")
        from vertex_patterns.storage import Storage

        self.store = Storage()

    def __call__(self, uri: str) -> str:
        path = os.path.abspath(uri)
        if not path.startswith(self.local_root + os.sep):
            return uri
        rel = os.path.relpath(path, self.local_root).replace(os.sep, "/")
        target = f"{self.gcs_root}/{rel}"
        if os.path.isdir(path):
            for dirpath, _dirs, files in os.walk(path):
                for name in files:
                    local = os.path.join(dirpath, name)
                    sub = os.path.relpath(local, path).replace(os.sep, "/")
                    self.store.upload_file(local, f"{target}/{sub}")
        elif os.path.isfile(path):
            self.store.upload_file(path, target)
        return target


def _install_hooks(job_dir: str, events: EventLog, mirror: Callable[[str], str]) -> None:
    """Wraps kfp.local's task execution to record each task and capture its output."""
    from kfp.local import status as kfp_status
    from kfp.local import subprocess_task_handler
    from kfp.local.orchestrator import task_executor

    current = threading.local()
    counter = iter(range(1, 1_000_000))
    counter_lock = threading.Lock()
    tasks_dir = os.path.join(job_dir, "tasks")
    os.makedirs(tasks_dir, exist_ok=True)
    original_execute = task_executor.execute_single_task

    def execute_single_task(task_name: str, *args: Any, **kwargs: Any) -> Any:
        with counter_lock:
            task_id = next(counter)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", task_name)[:80]
        log_path = os.path.join(tasks_dir, f"{task_id}-{safe}.log")
        current.log_path = log_path
        events.write(event="task_start", id=task_id, task=task_name, log=log_path)
        try:
            outputs, task_status = original_execute(task_name, *args, **kwargs)
        except Exception as exc:  # kfp raises for what it cannot run: the task fails
            _append(log_path, f"{type(exc).__name__}: {exc}\n")
            events.write(event="task_end", id=task_id, task=task_name, state="FAILED",
                         error=f"{type(exc).__name__}: {exc}", outputs={})
            raise
        finally:
            current.log_path = None
        if task_status == kfp_status.Status.SUCCESS:
            try:
                recorded = outputs_json(outputs, mirror)
            except Exception as exc:  # the pipeline root is not writable: the task fails
                events.write(event="task_end", id=task_id, task=task_name, state="FAILED",
                             error=f"writing outputs to the pipeline root failed: {exc}",
                             outputs={})
                return {}, kfp_status.Status.FAILURE
            events.write(event="task_end", id=task_id, task=task_name, state="SUCCEEDED",
                         outputs=recorded)
        else:
            events.write(event="task_end", id=task_id, task=task_name, state="FAILED",
                         error=error_summary(_read(log_path)), outputs={})
        return outputs, task_status

    def run_local_subprocess(full_command: list[str],
                             env_vars: dict[str, str] | None = None) -> int:
        # The component's output goes to its own log, not the orchestrator's stdout; it stays
        # in this process group so that a cancel reaches it.
        env = {**os.environ, **(env_vars or {})}
        log_path = getattr(current, "log_path", None) or os.path.join(tasks_dir, "other.log")
        with open(log_path, "ab") as log:
            process = subprocess.Popen(full_command, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env)
            return process.wait()

    task_executor.execute_single_task = execute_single_task
    subprocess_task_handler.run_local_subprocess = run_local_subprocess


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _append(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def typed_arguments(spec: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Runtime parameter values converted to the types the root declares (JSON numbers are
    floats; an INTEGER parameter must reach the component as an int)."""
    declared = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    args: dict[str, Any] = {}
    for name, value in values.items():
        kind = declared.get(name, {}).get("parameterType", "")
        if kind == "NUMBER_INTEGER" and isinstance(value, float) and value.is_integer():
            value = int(value)
        args[name] = value
    return args


def run(job_dir: str) -> int:
    """Runs the job described by ``job_dir/job.json``; returns 0 on success, 1 on failure."""
    with open(os.path.join(job_dir, "job.json"), encoding="utf-8") as f:
        job = json.load(f)
    events = EventLog(os.path.join(job_dir, "events.jsonl"))
    try:
        from google.protobuf import json_format
        from kfp import local
        from kfp.local import pipeline_orchestrator
        from kfp.pipeline_spec import pipeline_spec_pb2

        local_root = job["local_root"]
        os.makedirs(local_root, exist_ok=True)
        gcs_root = job.get("gcs_root", "")
        mirror: Callable[[str], str] = GcsMirror(local_root, gcs_root) if gcs_root else str
        _install_hooks(job_dir, events, mirror)
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=local_root,
                   raise_on_error=False)
        spec = pipeline_spec_pb2.PipelineSpec()
        json_format.ParseDict(job["pipelineSpec"], spec, ignore_unknown_fields=True)
        before = _failed_tasks(job_dir)
        pipeline_orchestrator.run_local_pipeline(
            spec, typed_arguments(job["pipelineSpec"], job.get("parameterValues", {})))
        failed = _failed_tasks(job_dir) - before
        state = "FAILED" if failed else "SUCCEEDED"
        events.write(event="pipeline_end", state=state)
        return 1 if failed else 0
    except Exception as exc:  # the orchestrator itself failed: report it as the job's error
        events.write(event="pipeline_end", state="FAILED",
                     error=f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        events.close()


def _failed_tasks(job_dir: str) -> set[int]:
    failed = set()
    for line in _read(os.path.join(job_dir, "events.jsonl")).splitlines():
        event = json.loads(line)
        if event.get("event") == "task_end" and event.get("state") == "FAILED":
            failed.add(int(event["id"]))
    return failed


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m vertex_patterns.emulators.vertex.pipeline_exec "
                         "JOB_DIR\n")
        return 2
    return run(argv[0])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
