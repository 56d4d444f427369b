"""The pipelines: compiled JSON that Vertex AI runs, parameters checked before anything is
submitted, and each pipeline executed end to end on the emulators (data really replicated,
checkpoints really restored), through the CLI and through a user's own pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import pytest
from google.cloud import aiplatform
from google.cloud.aiplatform_v1.types import PipelineState
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from conftest import read_tree, wait_for, write_tree
from vertex_patterns.cli.main import main
from vertex_patterns.errors import ConfigError
from vertex_patterns.pipelines.image import IMAGE
from vertex_patterns.runs.params import check_parameters
from vertex_patterns.storage import Storage
from vertex_patterns.vertex_client import init_aiplatform

REPO = Path(__file__).resolve().parents[1]
PROJECT = "pipelines-project"
REGION = "us-central1"
DONE = (PipelineState.PIPELINE_STATE_SUCCEEDED, PipelineState.PIPELINE_STATE_FAILED,
        PipelineState.PIPELINE_STATE_CANCELLED)


def spec(name: str) -> dict:
    return json.loads((REPO / "pipelines" / f"{name}.json").read_text())


def finished(job: aiplatform.PipelineJob) -> aiplatform.PipelineJob:
    wait_for(lambda: job.state in DONE, timeout=240, what="pipeline end")
    return job


def by_name(job: aiplatform.PipelineJob) -> dict:
    return {t.task_name: t for t in job.task_details}


class TestCompiled:
    """pipelines/*.json are PipelineSpecs; --image moves every component to another image."""

    def test_checked_in_specs_parse(self) -> None:
        for name in ("spot_training", "data_replication", "dr_drill"):
            parsed = json_format.ParseDict(spec(name), pipeline_spec_pb2.PipelineSpec(),
                                           ignore_unknown_fields=False)
            assert parsed.root.dag.tasks, name

    def test_image_option(self, tmp_path: Path) -> None:
        image = "europe-docker.pkg.dev/acme/ml/vertex-patterns-python:7"
        assert main(["compile", "--output-dir", str(tmp_path), "--image", image]) == 0
        text = (tmp_path / "pipelines" / "spot_training.json").read_text()
        compiled = json.loads(text)
        images = {e["container"]["image"]
                  for e in compiled["deploymentSpec"]["executors"].values()}
        assert images == {image}
        default = compiled["root"]["inputDefinitions"]["parameters"]["trainer_image"]
        assert default["defaultValue"] == image and IMAGE not in text
        assert f"image: {image}" in (tmp_path / "components" / "spot_train.yaml").read_text()

    def test_bad_image_is_one_line(self, tmp_path: Path, capsys) -> None:
        assert main(["compile", "--output-dir", str(tmp_path), "--image", "NOT AN IMAGE"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--image" in err
        assert not (tmp_path / "pipelines").exists()


class TestParameters:
    """Every bad parameter is one ConfigError naming it, before any request."""

    @pytest.mark.parametrize("given, message", [
        ({}, "project is required"),
        ({"nope": 1}, "unknown parameter nope"),
        ({"max_attempts": "three"}, "max_attempts"),
        ({"run_dir_template": "gs://ckpt/runs/x"}, "{region}"),
        ({"regions": ["us-central1", "mars-north1"]}, "mars-north1"),
        ({"machine_type": "n1-fake-99"}, "n1-fake-99"),
        ({"accelerator": "T4:zero"}, "COUNT"),
        ({"data_replica_uris": []}, "data_replica_uris"),
    ])
    def test_spot_training_rejects(self, given: dict, message: str) -> None:
        from vertex_patterns.pipelines.compile import EXAMPLE_PARAMETERS

        values = {**EXAMPLE_PARAMETERS["spot_training"], **given}
        if not given:
            values.pop("project")
        with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
            check_parameters(spec("spot_training"), values)

    def test_bad_submit_sends_nothing(self, vertex_emulator, capsys) -> None:
        code = main(["submit", str(REPO / "pipelines" / "data_replication.json"),
                     "--project", PROJECT, "--region", REGION, "--pipeline-root", "gs://r/x",
                     "--param", "source_uri=gs://src-bucket/x",
                     "--param", 'replica_uris=["gs://src-bucket/x"]'])
        assert code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "own replica" in err
        init_aiplatform(PROJECT, REGION)
        assert aiplatform.PipelineJob.list() == []


class TestDataReplication:
    """`submit --wait` runs data_replication on the emulator: exit 0 with the data in every
    replica; a missing source bucket fails the job, exit 1, the failing task's error shown."""

    def test_submit_wait(self, vertex_emulator, store: Storage, make_bucket, capsys) -> None:
        files = {"a.bin": b"a" * 3000, "d/b.bin": b"b" * 5000}
        src = f"gs://{make_bucket('src')}/data"
        write_tree(store, src, files)
        replicas = [f"gs://{make_bucket('eu')}/data", f"gs://{make_bucket('as')}/data"]
        code = main(["submit", str(REPO / "pipelines" / "data_replication.json"),
                     "--project", PROJECT, "--region", REGION,
                     "--pipeline-root", f"gs://{make_bucket('root')}/runs",
                     "--param", f"source_uri={src}", "--param",
                     f"replica_uris={json.dumps(replicas)}", "--label", "team=ml",
                     "--wait", "--poll-seconds", "0.2"])
        out = capsys.readouterr().out
        assert code == 0, out
        name = out.splitlines()[0]
        assert name.startswith(f"projects/{PROJECT}/locations/{REGION}/pipelineJobs/")
        for replica in replicas:
            assert read_tree(store, replica) == files
        job = aiplatform.PipelineJob.get(name)
        assert job.gca_resource.labels["team"] == "ml"
        tasks = by_name(job)
        assert tasks["verify-replicas"].state.name == "SUCCEEDED"
        (metrics,) = tasks["verify-replicas"].outputs["metrics"].artifacts
        assert metrics.metadata["ok"] == 1 and metrics.metadata["objects"] == 2

    def test_failure_exit_1(self, vertex_emulator, make_bucket, capsys) -> None:
        code = main(["submit", str(REPO / "pipelines" / "data_replication.json"),
                     "--project", PROJECT, "--region", REGION,
                     "--pipeline-root", f"gs://{make_bucket('root')}/runs",
                     "--param", "source_uri=gs://no-such-bucket-here/data",
                     "--param", f'replica_uris=["gs://{make_bucket("r")}/data"]',
                     "--wait", "--poll-seconds", "0.2"])
        err = capsys.readouterr().err
        assert code == 1
        assert "replicate-data" in err and "no-such-bucket-here" in err


class TestSchedule:
    """schedule create/list/pause/resume/delete; a due run executes and replicates."""

    def test_lifecycle_and_run(self, vertex_emulator, store: Storage, make_bucket,
                               capsys) -> None:
        src = f"gs://{make_bucket('src')}/data"
        write_tree(store, src, {"x.bin": b"x" * 100})
        replica = f"gs://{make_bucket('dst')}/data"
        base = ["--project", PROJECT, "--region", REGION]
        assert main(["schedule", "create", str(REPO / "pipelines" / "data_replication.json"),
                     *base, "--pipeline-root", f"gs://{make_bucket('root')}/runs",
                     "--param", f"source_uri={src}", "--param",
                     f"replica_uris={json.dumps([replica])}", "--cron",
                     "TZ=Europe/Berlin */5 * * * *", "--max-runs", "1"]) == 0
        name = capsys.readouterr().out.strip()
        schedule_id = name.rsplit("/", 1)[-1]
        assert main(["schedule", "list", *base]) == 0
        assert name in capsys.readouterr().out
        assert main(["schedule", "pause", schedule_id, *base]) == 0
        assert main(["schedule", "resume", schedule_id, *base]) == 0
        due = vertex_emulator.schedules.get(name).next_run_time.ToDatetime()
        import datetime as dt

        (started,) = vertex_emulator.schedules.tick(now=due.replace(tzinfo=dt.timezone.utc))
        run = finished(aiplatform.PipelineJob.get(started))
        assert run.state == PipelineState.PIPELINE_STATE_SUCCEEDED
        assert read_tree(store, replica) == {"x.bin": b"x" * 100}
        assert main(["schedule", "delete", schedule_id, *base]) == 0
        assert capsys.readouterr().out.startswith("paused ")  # pause, resume, delete lines
        assert main(["schedule", "list", *base]) == 0
        assert name not in capsys.readouterr().out

    def test_bad_cron_creates_nothing(self, vertex_emulator, capsys) -> None:
        code = main(["schedule", "create", str(REPO / "pipelines" / "data_replication.json"),
                     "--project", PROJECT, "--region", REGION, "--pipeline-root", "gs://r1/x",
                     "--param", "source_uri=gs://src-bucket/x",
                     "--param", 'replica_uris=["gs://dst-bucket/x"]', "--cron", "* * *"])
        assert code == 2 and "--cron" in capsys.readouterr().err


class TestUserPipeline:
    """A user's pipeline using a component from components/*.yaml and one imported from
    vertex_patterns.pipelines runs on the emulator; the data is really in the replica."""

    def test_runs(self, vertex_emulator, store: Storage, make_bucket, tmp_path: Path) -> None:
        from helpers.user_pipeline import compile_to

        files = {"one.bin": b"1" * 2048, "two/three.bin": b"3" * 4096}
        src = f"gs://{make_bucket('src')}/in"
        write_tree(store, src, files)
        replica = f"gs://{make_bucket('dst')}/out"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            path = compile_to(str(tmp_path / "mine.json"))
        init_aiplatform(PROJECT, REGION)
        job = aiplatform.PipelineJob(display_name="mine", template_path=path,
                                     job_id=f"mine-{uuid.uuid4().hex[:8]}",
                                     pipeline_root=f"gs://{make_bucket('root')}/runs",
                                     parameter_values={"source": src, "replica": replica})
        job.submit()
        finished(job)
        assert job.state == PipelineState.PIPELINE_STATE_SUCCEEDED, job.gca_resource.error
        assert read_tree(store, replica) == files
        assert by_name(job)["verify-replicas"].state.name == "SUCCEEDED"


def _train(run_dir: str, steps: int, *extra: str) -> None:
    subprocess.run([sys.executable, "-m", "vertex_patterns.train", "--workload", "digits",
                    "--run-dir", run_dir, "--max-steps", str(steps),
                    "--checkpoint-every-steps", "100", "--seed", "1", *extra],
                   check=True, capture_output=True, timeout=240)


class TestDrDrill:
    """dr_drill restores the backup's newest step into a fresh run dir, resumes from it and
    reports RTO and RPO measured from what the runs wrote."""

    def test_drill(self, vertex_emulator, store: Storage, make_bucket) -> None:
        primary = f"gs://{make_bucket('ckpt-us')}/run"
        backup = f"gs://{make_bucket('ckpt-eu')}/run"
        _train(primary, 200, "--replica", f"{backup}/checkpoints")  # both hold step 200
        _train(primary, 300)  # the primary moves on; the backup does not
        drill_dir = f"gs://{make_bucket('drill')}/drill-1"
        init_aiplatform(PROJECT, REGION)
        job = aiplatform.PipelineJob(
            display_name="drill", template_path=str(REPO / "pipelines" / "dr_drill.json"),
            job_id=f"drill-{uuid.uuid4().hex[:8]}",
            pipeline_root=f"gs://{make_bucket('root')}/runs",
            parameter_values={"project": PROJECT, "backup_region": "europe-west4",
                              "primary_checkpoint_dir": f"{primary}/checkpoints",
                              "backup_checkpoint_dir": f"{backup}/checkpoints",
                              "drill_run_dir": drill_dir, "extra_steps": 20,
                              "poll_seconds": 0.2})
        job.submit()
        finished(job)
        assert job.state == PipelineState.PIPELINE_STATE_SUCCEEDED, job.gca_resource.error
        (metrics,) = by_name(job)["dr-report"].outputs["metrics"].artifacts
        assert metrics.metadata["rpo_steps"] == 100
        assert metrics.metadata["resumed_from_step"] == 200
        assert metrics.metadata["first_step_after_restore"] == 201
        assert metrics.metadata["rto_seconds"] > metrics.metadata["restore_seconds"] > 0
        # The backup was only read: it still holds exactly what the primary fanned out.
        from vertex_patterns.checkpoint.io import list_committed

        assert sorted(list_committed(store, f"{backup}/checkpoints")) == [100, 200]
        assert store.exists(f"{drill_dir}/model/config.json")
