"""The Vertex AI emulator through the real google-cloud-aiplatform SDK: custom jobs run real
processes with Vertex AI's environment, faults end jobs as Vertex AI ends them, pipeline jobs
and schedules keep their states, and bad requests get Vertex AI's errors.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
from google.api_core import exceptions as api_exceptions
from google.cloud import aiplatform
from google.cloud.aiplatform import jobs as sdk_jobs
from google.cloud.aiplatform import pipeline_jobs as sdk_pipeline_jobs
from google.cloud.aiplatform.compat.types import custom_job as gca_custom_job
from google.cloud.aiplatform_v1.types import JobState

from conftest import VERTEX_TEST_TIMINGS, wait_for
from vertex_patterns.emulators.gcs import free_port
from vertex_patterns.emulators.vertex import RegionFaults, Scenario, Timings, VertexEmulator
from vertex_patterns.errors import ConfigError
from vertex_patterns.vertex_client import EMULATOR_ENV, init_aiplatform

WORKER = str(Path(__file__).parent / "helpers" / "vertex_worker.py")
PROJECT = "emu-project"
SPOT = gca_custom_job.Scheduling.Strategy.SPOT


@pytest.fixture
def vertex(vertex_emulator: VertexEmulator, monkeypatch: pytest.MonkeyPatch):
    """The session emulator, the SDK initialised against it (us-central1) and polling fast;
    the emulator's default scenario is restored afterwards."""
    monkeypatch.setattr(sdk_jobs, "_JOB_WAIT_TIME", 0.1)
    monkeypatch.setattr(sdk_pipeline_jobs, "_JOB_WAIT_TIME", 0.1)
    init_aiplatform(PROJECT, "us-central1")
    yield vertex_emulator
    vertex_emulator.reset_scenario()


def use_scenario(emulator: VertexEmulator, regions: dict[str, RegionFaults], **limits) -> None:
    emulator.set_scenario(Scenario(seed=7, regions=regions,
                                   timings=Timings(**VERTEX_TEST_TIMINGS), **limits))


def worker_job(record: Path, *args: str, replicas: tuple[int, ...] = (1,),
               env: dict[str, str] | None = None, location: str | None = None,
               accelerator: bool = False) -> aiplatform.CustomJob:
    """A CustomJob running tests/helpers/vertex_worker.py, recording into `record`."""
    pools = []
    for count in replicas:
        machine: dict = {"machine_type": "n1-standard-4"}
        if accelerator:
            machine.update(accelerator_type="NVIDIA_TESLA_T4", accelerator_count=1)
        pools.append({
            "machine_spec": machine, "replica_count": count,
            "container_spec": {
                "image_uri": "us-docker.pkg.dev/emu/trainer:1", "command": ["python", WORKER],
                "args": ["--record", str(record), *args],
                "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}})
    return aiplatform.CustomJob(display_name=f"w-{record.name}", worker_pool_specs=pools,
                                base_output_dir=str(record / "out"),
                                staging_bucket="gs://unused-staging", location=location)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def wait_done(job) -> None:
    wait_for(lambda: job.state in (JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED,
                                   JobState.JOB_STATE_CANCELLED), what="job end")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class TestCustomJobRuns:
    """A custom job runs its container command as a process with Vertex AI's environment,
    and the SDK sees QUEUED -> ... -> SUCCEEDED with Vertex AI's timestamps."""

    def test_run_env_and_output(self, vertex: VertexEmulator, tmp_path: Path) -> None:
        job = worker_job(tmp_path / "rec", env={"EXTRA_VAR": "from-spec"})
        job.run()
        assert job.state == JobState.JOB_STATE_SUCCEEDED
        (start,) = lines(tmp_path / "rec" / "starts.jsonl")
        env = start["env"]
        out = str(tmp_path / "rec" / "out")
        assert env["AIP_MODEL_DIR"] == f"{out}/model/"
        assert env["AIP_CHECKPOINT_DIR"] == f"{out}/checkpoints/"
        assert env["AIP_TENSORBOARD_LOG_DIR"] == f"{out}/logs/"
        assert env["CLOUD_ML_JOB_ID"] == job.resource_name.rsplit("/", 1)[-1]
        assert env["EXTRA_VAR"] == "from-spec"
        assert not {"MASTER_ADDR", "WORLD_SIZE", "RANK"} & set(env)
        spec = json.loads(env["CLUSTER_SPEC"])
        assert spec["task"] == {"type": "workerpool0", "index": 0}
        assert len(spec["cluster"]["workerpool0"]) == 1
        assert spec["job"]["worker_pool_specs"][0]["container_spec"]["image_uri"].endswith(":1")
        assert (tmp_path / "rec" / "out" / "model" / "model.txt").exists()
        gca = job.gca_resource
        assert gca.create_time <= gca.start_time <= gca.end_time
        assert "worker start 1 exiting 0" in vertex.worker_log(job.resource_name)

    def test_get_and_list(self, vertex: VertexEmulator, tmp_path: Path) -> None:
        a = worker_job(tmp_path / "a")
        b = worker_job(tmp_path / "b")
        a.submit()
        b.submit()
        fetched = aiplatform.CustomJob.get(a.resource_name)
        assert fetched.display_name == "w-a"
        names = {j.resource_name for j in aiplatform.CustomJob.list(filter='display_name="w-b"')}
        assert names == {b.resource_name}
        listed = {j.resource_name for j in aiplatform.CustomJob.list()}
        assert {a.resource_name, b.resource_name} <= listed
        for job in (a, b):
            wait_done(job)
        collection = f"{vertex.url}/v1/projects/{PROJECT}/locations/us-central1/customJobs"
        page = requests.get(collection, params={"pageSize": 1}, timeout=10).json()
        assert len(page["customJobs"]) == 1 and page["nextPageToken"]
        beta = requests.get(f"{vertex.url}/v1beta1/{a.resource_name}", timeout=10).json()
        assert (beta["name"], beta["state"]) == (a.resource_name, "JOB_STATE_SUCCEEDED")


class TestMultiReplica:
    """Replicas get one rendezvous (MASTER_ADDR/PORT), WORLD_SIZE, distinct RANKs and their
    CLUSTER_SPEC task; the job succeeds when the primary exits 0 and the rest are stopped."""

    @pytest.mark.parametrize("pools", [(2,), (1, 1)], ids=["one-pool", "two-pools"])
    def test_ddp_env(self, vertex: VertexEmulator, tmp_path: Path, pools: tuple[int, ...]):
        record = tmp_path / "rec"
        # Rank 0 exits once both started; rank 1 would sleep a minute and must be stopped.
        job = worker_job(record, "--wait-for-world", "--sleep", "60", replicas=pools)
        job.run()
        assert job.state == JobState.JOB_STATE_SUCCEEDED
        starts = sorted(lines(record / "starts.jsonl"), key=lambda s: s["env"]["RANK"])
        assert [s["env"]["RANK"] for s in starts] == ["0", "1"]
        envs = [s["env"] for s in starts]
        assert {e["MASTER_ADDR"] for e in envs} == {"127.0.0.1"}
        assert len({e["MASTER_PORT"] for e in envs}) == 1
        assert {e["WORLD_SIZE"] for e in envs} == {"2"}
        tasks = [json.loads(e["CLUSTER_SPEC"])["task"] for e in envs]
        expected = ([{"type": "workerpool0", "index": 0}, {"type": "workerpool0", "index": 1}]
                    if pools == (2,) else
                    [{"type": "workerpool0", "index": 0}, {"type": "workerpool1", "index": 0}])
        assert tasks == expected
        assert not any(alive(s["pid"]) for s in starts)


class TestFailures:
    """A non-zero exit fails the job with Vertex AI's replica message (code 3); SIGABRT-style
    exits are retried first; an internal error fails with code 13."""

    def test_nonzero_exit(self, vertex: VertexEmulator, tmp_path: Path) -> None:
        job = worker_job(tmp_path / "rec", "--exit-codes", "3")
        with pytest.raises(RuntimeError, match="non-zero status of 3"):
            job.run()
        assert job.state == JobState.JOB_STATE_FAILED
        assert job.gca_resource.error.code == 3
        assert job.gca_resource.error.message.startswith(
            "The replica workerpool0-0 exited with a non-zero status of 3.")
        assert len(lines(tmp_path / "rec" / "starts.jsonl")) == 1  # not retried
        assert "exiting 3" in vertex.worker_log(job.resource_name)

    def test_transient_exit_retried(self, vertex: VertexEmulator, tmp_path: Path) -> None:
        job = worker_job(tmp_path / "rec", "--exit-codes", "134,0")
        job.run()
        assert job.state == JobState.JOB_STATE_SUCCEEDED
        outcomes = [a["outcome"] for a in vertex.job_record(job.resource_name)["attempts"]]
        assert outcomes == ["transient_failure", "succeeded"]

    def test_internal_error(self, vertex: VertexEmulator, tmp_path: Path) -> None:
        use_scenario(vertex, {"us-central1": RegionFaults(internal_error_after_seconds=0.3)})
        job = worker_job(tmp_path / "rec", "--sleep", "60")
        with pytest.raises(RuntimeError):
            job.run()
        assert job.gca_resource.error.code == 13
        assert job.gca_resource.error.message == "Internal error occurred for the current attempt."


class TestCancel:
    """Cancel moves the job to CANCELLED (code 1) and stops its worker: SIGTERM first."""

    def test_cancel_running(self, vertex: VertexEmulator, tmp_path: Path) -> None:
        record = tmp_path / "rec"
        job = worker_job(record, "--sleep", "120")
        job.submit()
        (start,) = wait_for(lambda: lines(record / "starts.jsonl"), what="worker start")
        assert job.state == JobState.JOB_STATE_RUNNING
        job.cancel()
        wait_done(job)
        assert job.state == JobState.JOB_STATE_CANCELLED
        assert job.gca_resource.error.code == 1
        assert not alive(start["pid"])
        assert lines(record / "events.jsonl") == [{"event": "sigterm", "pid": start["pid"]}]

    def test_cancel_ended_job_refused(self, vertex: VertexEmulator, tmp_path: Path) -> None:
        job = worker_job(tmp_path / "rec")
        job.run()
        with pytest.raises(api_exceptions.BadRequest, match="Cannot cancel"):
            job.cancel()


class TestPreemption:
    """A preempted Spot worker gets SIGTERM, then SIGKILL after the grace period, and is
    restarted in the same job; past the restart bound the job fails with the stockout error."""

    def test_preempted_then_completes(self, vertex: VertexEmulator, tmp_path: Path) -> None:
        use_scenario(vertex, {"us-central1": RegionFaults(preempt_after_seconds=(0.5,))})
        record = tmp_path / "rec"
        job = worker_job(record, "--sleep", "60", "--sleep-starts", "1")
        job.run(scheduling_strategy=SPOT)
        assert job.state == JobState.JOB_STATE_SUCCEEDED
        starts = lines(record / "starts.jsonl")
        assert len(starts) == 2
        assert lines(record / "events.jsonl") == [{"event": "sigterm", "pid": starts[0]["pid"]}]
        record_ = vertex.job_record(job.resource_name)
        assert record_["preemptions"] == 1
        assert [a["outcome"] for a in record_["attempts"]] == ["preempted", "succeeded"]

    def test_sigkill_after_grace(self, vertex: VertexEmulator, tmp_path: Path) -> None:
        use_scenario(vertex, {"us-central1": RegionFaults(preempt_after_seconds=(0.3,))})
        record = tmp_path / "rec"
        job = worker_job(record, "--ignore-sigterm", "--sleep", "60", "--sleep-starts", "1")
        job.run(scheduling_strategy=SPOT)
        first = vertex.job_record(job.resource_name)["attempts"][0]
        assert first["outcome"] == "preempted"
        assert first["exit_codes"] == {"workerpool0-0": -signal.SIGKILL}

    def test_restart_bound_then_stockout(self, vertex: VertexEmulator, tmp_path: Path) -> None:
        use_scenario(vertex, {"us-east1": RegionFaults(preempt_after_seconds=(0.3, 0.3, 0.3))},
                     max_preemption_restarts=2)
        record = tmp_path / "rec"
        job = worker_job(record, "--sleep", "60", location="us-east1")
        with pytest.raises(RuntimeError, match="Resources are insufficient in region: us-east1"):
            job.run(scheduling_strategy=SPOT)
        assert job.gca_resource.error.code == 8
        starts = lines(record / "starts.jsonl")
        assert len(starts) == 3  # the first run and two restarts
        assert [e["pid"] for e in lines(record / "events.jsonl")] == [s["pid"] for s in starts]
        assert not any(alive(s["pid"]) for s in starts)

    def test_standard_jobs_not_preempted(self, vertex: VertexEmulator, tmp_path: Path) -> None:
        use_scenario(vertex, {"us-central1": RegionFaults(preempt_after_seconds=(0.2,))})
        job = worker_job(tmp_path / "rec", "--sleep", "0.6")
        job.run()
        assert vertex.job_record(job.resource_name)["preemptions"] == 0

    def test_seeded_rate_reproducible(self, vertex: VertexEmulator) -> None:
        regions = {"asia-east1": RegionFaults(preempt_rate_per_hour=3600)}
        delays = []
        for _ in range(2):
            use_scenario(vertex, regions)
            plans = [vertex.custom_jobs.injector.plan("asia-east1", "SPOT") for _ in range(3)]
            delays.append([p.preemption_delay(1) for p in plans])
        assert delays[0] == delays[1]
        assert len(set(delays[0])) == 3 and all(d > 0 for d in delays[0])


class TestCapacityAndQuota:
    """Stockout: a Spot job fails after PENDING with code 8 and never starts a worker (Standard
    jobs still run). Quota exceeded: create answers 429 RESOURCE_EXHAUSTED naming the metric."""

    def test_stockout(self, vertex: VertexEmulator, tmp_path: Path) -> None:
        use_scenario(vertex, {"us-central1": RegionFaults(stockout_strategies=("SPOT",))})
        spot = worker_job(tmp_path / "spot")
        with pytest.raises(RuntimeError, match="Resources are insufficient in region"):
            spot.run(scheduling_strategy=SPOT)
        assert spot.gca_resource.error.code == 8
        assert not spot.gca_resource.start_time
        assert not (tmp_path / "spot" / "starts.jsonl").exists()
        standard = worker_job(tmp_path / "standard")
        standard.run()
        assert standard.state == JobState.JOB_STATE_SUCCEEDED

    def test_quota_exceeded(self, vertex: VertexEmulator, tmp_path: Path) -> None:
        use_scenario(vertex, {"europe-west1": RegionFaults(quota_exceeded=True)})
        job = worker_job(tmp_path / "rec", location="europe-west1", accelerator=True)
        with pytest.raises(api_exceptions.TooManyRequests,
                           match="custom_model_training_nvidia_t4_gpus"):
            job.submit()


class TestInvalidRequests:
    """Bad specs get 400 INVALID_ARGUMENT with a message naming the field; unknown resources
    get 404."""

    def _post(self, vertex: VertexEmulator, body: dict) -> requests.Response:
        return requests.post(f"{vertex.url}/v1/projects/{PROJECT}/locations/us-central1/"
                             "customJobs", json=body, timeout=10)

    def test_unknown_field(self, vertex: VertexEmulator) -> None:
        body = {"displayName": "x", "jobSpec": {"workerPoolSpecs": [{
            "machineSpec": {"machineType": "n1-standard-4"}, "replicaCount": "1",
            "containerSpec": {"imageUri": "i", "command": ["true"]}, "bogusField": 1}]}}
        r = self._post(vertex, body)
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["status"] == "INVALID_ARGUMENT" and error["code"] == 400
        assert ('Unknown name "bogusField" at \'custom_job.job_spec.worker_pool_specs[0]\''
                in error["message"])

    def test_missing_fields_listed(self, vertex: VertexEmulator) -> None:
        r = self._post(vertex, {"jobSpec": {"workerPoolSpecs": [{"replicaCount": "1"}]}})
        assert r.status_code == 400
        message = r.json()["error"]["message"]
        for field in ("custom_job.display_name",
                      "custom_job.job_spec.worker_pool_specs[0].machine_spec.machine_type",
                      "container_spec or python_package_spec"):
            assert field in message

    def test_missing_container_spec_via_sdk(self, vertex: VertexEmulator) -> None:
        job = aiplatform.CustomJob(display_name="bad", staging_bucket="gs://unused",
                                   worker_pool_specs=[{"machine_spec": {"machine_type": "n1"},
                                                       "replica_count": 1}])
        with pytest.raises(api_exceptions.BadRequest, match="container_spec"):
            job.submit()

    def test_not_found(self, vertex: VertexEmulator) -> None:
        with pytest.raises(api_exceptions.NotFound):
            aiplatform.CustomJob.get(f"projects/{PROJECT}/locations/us-central1/customJobs/1")


@pytest.fixture(scope="module")
def pipeline_json(tmp_path_factory: pytest.TempPathFactory) -> str:
    from helpers.tiny_pipeline import compile_to

    return compile_to(str(tmp_path_factory.mktemp("pipeline") / "tiny.json"))


def pipeline_job(pipeline_json: str, root: str, name: str) -> aiplatform.PipelineJob:
    # A unique ID: the SDK's default (pipeline name + time in seconds) collides within a
    # second, and the emulator, like Vertex AI, answers 409 ALREADY_EXISTS.
    return aiplatform.PipelineJob(display_name=name, template_path=pipeline_json,
                                  job_id=f"{name}-{uuid.uuid4().hex[:12]}",
                                  pipeline_root=root, parameter_values={"text": "x"})


@pytest.fixture
def pipeline_root(make_bucket) -> str:
    """A gs:// pipeline root on the GCS emulator (Vertex AI accepts no other)."""
    return f"gs://{make_bucket('root')}/pipeline-root"


class TestSchedules:
    """Schedules validate their cron, list, pause, resume and delete, and start a pipeline job
    at each due cron time while ACTIVE."""

    def _schedule(self, pipeline_json: str, root: str, cron: str, **kw):
        job = pipeline_job(pipeline_json, root, "s")
        schedule = aiplatform.PipelineJobSchedule(pipeline_job=job, display_name="sched")
        schedule.create(cron=cron, max_concurrent_run_count=1, **kw)
        return schedule

    def test_lifecycle(self, vertex: VertexEmulator, pipeline_json: str,
                       pipeline_root: str) -> None:
        schedule = self._schedule(pipeline_json, pipeline_root,
                                  "TZ=America/New_York 30 9 * * MON-FRI")
        gca = schedule.gca_resource
        assert schedule.state == aiplatform.compat.types.schedule.Schedule.State.ACTIVE
        next_run = gca.next_run_time.astimezone(ZoneInfo("America/New_York"))
        assert (next_run.hour, next_run.minute) == (9, 30) and next_run.weekday() < 5
        assert gca.next_run_time > gca.create_time
        assert schedule.resource_name in {s.resource_name
                                          for s in aiplatform.PipelineJobSchedule.list()}
        schedule.pause()
        assert schedule.state == aiplatform.compat.types.schedule.Schedule.State.PAUSED
        schedule.resume()
        assert schedule.state == aiplatform.compat.types.schedule.Schedule.State.ACTIVE
        schedule.delete()
        assert schedule.resource_name not in {s.resource_name
                                              for s in aiplatform.PipelineJobSchedule.list()}

    def test_bad_cron(self, vertex: VertexEmulator, pipeline_json: str,
                      pipeline_root: str) -> None:
        with pytest.raises(api_exceptions.BadRequest, match="minute"):
            self._schedule(pipeline_json, pipeline_root, "61 * * * *")

    def test_due_run_started(self, vertex: VertexEmulator, pipeline_json: str,
                             pipeline_root: str) -> None:
        schedule = self._schedule(pipeline_json, pipeline_root, "*/5 * * * *", max_run_count=1)
        due = schedule.gca_resource.next_run_time
        started = vertex.schedules.tick(now=due)
        assert len(started) == 1
        (run,) = schedule.list_jobs()
        assert run.resource_name == started[0]
        schedule.wait()  # max_run_count reached: the schedule completes
        assert schedule.state == aiplatform.compat.types.schedule.Schedule.State.COMPLETED


class TestClientSetup:
    """VERTEX_AI_EMULATOR_HOST must be a URL: anything else is a one-line ConfigError."""

    def test_malformed_host(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(EMULATOR_ENV, "127.0.0.1:9024")
        with pytest.raises(ConfigError, match="not a URL"):
            init_aiplatform(PROJECT, "us-central1")


class TestEmulatorsUp:
    """`emulators up` prints both export lines, serves the Vertex API with the --scenario file,
    stops on SIGTERM; a bad scenario file is a one-line error, exit 2."""

    def test_up_with_scenario(self, tmp_path: Path) -> None:
        scenario = tmp_path / "s.json"
        scenario.write_text(json.dumps({"seed": 1, "grace_seconds": 1,
                                        "regions": {"europe-west1": {"quota_exceeded": True}}}))
        gcs_port, vertex_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if k not in (EMULATOR_ENV,
                                                                  "STORAGE_EMULATOR_HOST")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "vertex_patterns.cli", "emulators", "up", "--gcs-port",
             str(gcs_port), "--vertex-port", str(vertex_port), "--scenario", str(scenario)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert proc.stdout is not None
            first, second = proc.stdout.readline().strip(), proc.stdout.readline().strip()
            assert first == f"export STORAGE_EMULATOR_HOST=http://127.0.0.1:{gcs_port}"
            assert second == f"export {EMULATOR_ENV}=http://127.0.0.1:{vertex_port}"
            url = second.split("=", 1)[1]
            body = {"displayName": "q", "jobSpec": {"workerPoolSpecs": [{
                "machineSpec": {"machineType": "n1-standard-4"}, "replicaCount": "1",
                "containerSpec": {"imageUri": "i", "command": ["true"]}}]}}
            r = requests.post(f"{url}/v1/projects/p/locations/europe-west1/customJobs",
                              json=body, timeout=10)
            assert r.status_code == 429
            assert r.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            assert "Traceback" not in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()

    def test_bad_scenario(self, tmp_path: Path) -> None:
        scenario = tmp_path / "s.json"
        scenario.write_text(json.dumps({"regions": {"us-east1": {"preempt_soon": True}}}))
        proc = subprocess.run(
            [sys.executable, "-m", "vertex_patterns.cli", "emulators", "up", "--gcs-port",
             str(free_port()), "--scenario", str(scenario)],
            capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert "preempt_soon" in proc.stderr
