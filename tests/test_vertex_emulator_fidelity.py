"""The Vertex AI emulator refuses what a web page could send, refuses at create time what
Vertex AI refuses, enforces `scheduling.timeout`, runs images' entrypoints where it can, and
keeps every job's logs readable (emulator endpoint, `emulators logs`, the launcher's
user_error). Through the real google-cloud-aiplatform SDK wherever the SDK can send it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from google.api_core import exceptions as api_exceptions
from google.cloud import aiplatform
from google.cloud.aiplatform import jobs as sdk_jobs
from google.cloud.aiplatform_v1.types import JobState

from conftest import wait_for
from vertex_patterns.cli.main import main as cli_main
from vertex_patterns.emulators.gcs import free_port
from vertex_patterns.emulators.vertex import VertexEmulator
from vertex_patterns.emulators.vertex.logs import read_log, tail_log
from vertex_patterns.launcher import JobSpec, Launcher, LaunchPolicy
from vertex_patterns.launcher.job_logs import failure_log_hint
from vertex_patterns.vertex_client import EMULATOR_ENV, init_aiplatform

PROJECT = "emu-project"
PROJECT_IMAGE = "us-docker.pkg.dev/my-proj/images/vertex-patterns-python:0.1.0"


@pytest.fixture
def vertex(vertex_emulator: VertexEmulator, monkeypatch: pytest.MonkeyPatch):
    """The session emulator with the SDK initialised against it and polling fast."""
    monkeypatch.setattr(sdk_jobs, "_JOB_WAIT_TIME", 0.1)
    init_aiplatform(PROJECT, "us-central1")
    yield vertex_emulator
    vertex_emulator.reset_scenario()


def python_job(code: str, *, name: str | None = None, machine: dict | None = None,
               image: str = "us-docker.pkg.dev/emu/trainer:1",
               command: list[str] | None = None, args: list[str] | None = None
               ) -> aiplatform.CustomJob:
    container: dict = {"image_uri": image}
    if command is None:
        container.update(command=[sys.executable, "-c", code])
    elif command:
        container.update(command=command)
    if args:
        container.update(args=args)
    return aiplatform.CustomJob(
        display_name=name or f"f-{uuid.uuid4().hex[:8]}", staging_bucket="gs://unused",
        worker_pool_specs=[{"machine_spec": machine or {"machine_type": "n1-standard-4"},
                            "replica_count": 1, "container_spec": container}])


def jobs_named(emulator: VertexEmulator, display_name: str) -> list[str]:
    with emulator.store.lock:
        return [n for n, e in emulator.custom_jobs.jobs.entries.items()
                if e.message.display_name == display_name]


class TestForgedRequestsRefused:
    """A request a web page could forge (foreign Origin, rebound Host, non-JSON body) is
    refused before it is read: no job is created and its command never runs."""

    def _body(self, name: str, marker: Path) -> dict:
        return {"displayName": name, "jobSpec": {"workerPoolSpecs": [{
            "machineSpec": {"machineType": "n1-standard-4"}, "replicaCount": "1",
            "containerSpec": {"imageUri": "i", "command": [
                sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]}}]}}

    @pytest.mark.parametrize("headers, status", [
        ({"Content-Type": "text/plain", "Origin": "https://evil.example"}, 403),
        ({"Content-Type": "application/json", "Origin": "https://evil.example"}, 403),
        ({"Content-Type": "application/json", "Origin": "null"}, 403),
        ({"Content-Type": "application/json", "Host": "evil.example:{port}"}, 403),
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ], ids=["text-plain-foreign-origin", "foreign-origin", "null-origin", "rebound-host",
            "text-plain", "form"])
    def test_refused(self, vertex: VertexEmulator, tmp_path: Path, headers: dict,
                     status: int) -> None:
        marker = tmp_path / "ran"
        name = f"forged-{uuid.uuid4().hex[:8]}"
        headers = {k: v.format(port=vertex.port) for k, v in headers.items()}
        before = len(vertex.custom_jobs.jobs.entries)
        r = requests.post(
            f"{vertex.url}/v1/projects/{PROJECT}/locations/us-central1/customJobs",
            data=json.dumps(self._body(name, marker)), headers=headers, timeout=10)
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == status
        # A process is only ever started by the runner of a stored job: no job, no process.
        assert jobs_named(vertex, name) == [] and len(vertex.custom_jobs.jobs.entries) == before
        assert not marker.exists()

    def test_local_requests_served(self, vertex: VertexEmulator, tmp_path: Path) -> None:
        marker = tmp_path / "ran"
        name = f"local-{uuid.uuid4().hex[:8]}"
        r = requests.post(
            f"{vertex.url}/v1/projects/{PROJECT}/locations/us-central1/customJobs",
            json=self._body(name, marker), timeout=10,
            headers={"Origin": "http://localhost:3000", "Host": f"localhost:{vertex.port}"})
        assert r.status_code == 200, r.text
        wait_for(marker.exists, what="the job's command")
        assert jobs_named(vertex, name) == [r.json()["name"]]

    def test_cancel_without_json_refused(self, vertex: VertexEmulator) -> None:
        job = python_job("import time; time.sleep(60)")
        job.submit()
        r = requests.post(f"{vertex.url}/v1/{job.resource_name}:cancel", timeout=10,
                          headers={"Origin": "https://evil.example"})
        assert r.status_code == 403
        assert vertex.custom_jobs.jobs.get(job.resource_name).extra._cancel.is_set() is False
        job.cancel()

    def test_binds_loopback_only(self) -> None:
        with pytest.raises(ValueError, match="loopback only"):
            VertexEmulator(host="0.0.0.0").start()


class TestCreateTimeChecks:
    """What Vertex AI answers 400 to at create time, the emulator answers 400 to (the machine
    catalog is the launcher's); nothing is stored."""

    @pytest.mark.parametrize("machine, image, match", [
        ({"machine_type": "n1-fake-99"}, None, 'Machine type "n1-fake-99" is not supported'),
        ({"machine_type": "a2-highgpu-1g", "accelerator_type": "NVIDIA_TESLA_T4",
          "accelerator_count": 3}, None, "NVIDIA_TESLA_T4.*a2-highgpu-1g"),
        ({"machine_type": "a2-highgpu-1g", "accelerator_type": "NVIDIA_TESLA_A100",
          "accelerator_count": 3}, None, "3 x NVIDIA_TESLA_A100"),
        ({"machine_type": "n1-standard-4"}, "NOT AN IMAGE", "Invalid image URI 'NOT AN IMAGE'"),
    ], ids=["unknown-machine", "wrong-accelerator", "wrong-count", "bad-image"])
    def test_refused(self, vertex: VertexEmulator, machine: dict, image: str | None,
                     match: str) -> None:
        name = f"bad-{uuid.uuid4().hex[:8]}"
        job = python_job("pass", name=name, machine=machine,
                         **({"image": image} if image else {}))
        with pytest.raises(api_exceptions.BadRequest, match=match):
            job.submit()
        assert jobs_named(vertex, name) == []

    @pytest.mark.parametrize("expression, match", [
        ('display_name="unterminated', "unbalanced quotes"),
        ('bogus_field="x"', "bogus_field is not a field of CustomJob"),
        ('state="JOB_STATE_NOPE"', "not a value of JobState"),
        ('display_name="a" OR display_name="b"', "Unsupported filter"),
    ])
    def test_malformed_filter(self, vertex: VertexEmulator, expression: str,
                              match: str) -> None:
        with pytest.raises(api_exceptions.BadRequest, match=match):
            aiplatform.CustomJob.list(filter=expression)

    def test_valid_filters_still_match(self, vertex: VertexEmulator) -> None:
        job = python_job("pass")
        job.run()
        found = aiplatform.CustomJob.list(
            filter=f'display_name="{job.display_name}" AND state="JOB_STATE_SUCCEEDED" '
            'AND labels.team!="x"')
        assert [j.resource_name for j in found] == [job.resource_name]


class TestTimeout:
    """A job running past `scheduling.timeout` is stopped and FAILED with code 4."""

    def test_timeout_enforced(self, vertex: VertexEmulator, tmp_path: Path) -> None:
        pid_file = tmp_path / "pid"
        job = python_job(f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid()))"
                         "; time.sleep(120)")
        with pytest.raises(RuntimeError, match="maximum running time"):
            job.run(timeout=1)
        assert job.state == JobState.JOB_STATE_FAILED
        assert job.gca_resource.error.code == 4
        assert "scheduling.timeout 1s" in job.gca_resource.error.message
        (attempt,) = vertex.job_record(job.resource_name)["attempts"]
        assert attempt["outcome"] == "timed_out"
        assert attempt["exit_codes"]["workerpool0-0"] is not None  # the worker was stopped


class TestImageEntrypoints:
    """A containerSpec without `command` runs its image's entrypoint where the emulator can
    stand in for the image (the project's image: the vertex-patterns CLI), and fails the job
    naming the image and what to do where it cannot."""

    def test_project_image_runs_cli(self, vertex: VertexEmulator) -> None:
        job = python_job("", image=PROJECT_IMAGE, command=[], args=["--version"])
        job.run()
        assert job.state == JobState.JOB_STATE_SUCCEEDED
        assert vertex.worker_log(job.resource_name).startswith("vertex-patterns ")

    def test_unknown_image_fails_clearly(self, vertex: VertexEmulator) -> None:
        job = python_job("", image="gcr.io/someone/their-trainer:2", command=[],
                         args=["--epochs", "1"])
        with pytest.raises(RuntimeError, match=r"their-trainer:2\W+ cannot run on the emulator"):
            job.run()
        assert job.gca_resource.error.code == 3
        assert "VERTEX_AI_EMULATOR_LOCAL_IMAGES" in job.gca_resource.error.message


class TestLogs:
    """Job output is kept per replica and attempt, served from any offset without cutting a
    character, read whole or followed by `emulators logs`, and shown by the launcher with a
    user_error (the Cloud Logging query on Vertex AI)."""

    def test_read_log_offsets_and_attempts(self, tmp_path: Path) -> None:
        dirs = [tmp_path / "attempt-1", tmp_path / "attempt-2"]
        for d, text in zip(dirs, ("first ü\n", "second\n"), strict=True):
            d.mkdir()
            (d / "workerpool0-0.log").write_text(text, encoding="utf-8")
        whole = b"first \xc3\xbc\n--- attempt 2 ---\nsecond\n"
        log_dirs = [str(d) for d in dirs]
        assert read_log(log_dirs, "workerpool0-0") == (whole, len(whole))
        # A read that would end inside the two-byte ü stops before it.
        assert read_log(log_dirs, "workerpool0-0", 0, limit=7) == (b"first ", 6)
        assert read_log(log_dirs, "workerpool0-0", 6) == (whole[6:], len(whole))
        assert tail_log(log_dirs, "workerpool0-0", 2) == b"--- attempt 2 ---\nsecond\n"

    def test_cli_logs_and_follow(self, vertex: VertexEmulator,
                                 capsys: pytest.CaptureFixture[str]) -> None:
        job = python_job("import sys, time\nfor i in range(3):\n print('line', i, flush=True)"
                         "\n time.sleep(0.2)\nprint('to stderr', file=sys.stderr)")
        job.submit()
        job_id = job.resource_name.rsplit("/", 1)[-1]
        assert cli_main(["emulators", "logs", job_id, "--follow"]) == 0
        out, err = capsys.readouterr()
        assert out == "line 0\nline 1\nline 2\nto stderr\n"
        assert "JOB_STATE_SUCCEEDED" in err
        assert cli_main(["emulators", "logs", job.resource_name]) == 0
        assert capsys.readouterr().out == out

    def test_cli_unknown_job(self, vertex: VertexEmulator,
                             capsys: pytest.CaptureFixture[str]) -> None:
        assert cli_main(["emulators", "logs", "1234"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and '"1234" was not found' in err
        job = python_job("pass")
        job.run()
        assert cli_main(["emulators", "logs", job.resource_name, "--replica",
                         "workerpool1-0"]) == 2
        assert "has no replica 'workerpool1-0'" in capsys.readouterr().err

    def test_launcher_user_error_shows_log_tail(self, vertex: VertexEmulator,
                                                caplog: pytest.LogCaptureFixture) -> None:
        spec = JobSpec(display_name=f"ue{uuid.uuid4().hex[:6]}", image="img:1",
                       machine_type="n1-standard-4", command=(
                           "python", "-c", "import sys\nfor i in range(30): print('out', i)\n"
                           "sys.exit('trainer: no such dataset')"))
        policy = LaunchPolicy(project=PROJECT, regions=("us-east1",), poll_seconds=0.2,
                              run_dir_template="gs://unused-{region}/runs/x")
        with caplog.at_level(logging.ERROR, logger="vertex_patterns.launcher"):
            history = Launcher(spec, policy).run()
        assert history.final_outcome == "user_error"
        (record,) = [r for r in caplog.records if "last 20 lines" in r.getMessage()]
        message = record.getMessage()
        assert "  | trainer: no such dataset" in message and "  | out 29" in message
        assert "out 10\n" not in message  # only the tail: 19 prints and the error
        assert "vertex-patterns emulators logs" in message

    def test_cloud_logging_hint_without_emulator(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(EMULATOR_ENV)
        name = "projects/my-proj/locations/us-east1/customJobs/4242"
        hint = failure_log_hint(name, "The replica workerpool1-0 exited with a non-zero "
                                "status of 1. Termination reason: Error.")
        assert ('query: resource.type="ml_job" AND resource.labels.job_id="4242" AND '
                'resource.labels.task_name="workerpool1-0"') in hint
        assert "https://console.cloud.google.com/logs/query;query=resource.type%3D%22ml_job" \
            in hint and hint.split("\n")[0].endswith("?project=my-proj")


class TestEmulatorsUp:
    """Under `emulators up`, a custom job reaches the GCS emulator started beside it (the
    command's own environment has no STORAGE_EMULATOR_HOST), its output is readable with
    `emulators logs`, and `--state-dir` keeps its log after the emulators stop."""

    def test_job_writes_to_gcs_emulator_and_logs_kept(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> None:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        state, scenario = tmp_path / "state", tmp_path / "scenario.json"
        scenario.write_text(json.dumps({"timings": {"queued_seconds": 0.05,
                                                    "pending_seconds": 0.05}}))
        gcs_port, vertex_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items()
               if k not in (EMULATOR_ENV, "STORAGE_EMULATOR_HOST")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "vertex_patterns.cli", "emulators", "up", "--gcs-port",
             str(gcs_port), "--vertex-port", str(vertex_port), "--scenario", str(scenario),
             "--state-dir", str(state)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert proc.stdout is not None
            gcs_url = proc.stdout.readline().strip().split("=", 1)[1]
            vertex_url = proc.stdout.readline().strip().split("=", 1)[1]
            monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_url)
            gcs = storage.Client(project="test", credentials=AnonymousCredentials())
            bucket = gcs.create_bucket(f"up-{uuid.uuid4().hex[:8]}")
            monkeypatch.setenv(EMULATOR_ENV, vertex_url)
            init_aiplatform(PROJECT, "us-central1")
            job = python_job(
                "import os\nfrom vertex_patterns.storage import Storage\n"
                f"Storage().write_bytes('gs://{bucket.name}/from-job.txt', "
                "os.environ['CLOUD_ML_JOB_ID'].encode())\nprint('wrote it')")
            job.run()
            job_id = job.resource_name.rsplit("/", 1)[-1]
            assert bucket.blob("from-job.txt").download_as_bytes() == job_id.encode()

            capsys.readouterr()
            assert cli_main(["emulators", "logs", job_id]) == 0
            assert capsys.readouterr().out == "wrote it\n"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        log_file = state / "customJobs" / job_id / "attempt-1" / "workerpool0-0.log"
        assert log_file.read_text() == "wrote it\n"
