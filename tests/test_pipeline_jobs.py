"""Pipeline jobs on the Vertex AI emulator run for real, read through the real SDK: tasks
execute, their states, times, output parameters and artifacts show in `task_details`, a
failing task fails the job (the exit handler still runs, downstream does not), cancel stops
the running task, artifacts land under the gs:// pipeline root, schedules' runs execute."""

from __future__ import annotations

import json
import os
import uuid
import warnings
from pathlib import Path

import pytest
import requests
from google.api_core import exceptions as api_exceptions
from google.cloud import aiplatform
from google.cloud.aiplatform import pipeline_jobs as sdk_pipeline_jobs
from google.cloud.aiplatform_v1.types import PipelineState, PipelineTaskDetail

from conftest import wait_for
from vertex_patterns.emulators.vertex import VertexEmulator
from vertex_patterns.storage import Storage
from vertex_patterns.vertex_client import init_aiplatform

PROJECT = "pipe-project"
DONE = (PipelineState.PIPELINE_STATE_SUCCEEDED, PipelineState.PIPELINE_STATE_FAILED,
        PipelineState.PIPELINE_STATE_CANCELLED)
TaskState = PipelineTaskDetail.State


@pytest.fixture
def vertex(vertex_emulator: VertexEmulator, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sdk_pipeline_jobs, "_JOB_WAIT_TIME", 0.1)
    init_aiplatform(PROJECT, "us-central1")
    return vertex_emulator


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory):
    from helpers import pipelines

    out = tmp_path_factory.mktemp("compiled")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return {name: pipelines.compile_to(getattr(pipelines, name), str(out / f"{name}.json"))
                for name in ("ok_pipeline", "failing_pipeline", "sleepy_pipeline",
                             "custom_image_pipeline")}


@pytest.fixture
def root(make_bucket) -> str:
    return f"gs://{make_bucket('pipes')}/root"


def submit(path: str, root: str, **params) -> aiplatform.PipelineJob:
    job = aiplatform.PipelineJob(display_name="t", template_path=path,
                                 job_id=f"t-{uuid.uuid4().hex[:12]}", pipeline_root=root,
                                 parameter_values=params, enable_caching=False)
    job.submit()
    return job


def finished(job: aiplatform.PipelineJob) -> aiplatform.PipelineJob:
    wait_for(lambda: job.state in DONE, timeout=120, what="pipeline end")
    return job


def tasks(job: aiplatform.PipelineJob) -> dict[str, list]:
    out: dict[str, list] = {}
    for detail in job.task_details:
        out.setdefault(detail.task_name, []).append(detail)
    return out


class TestSuccessfulRun:
    """Every task runs; outputs are what the components returned; artifacts are on GCS."""

    def test_tasks_outputs_and_artifacts(self, vertex, compiled, root, store: Storage) -> None:
        job = finished(submit(compiled["ok_pipeline"], root, text="hi"))
        assert job.state == PipelineState.PIPELINE_STATE_SUCCEEDED, job.gca_resource.error
        by_name = tasks(job)
        (produced,) = by_name["produce"]
        assert produced.state == TaskState.SUCCEEDED
        assert produced.start_time <= produced.end_time
        assert produced.execution.metadata["output:Output"] == "HI"
        consumed = {d.execution.metadata["output:Output"] for name, ds in by_name.items()
                    if name.startswith("consume") for d in ds}
        assert consumed == {"got HI", "got a", "got b"}  # the loop ran inside the condition
        (metrics,) = produced.outputs["metrics"].artifacts
        assert metrics.uri.startswith(f"{root}/{job.name}/")
        assert metrics.metadata["length"] == 2
        (report,) = produced.outputs["report"].artifacts
        assert report.uri.startswith(f"{root}/{job.name}/")
        assert store.read_bytes(report.uri) == b"# report on hi"  # uploaded to the root
        root_task = by_name["ok-pipeline"][0]
        assert root_task.state == TaskState.SUCCEEDED


class TestFailingTask:
    """A raising component fails the job with its error; downstream does not run; the exit
    handler runs and sees FAILED."""

    def test_failure(self, vertex, compiled, root) -> None:
        job = finished(submit(compiled["failing_pipeline"], root, message="bucket vanished"))
        assert job.state == PipelineState.PIPELINE_STATE_FAILED
        error = job.gca_resource.error.message
        assert "boom" in error and "bucket vanished" in error
        by_name = tasks(job)
        assert by_name["boom"][0].state == TaskState.FAILED
        assert "bucket vanished" in by_name["boom"][0].error.message
        assert "consume" not in by_name  # downstream of the failure never started
        (exit_task,) = by_name["final-state"]
        assert exit_task.state == TaskState.SUCCEEDED
        assert exit_task.execution.metadata["output:Output"] == "FAILED"
        with pytest.raises(RuntimeError, match="bucket vanished"):
            job.wait()


class TestCancel:
    """Cancel stops the running task's process; the job and the task end CANCELLED."""

    def test_cancel_stops_task(self, vertex, compiled, root, tmp_path: Path) -> None:
        pid_file = tmp_path / "pid"
        job = submit(compiled["sleepy_pipeline"], root, pid_file=str(pid_file))
        pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), what="task"))
        job.cancel()
        finished(job)
        assert job.state == PipelineState.PIPELINE_STATE_CANCELLED
        assert tasks(job)["sleeper"][0].state == TaskState.CANCELLED
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=15, what="task killed")


class TestRefusedAsOnVertex:
    """What Vertex AI would refuse fails here too."""

    def test_unrunnable_image_fails_naming_task(self, vertex, compiled, root) -> None:
        job = finished(submit(compiled["custom_image_pipeline"], root))
        assert job.state == PipelineState.PIPELINE_STATE_FAILED
        assert "custom-image-task" in job.gca_resource.error.message
        assert "cannot run on the emulator" in job.gca_resource.error.message

    def test_local_root_refused(self, vertex, compiled, tmp_path: Path) -> None:
        with pytest.raises(api_exceptions.BadRequest, match="Cloud Storage path"):
            submit(compiled["ok_pipeline"], str(tmp_path))

    def test_parameter_type_checked(self, vertex, compiled, root) -> None:
        spec = json.loads(Path(compiled["ok_pipeline"]).read_text())
        r = requests.post(
            f"{vertex.url}/v1/projects/{PROJECT}/locations/us-central1/pipelineJobs",
            params={"pipelineJobId": "bad-type"}, timeout=10,
            json={"displayName": "b", "pipelineSpec": spec,
                  "runtimeConfig": {"gcsOutputDirectory": root,
                                    "parameterValues": {"times": "two"}}})
        assert r.status_code == 400 and "times" in r.json()["error"]["message"]


class TestScheduledRuns:
    """A run started by a schedule executes like any other."""

    def test_due_run_executes(self, vertex, compiled, root) -> None:
        job = aiplatform.PipelineJob(display_name="s", template_path=compiled["ok_pipeline"],
                                     pipeline_root=root, parameter_values={"text": "cron"})
        schedule = aiplatform.PipelineJobSchedule(pipeline_job=job, display_name="every-5")
        schedule.create(cron="*/5 * * * *", max_concurrent_run_count=1, max_run_count=1)
        (started,) = vertex.schedules.tick(now=schedule.gca_resource.next_run_time)
        run = finished(aiplatform.PipelineJob.get(started))
        assert run.state == PipelineState.PIPELINE_STATE_SUCCEEDED
        assert tasks(run)["produce"][0].execution.metadata["output:Output"] == "CRON"
