"""The spot launcher through the real google-cloud-aiplatform SDK against the Vertex AI
emulator, running the real trainer (digits, --deterministic) with run dirs on the GCS emulator.

Invariants: preempted attempts resume in other regions from fanned-out checkpoints and end with
the model an uninterrupted run makes; stockouts move on to the next region and the job writes to
that region's bucket; exhaustion, user errors and bad specs end the launch with the right exit
code (bad specs before any request); a killed launcher re-attaches instead of duplicating; a
SIGTERM'd launcher cancels its job; two replicas train as two DDP ranks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import pytest
import torch
from safetensors.torch import load as load_safetensors

from conftest import VERTEX_TEST_TIMINGS, wait_for
from vertex_patterns.cli.main import main as cli_main
from vertex_patterns.emulators.vertex import RegionFaults, Scenario, Timings, VertexEmulator
from vertex_patterns.launcher import (
    Classified,
    JobSpec,
    Launcher,
    LaunchPolicy,
    Outcome,
    RegionPlanner,
)
from vertex_patterns.storage import Storage

PROJECT = "emu-project"
R1, R2, R3 = "us-east1", "us-west1", "europe-west4"


def train_command(max_steps: int, *extra: str, every: int = 5) -> list[str]:
    return ["python", "-m", "vertex_patterns.train", "--workload", "digits", "--run-dir",
            "{run_dir}", "--max-steps", str(max_steps), "--checkpoint-every-steps", str(every),
            "--seed", "7", "--deterministic", "--grace-seconds", "1.8",
            "--grace-margin-seconds", "0.3", *extra]


@pytest.fixture
def vertex(vertex_emulator: VertexEmulator, monkeypatch: pytest.MonkeyPatch):
    """The session emulator; workers get one thread each; the scenario is reset afterwards."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield vertex_emulator
    vertex_emulator.reset_scenario()


@pytest.fixture
def template(store: Storage) -> str:
    """A run-dir template over three fresh regional buckets on the GCS emulator."""
    stem = f"lt{uuid.uuid4().hex[:8]}"
    for region in (R1, R2, R3):
        store.gcs.client().create_bucket(f"{stem}-{region}")
    return f"gs://{stem}-{{region}}/runs/digits"


def use_scenario(emulator: VertexEmulator, regions: dict[str, RegionFaults], **limits) -> None:
    emulator.set_scenario(Scenario(seed=3, regions=regions,
                                   timings=Timings(**VERTEX_TEST_TIMINGS), **limits))


def policy(template: str, regions=(R1, R2, R3), **kw) -> LaunchPolicy:
    return LaunchPolicy(project=PROJECT, regions=tuple(regions), run_dir_template=template,
                        poll_seconds=0.2, **kw)


def spec(command: list[str], **kw) -> JobSpec:
    return JobSpec(display_name=kw.pop("display_name", f"t{uuid.uuid4().hex[:6]}"),
                   image=kw.pop("image", "us-docker.pkg.dev/emu/trainer:1"),
                   machine_type="n1-standard-4", command=tuple(command), **kw)


def job_count(emulator: VertexEmulator) -> int:
    return len(emulator.custom_jobs.jobs.entries)


def model_tensors(store: Storage, model_dir: str) -> dict[str, torch.Tensor]:
    return load_safetensors(store.read_bytes(f"{model_dir}/model.safetensors"))


def cli_args(template: str, regions: str, *extra: str) -> list[str]:
    return ["launch", "--project", PROJECT, "--regions", regions, "--image", "img:1",
            "--machine-type", "n1-standard-4", "--run-dir-template", template,
            "--poll-seconds", "0.2", *extra]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class TestPreemptedResumesAcrossRegions:
    """Preempted in two regions, the job resumes in the third from the checkpoints the earlier
    attempts fanned out, and its final model equals an uninterrupted run's bit for bit."""

    def test_preempted_twice_then_completes(self, vertex, store, template, tmp_path) -> None:
        # No restarts inside a job: each preemption fails the job, the launcher moves on.
        # Each attempt is reclaimed a few seconds into training (startup takes ~4 s), long
        # before the 15000 steps (~15 s) are done.
        use_scenario(vertex, {R1: RegionFaults(preempt_after_seconds=(7.0,)),
                              R2: RegionFaults(preempt_after_seconds=(7.0,))},
                     max_preemption_restarts=0)
        command = train_command(15000, every=1000)
        history = Launcher(spec(command), policy(template)).run()
        assert [a.outcome for a in history.attempts] == ["preempted", "preempted", "succeeded"]
        assert [a.region for a in history.attempts] == [R1, R2, R3]
        assert history.final_outcome == "succeeded" and history.final_region == R3
        from vertex_patterns.training.goodput_summary import read_attempts

        final = read_attempts(template.format(region=R3))
        assert final and all(r.restored and (r.resumed_from_step or 0) > 0 for r in final)

        reference = tmp_path / "reference"
        argv = [str(reference) if a == "{run_dir}" else a for a in command]
        subprocess.run([sys.executable, *argv[1:]], check=True, capture_output=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
        got = model_tensors(store, f"{template.format(region=R3)}/model")
        want = model_tensors(Storage(), str(reference / "model"))
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want)


class TestStockoutFailover:
    """Stockouts in the first two regions land the job in the third, which writes under its own
    bucket (baseOutputDirectory) and reads the other regions' checkpoint dirs as replicas."""

    def test_lands_in_third_region(self, vertex, store, template) -> None:
        use_scenario(vertex, {R1: RegionFaults(stockout_strategies=("SPOT",)),
                              R2: RegionFaults(stockout_strategies=("SPOT",))})
        history = Launcher(spec(train_command(10)), policy(template)).run()
        assert [a.outcome for a in history.attempts] == ["stockout", "stockout", "succeeded"]
        job = vertex.job_record(history.attempts[-1].job)["job"]
        run_dir = template.format(region=R3)
        assert job["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"] == run_dir
        args = job["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"]
        assert args[args.index("--run-dir") + 1] == run_dir
        assert [args[i + 1] for i, a in enumerate(args) if a == "--replica"] == [
            f"{template.format(region=r)}/checkpoints" for r in (R1, R2)]
        assert store.exists(f"{run_dir}/model/model.safetensors")
        assert not store.exists(f"{template.format(region=R1)}/model/model.safetensors")


class TestImagePerRegion:
    """`{region}` in the image URI is filled in per attempt: a job that fails over pulls from
    its own region's registry."""

    def test_each_job_names_its_region_registry(self, vertex, template) -> None:
        use_scenario(vertex, {R1: RegionFaults(stockout_strategies=("SPOT",))})
        image = "{region}-docker.pkg.dev/emu/trainers/digits:0.1.0"
        history = Launcher(spec(["python", "-c", "pass"], image=image),
                           policy(template, regions=(R1, R2))).run()
        assert [(a.region, a.outcome) for a in history.attempts] == [
            (R1, "stockout"), (R2, "succeeded")]
        for attempt in history.attempts:
            pools = vertex.job_record(attempt.job)["job"]["jobSpec"]["workerPoolSpecs"]
            assert pools[0]["containerSpec"]["imageUri"] == \
                f"{attempt.region}-docker.pkg.dev/emu/trainers/digits:0.1.0"


class TestExhaustion:
    """When every region fails for capacity, exit 1 with each region's reason; the history
    file has the documented JSON shape."""

    def test_every_region_exhausted(self, vertex, template, tmp_path, capsys) -> None:
        use_scenario(vertex, {R1: RegionFaults(stockout_strategies=("SPOT",)),
                              R2: RegionFaults(quota_exceeded=True),
                              R3: RegionFaults(stockout_strategies=("SPOT",))})
        history_file = tmp_path / "h.json"
        code = cli_main(cli_args(template, f"{R1},{R2},{R3}", "--history", str(history_file),
                                 "--", "python", "-c", "pass"))
        assert code == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert f"{R1}: stockout" in err and f"{R2}: quota" in err and f"{R3}: stockout" in err
        doc = json.loads(history_file.read_text())
        assert set(doc) == {"attempts", "final"}
        assert [a["outcome"] for a in doc["attempts"]] == ["stockout", "quota", "stockout"]
        assert all(set(a) == {"region", "strategy", "job", "outcome", "started", "ended",
                              "error"} for a in doc["attempts"])
        assert doc["attempts"][1]["job"] == "" and "RESOURCE_EXHAUSTED" not in doc["final"]
        assert doc["final"] == {"outcome": "stockout", "region": R3}


class TestUserErrors:
    """A non-zero exit of the user's command fails fast; only listed exit codes are retried,
    in the same region."""

    def test_trainer_bad_input_not_retried(self, vertex, template) -> None:
        before = job_count(vertex)
        history = Launcher(spec(train_command(10, "--workload", "no-such-workload")),
                           policy(template)).run()
        assert [(a.region, a.outcome) for a in history.attempts] == [(R1, "user_error")]
        assert "non-zero status of 2" in (history.attempts[0].error or "")
        assert history.final_outcome == "user_error" and job_count(vertex) == before + 1

    def test_listed_exit_code_retried_in_place(self, vertex, template) -> None:
        command = ["python", "-c", "import sys; sys.exit(5)"]
        history = Launcher(spec(command), policy(template, retry_exit_codes=(5,),
                                                 max_attempts=2)).run()
        assert [(a.region, a.outcome) for a in history.attempts] == [(R1, "user_error")] * 2

    def test_unhealthy_not_retried_hung_retried_in_place(self, vertex, template) -> None:
        """Trainer exit 3 (health incident) stops the launch; exit 4 (hang) is retried in the
        same region, `hang_retries` times."""
        unhealthy = Launcher(spec(["python", "-c", "import sys; sys.exit(3)"]),
                             policy(template)).run()
        assert [(a.region, a.outcome) for a in unhealthy.attempts] == [(R1, "unhealthy")]
        assert unhealthy.final_outcome == "unhealthy"
        hung = Launcher(spec(["python", "-c", "import sys; sys.exit(4)"]),
                        policy(template, hang_retries=1)).run()
        assert [(a.region, a.outcome) for a in hung.attempts] == [(R1, "hung")] * 2
        assert hung.final_outcome == "hung"


class TestRestartSafety:
    """A launcher killed with SIGKILL and started again with the same state file re-attaches
    to the running job: one job in all, and the launch succeeds."""

    def test_killed_launcher_reattaches(self, vertex, template, tmp_path) -> None:
        state = tmp_path / "gcp_resources.json"
        history_file = tmp_path / "h.json"
        argv = [sys.executable, "-m", "vertex_patterns.cli", *cli_args(
            template, f"{R1},{R2}", "--display-name", "restart", "--state-file", str(state),
            "--history", str(history_file), "--", *train_command(20))]
        first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for(state.exists, what="state file")
        first.kill()
        first.wait()
        (resource,) = json.loads(state.read_text())["resources"]
        name = resource["resourceUri"].split("/v1/", 1)[1]
        assert resource["resourceType"] == "CustomJob"
        assert resource["resourceUri"].startswith(f"https://{R1}-aiplatform.googleapis.com/v1/")
        second = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr
        doc = json.loads(history_file.read_text())
        assert [a["job"] for a in doc["attempts"]] == [name]
        launched = [e.message.name for e in vertex.custom_jobs.jobs.entries.values()
                    if e.message.display_name.startswith("restart-")]
        assert launched == [name]


class TestSigtermCancels:
    """SIGTERM to the launcher cancels the remote job: CANCELLED, its worker process gone,
    exit 1."""

    def test_sigterm(self, vertex, template, tmp_path) -> None:
        state = tmp_path / "gcp_resources.json"
        argv = [sys.executable, "-m", "vertex_patterns.cli", *cli_args(
            template, R1, "--state-file", str(state), "--", *train_command(100000))]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for(state.exists, what="state file")
        (resource,) = json.loads(state.read_text())["resources"]
        name = resource["resourceUri"].split("/v1/", 1)[1]
        attempts = wait_for(lambda: vertex.job_record(name)["attempts"], what="worker start")
        pid = attempts[0]["pids"]["workerpool0-0"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 1
        record = vertex.job_record(name)
        assert record["job"]["state"] == "JOB_STATE_CANCELLED"
        assert not alive(pid)


class TestDistributed:
    """replica_count 2: a primary pool and a second pool, the trainer runs as two DDP ranks with
    Vertex AI's MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK, and the job succeeds."""

    def test_two_ranks(self, vertex, store, template) -> None:
        history = Launcher(spec(train_command(10), replica_count=2),
                           policy(template, regions=(R1,))).run()
        assert history.final_outcome == "succeeded", history.attempts
        name = history.attempts[0].job
        pools = vertex.job_record(name)["job"]["jobSpec"]["workerPoolSpecs"]
        assert [int(p["replicaCount"]) for p in pools] == [1, 1]
        assert "rank 0 of 2 joined" in vertex.worker_log(name, "workerpool0-0")
        assert "rank 1 of 2 joined" in vertex.worker_log(name, "workerpool1-0")
        assert store.exists(f"{template.format(region=R1)}/model/model.safetensors")


class TestPlannerPolicies:
    """EAGER_NEXT_REGION moves on at once; FAILOVER retries the region first; preempting
    regions stay in the rotation; the preemption budget switches SPOT to STANDARD."""

    def _run(self, failover: str, outcomes: list[Outcome], **kw) -> list[tuple[str, str]]:
        planner = RegionPlanner(policy("gs://b-{region}/r", regions=(R1, R2), failover=failover,
                                       **kw), "SPOT")
        seen = []
        for outcome in outcomes:
            nxt = planner.next()
            assert nxt is not None
            seen.append((nxt.region, nxt.strategy))
            planner.observe(nxt.region, Classified(outcome, "x"))
        return seen

    def test_eager_vs_failover(self) -> None:
        stock = [Outcome.STOCKOUT, Outcome.STOCKOUT]
        assert self._run("EAGER_NEXT_REGION", stock) == [(R1, "SPOT"), (R2, "SPOT")]
        assert self._run("FAILOVER", [*stock, Outcome.STOCKOUT]) == [
            (R1, "SPOT"), (R1, "SPOT"), (R2, "SPOT")]

    def test_preemption_budget_falls_back(self) -> None:
        seen = self._run("EAGER_NEXT_REGION", [Outcome.PREEMPTED] * 3,
                         spot_preemption_budget=2)
        assert seen == [(R1, "SPOT"), (R2, "SPOT"), (R1, "STANDARD")]


class TestBadSpecsRejected:
    """Impossible job specs are one-line errors with exit 2, and no request reaches Vertex."""

    @pytest.mark.parametrize("extra, message", [
        (["--regions", "us-nowhere1"], "unknown Vertex AI region"),
        (["--accelerator", "A100:1"], "cannot take NVIDIA_TESLA_A100"),
        (["--machine-type", "g2-standard-8", "--accelerator", "L4:2"], "takes 1 x NVIDIA_L4"),
        (["--machine-type", "a2-highgpu-1g"], "comes with GPUs"),
        (["--timeout", "ten minutes"], "not a duration"),
        (["--max-wait", "1h"], "flex-start only"),
        (["--replica-count", "0"], "at least 1"),
        (["--kms-key", "projects/p/locations/us-east1/keyRings/r/cryptoKeys/k"], "{region}"),
        (["--run-dir-template", "gs://one-bucket/runs/x"], "must contain {region}"),
        (["--image", "{zone}-docker.pkg.dev/p/r/t:1"], "only {region} may be filled in"),
        (["--image", "{region-docker.pkg.dev/p/r/t:1"], "unmatched brace"),
    ])
    def test_rejected_before_any_request(self, vertex, capsys, extra, message) -> None:
        before = job_count(vertex)
        args = cli_args("gs://b-{region}/r/x", f"{R1},{R2}")
        code = cli_main([*args, *extra, "--", "python", "-c", "pass"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and message in err, err
        # The container command after `--` is not mistaken for the CLI's command name.
        assert err.startswith("vertex-patterns launch: error: "), err
        assert job_count(vertex) == before


class TestSpotTrainComponent:
    """spot_train runs under kfp.local: it fails over past a stockout, and reports its history,
    metrics and the final region's checkpoint and model URIs."""

    def test_runs_locally(self, vertex, store, template, kfp_local) -> None:
        from vertex_patterns.pipelines.spot_train import spot_train

        use_scenario(vertex, {R1: RegionFaults(stockout_strategies=("SPOT",))})
        task = spot_train(project=PROJECT, regions=[R1, R2], image="img:1",
                          machine_type="n1-standard-4", command=train_command(10),
                          run_dir_template=template, poll_seconds=0.2)
        run_dir = template.format(region=R2)
        assert task.outputs["model_uri"] == f"{run_dir}/model"
        assert task.outputs["checkpoint_uri"].startswith(f"{run_dir}/checkpoints/step-")
        metrics = task.outputs["metrics"].metadata
        assert metrics["attempts"] == 2 and metrics["stockouts"] == 1
        assert metrics["regions_used"] == 2 and metrics["succeeded"] == 1
        assert 0 < metrics["goodput_pct"] <= 100
        with open(task.outputs["history"].path) as f:
            assert json.load(f)["final"] == {"outcome": "succeeded", "region": R2}
