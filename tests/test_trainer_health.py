"""Incident response inside the trainer, run for real as subprocesses: a poisoned batch is
rewound and skipped; a NaN that keeps coming back stops with exit 3; a hang exits 4 with every
thread's stack in the log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from vertex_patterns.cli.main import main
from vertex_patterns.training.config import EXIT_HUNG, EXIT_OK, EXIT_UNHEALTHY
from vertex_patterns.training.metrics import read_metrics

HELPERS = str(Path(__file__).parent / "helpers")
SEED = 5


def args(run_dir: Path, *extra: str, max_steps: int = 20) -> list[str]:
    return ["--workload", "poisoned_workload:build", "--run-dir", str(run_dir),
            "--max-steps", str(max_steps), "--checkpoint-every-steps", "5", "--seed",
            str(SEED), "--log-every-steps", "1", *extra]


def env(**faults: int) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(p for p in (HELPERS, os.environ.get("PYTHONPATH"))
                                          if p),
            **{k: str(v) for k, v in faults.items()}}


@dataclass
class Attempt:
    code: int
    raw: str
    lines: list[dict]
    stderr: str


def run_attempt(argv: list[str], *, extra_env: dict[str, str]) -> Attempt:
    """One trainer process to its end; its stdout both raw and as JSON lines."""
    proc = subprocess.run([sys.executable, "-m", "vertex_patterns.train", *argv],
                          capture_output=True, text=True, timeout=180,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                               **extra_env})
    lines = []
    for raw in proc.stdout.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict):
            lines.append(line)
    return Attempt(proc.returncode, proc.stdout, lines, proc.stderr)


def events(run_dir: Path, kind: str) -> list[dict]:
    return [r for r in read_metrics(str(run_dir / "metrics")) if r.get("event") == kind]


class TestPoisonedBatchIsRewoundAndSkipped:
    """A NaN from one poisoned batch: the run rewinds to the checkpoint before it, skips the
    batches since, records it everywhere, and completes with finite loss and weights."""

    def test_rewind_and_skip(self, tmp_path: Path, capsys) -> None:
        from helpers.poisoned_workload import build, poisoned_id

        run = tmp_path / "run"
        attempt = run_attempt(args(run), extra_env=env(POISON_STEP=12))
        assert attempt.code == EXIT_OK, attempt.stderr[-3000:]
        (rewind,) = events(run, "rewind")
        assert (rewind["rule"], rewind["step"], rewind["to_step"]) == ("non_finite", 12, 10)
        assert rewind["skipped_batches"] == 2
        bad = poisoned_id(build(seed=SEED, device=torch.device("cpu")), SEED, 12)
        assert bad in rewind["skipped_sample_ids"]
        assert len(rewind["skipped_sample_ids"]) == rewind["skipped_samples"]
        logged = [line for line in attempt.lines if line.get("event") == "rewind"]
        assert logged and logged[0]["severity"] == "WARNING"
        # The run still did 20 steps of training, on finite losses after the rewind.
        steps = [r for r in read_metrics(str(run / "metrics"))
                 if "loss" in r and "event" not in r]
        after = steps[steps.index(next(r for r in steps if r["step"] == 12)) + 1:]
        assert [r["step"] for r in after] == list(range(11, 21))
        assert all(isinstance(r["loss"], float) for r in after)
        params = load_file(str(run / "model" / "model.safetensors"))
        assert all(torch.isfinite(t).all() for t in params.values())
        ledger = json.loads((run / "goodput.json").read_text())["total"]
        assert ledger["wasted_by_rewind_s"] > 0
        # The health check sees the spike answered by the rewind: healthy, exit 0.
        assert main(["health", str(run), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["verdict"] == "healthy"
        assert [(f["rule"], f["severity"]) for f in report["findings"]] == \
            [("non_finite", "info")]
        assert report["findings"][0]["action"].startswith("rewound to step 10")


class TestNanThatKeepsComingBack:
    """After --max-rewinds rewinds the next NaN stops the run: exit 3, an incident event,
    no checkpoint of non-finite weights."""

    def test_exit_3(self, tmp_path: Path) -> None:
        run = tmp_path / "run"
        attempt = run_attempt(args(run, "--max-rewinds", "2"),
                              extra_env=env(POISON_AFTER_CALLS=7))
        assert attempt.code == EXIT_UNHEALTHY, attempt.stderr[-3000:]
        assert len(events(run, "rewind")) == 2
        (incident,) = [line for line in attempt.lines if line.get("event") == "incident"]
        assert incident["severity"] == "CRITICAL" and incident["rule"] == "non_finite"
        assert "exit 3" in incident["action"] and "not saved" in incident["action"]
        assert events(run, "incident")[0]["rewinds"] == 2
        steps = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*"))
        assert steps == [5]  # nothing past the NaN was kept or saved
        assert not (run / "model").exists()


class TestHang:
    """A step that never finishes: exit 4 with every thread's stack and a hang event."""

    def test_exit_4_with_stacks(self, tmp_path: Path) -> None:
        run = tmp_path / "run"
        attempt = run_attempt(args(run, "--hang-timeout-seconds", "2"),
                              extra_env=env(HANG_AT_CALL=8))
        assert attempt.code == EXIT_HUNG, attempt.stderr[-3000:]
        (hang,) = [line for line in attempt.lines if line.get("event") == "hang"]
        assert hang["step"] == 7 and hang["evidence"]["limit_s"] == 2.0
        # faulthandler's dump is plain text in the log (stdout), every thread's stack.
        assert "get_batch" in attempt.raw and "Thread 0x" in attempt.raw


class TestLedgerCountsRewinds:
    """A rewind moves its thrown-away step time from productive to `wasted_by_rewind_s` and
    its reload into checkpoint restore; the categories still add up to the wall time."""

    def test_rewind_category(self, tmp_path: Path) -> None:
        from vertex_patterns.training.goodput import GoodputRecorder
        from vertex_patterns.training.goodput_summary import CATEGORY_KEYS

        now = [1000.0]
        ledger = GoodputRecorder(str(tmp_path / "run"), attempt="a1", process_start=1000.0,
                                 clock=lambda: now[0])
        ledger.startup_done()
        for step in range(1, 11):
            now[0] += 1.0
            ledger.step(step, 1.0)
        now[0] += 0.5
        ledger.rewind(0.5, 3.0)
        summary = ledger.finish("completed")
        assert summary.seconds["wasted_by_rewind_s"] == 3.0
        assert summary.seconds["productive_s"] == 7.0
        assert summary.seconds["checkpoint_restore_s"] == 0.5
        assert sum(summary.seconds[k] for k in CATEGORY_KEYS) == summary.wall_s == 10.5
