"""`vertex-patterns health`: exit 0 healthy or warnings, 1 critical, 2 bad input; the --json
keys the issue names; run directories written by the trainer's own writers, local and gs://."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers.health_runs import write_run
from vertex_patterns.cli.main import main


def health(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["health", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


class TestVerdictsAndExitCodes:
    """Healthy runs exit 0, critical ones 1, and --json carries exactly the named keys."""

    def test_healthy_run_exits_0(self, tmp_path, capsys):
        run = str(tmp_path / "run")
        write_run(run, [2.0 - i * 0.001 for i in range(50)])
        code, out, _ = health(capsys, run, "--json")
        assert code == 0
        body = json.loads(out)
        assert body == {"verdict": "healthy", "findings": []}

    def test_nan_run_exits_1_with_the_finding(self, tmp_path, capsys):
        run = str(tmp_path / "run")
        write_run(run, [2.0] * 30 + [float("nan")])
        code, out, _ = health(capsys, run, "--json")
        assert code == 1
        body = json.loads(out)
        assert set(body) == {"verdict", "findings"}
        assert body["verdict"] == "critical"
        (finding,) = body["findings"]
        assert set(finding) == {"rule", "severity", "step", "evidence", "action"}
        assert (finding["rule"], finding["severity"], finding["step"]) == \
            ("non_finite", "critical", 31)

    def test_warning_only_exits_0(self, tmp_path, capsys):
        run = str(tmp_path / "run")
        write_run(run, [2.0] * 30, checkpoint=False)
        # Training started 30 s ago without a checkpoint: 30 s > 75% of a 35 s RPO.
        code, out, _ = health(capsys, run, "--json", "--rpo-seconds", "35")
        assert code == 0
        body = json.loads(out)
        assert body["verdict"] == "warning"
        assert [f["rule"] for f in body["findings"]] == ["checkpoint_stale"]

    def test_table_output_and_follow_on_a_completed_run(self, tmp_path, capsys):
        run = str(tmp_path / "run")
        write_run(run, [2.0] * 20, completed=True)
        code, out, _ = health(capsys, run, "--follow", "--poll-seconds", "0.01")
        assert code == 0
        assert out.startswith(f"{run}: healthy") and "completed" in out

    def test_gcs_run_dir(self, store, bucket, capsys):
        run = f"gs://{bucket}/runs/r1"
        write_run(run, [2.0] * 40 + [30.0] * 3, store=store)
        code, out, _ = health(capsys, run, "--json")
        assert code == 1
        assert [f["rule"] for f in json.loads(out)["findings"]] == ["loss_spike"]


class TestBadInput:
    """Unknown tier, missing run dir, negative windows: one line, exit 2."""

    @pytest.mark.parametrize("args,needle", [
        (["--rpo", "gold"], "unknown RPO tier 'gold'"),
        (["--rpo-seconds", "-5"], "--rpo-seconds must be > 0"),
        (["--follow", "--poll-seconds", "0"], "--poll-seconds must be > 0"),
    ])
    def test_one_line_exit_2(self, tmp_path, capsys, args, needle):
        run = str(tmp_path / "run")
        write_run(run, [2.0] * 5)
        code, _, err = health(capsys, run, *args)
        assert code == 2
        assert len(err.strip().splitlines()) == 1 and needle in err

    def test_missing_run_dir_in_a_subprocess(self, tmp_path):
        proc = subprocess.run([sys.executable, "-m", "vertex_patterns.cli", "health",
                               str(tmp_path / "nope")], capture_output=True, text=True,
                              timeout=120, env=dict(os.environ))
        assert proc.returncode == 2
        assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
        assert "Traceback" not in proc.stderr


class TestCancelJobOnCritical:
    """On a critical verdict the CustomJob is cancelled through the aiplatform SDK (against
    the Vertex AI emulator); --dry-run only says so, and leaves the job running."""

    def test_dry_run_then_cancel(self, vertex_emulator, tmp_path, capsys):
        from google.cloud import aiplatform
        from google.cloud.aiplatform_v1.types import JobState

        from conftest import wait_for
        from vertex_patterns.vertex_client import init_aiplatform

        init_aiplatform("emu-project", "us-central1")
        job = aiplatform.CustomJob(
            display_name="sick-run", staging_bucket="gs://unused-staging",
            worker_pool_specs=[{"machine_spec": {"machine_type": "n1-standard-4"},
                                "replica_count": 1, "container_spec": {
                                    "image_uri": "us-docker.pkg.dev/emu/trainer:1",
                                    "command": [sys.executable, "-c",
                                                "import time; time.sleep(120)"]}}])
        job.submit()
        # `state` reads the job again on each access.
        wait_for(lambda: job.state == JobState.JOB_STATE_RUNNING, what="job running")
        run = str(tmp_path / "run")
        write_run(run, [2.0] * 30 + [float("nan")])

        code, out, _ = health(capsys, run, "--json", "--cancel-job", job.resource_name,
                              "--dry-run")
        assert code == 1
        (finding,) = json.loads(out)["findings"]
        assert finding["action"] == f"would cancel {job.resource_name} (dry run)"
        assert job.state == JobState.JOB_STATE_RUNNING

        code, out, _ = health(capsys, run, "--json", "--cancel-job", job.resource_name)
        assert code == 1
        assert json.loads(out)["findings"][0]["action"] == f"cancelled {job.resource_name}"
        wait_for(lambda: job.state == JobState.JOB_STATE_CANCELLED,
                 what="job cancelled")

    def test_bad_job_name(self, tmp_path, capsys):
        run = str(tmp_path / "run")
        write_run(run, [2.0] * 3)
        code, _, err = health(capsys, run, "--cancel-job", "customJobs/1")
        assert code == 2 and "is not a CustomJob name" in err
