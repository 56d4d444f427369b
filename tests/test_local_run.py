"""`vertex-patterns run spot_training --local`: the main job end to end on the emulators. The
pipeline's tasks really run, the trainer meets a stockout and a preemption, fails over and
resumes, and the run leaves summary.json and report.html behind; a run that cannot succeed
fails with exit 1 and still leaves its report."""

from __future__ import annotations

import json
from pathlib import Path

from vertex_patterns.cli.main import main

FAST = {"seed": 1, "max_preemption_restarts": 0,
        "timings": {"queued_seconds": 0.1, "pending_seconds": 0.1, "restart_seconds": 0.1,
                    "grace_seconds": 5}}


def scenario(tmp_path: Path, regions: dict) -> str:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({**FAST, "regions": regions}))
    return str(path)


class TestSpotTrainingLocally:
    """Failover and resume happen inside the pipeline, and the summary says so."""

    def test_run(self, tmp_path: Path, capsys) -> None:
        out = tmp_path / "run"
        code = main(["run", "spot_training", "--local", "--output-dir", str(out),
                     "--max-steps", "3000", "--scenario", scenario(tmp_path, {
                         "us-central1": {"stockout": True},
                         "us-east1": {"preempt_after_seconds": [6]}})])
        printed = capsys.readouterr().out
        assert code == 0, printed
        summary = json.loads((out / "summary.json").read_text())
        for key in ("state", "regions_used", "preemptions", "steps", "goodput_pct",
                    "model_uri", "tasks"):
            assert key in summary, key
        assert summary["state"] == "SUCCEEDED"
        assert summary["preemptions"] == 1
        assert "europe-west4" in str(summary["regions_used"])
        assert summary["steps"] == 3000
        assert summary["model_uri"].startswith("gs://vp-ckpt-europe-west4/")
        names = {t["name"] for t in summary["tasks"]}
        assert {"replicate-data", "spot-train", "verify-checkpoints"} <= names
        html = (out / "report.html").read_text()
        assert "<svg" in html
        assert "spot-train" in printed  # per-task progress and durations were printed

    def test_failed_run_still_reports(self, tmp_path: Path, capsys) -> None:
        out = tmp_path / "run"
        everywhere = {"stockout": ["SPOT", "STANDARD"]}
        code = main(["run", "spot_training", "--local", "--output-dir", str(out),
                     "--max-steps", "100", "--scenario", scenario(tmp_path, {
                         r: everywhere for r in ("us-central1", "us-east1", "europe-west4")})])
        assert code == 1
        summary = json.loads((out / "summary.json").read_text())
        assert summary["state"] == "FAILED"
        assert "spot-train" in capsys.readouterr().err
        assert (out / "report.html").exists()
