"""The spot trainer, run for real as `python -m vertex_patterns.train` subprocesses, stopped with
real SIGTERM/SIGKILL and resumed.

The invariants: a SIGTERM ends in a committed checkpoint at the current step and exit 75; a
run stopped any number of times and restarted ends bit-identical to an uninterrupted one, with
the same per-step losses and the same sample order (nothing skipped or repeated); bad input is
one line and exit 2 with nothing written.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from vertex_patterns.checkpoint import CheckpointManager
from vertex_patterns.training.config import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_PREEMPTED,
    EXIT_PREEMPTED_UNSAVED,
)
from vertex_patterns.training.metrics import read_metrics

MAX_STEPS = 40
EVERY = 5
TIMEOUT_S = 120


def base_args(run_dir: Path | str, *extra: str, max_steps: int = MAX_STEPS) -> list[str]:
    return ["--workload", "digits", "--run-dir", str(run_dir), "--max-steps", str(max_steps),
            "--checkpoint-every-steps", str(EVERY), "--seed", "7", "--deterministic",
            "--record-samples", "--log-every-steps", "1", "--grace-seconds", "20",
            "--grace-margin-seconds", "2", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@dataclass
class Attempt:
    code: int
    lines: list[dict[str, Any]] = field(default_factory=list)
    stderr: str = ""

    def steps_logged(self) -> list[int]:
        return [int(line["step"]) for line in self.lines
                if "step" in line and line.get("message", "").startswith("step ")]


def run_attempt(args: Sequence[str], *, stop_at: int | None = None,
                sig: signal.Signals = signal.SIGTERM,
                extra_env: dict[str, str] | None = None) -> Attempt:
    """Runs one trainer process; with `stop_at`, sends `sig` once it logs that step."""
    proc = subprocess.Popen([sys.executable, "-m", "vertex_patterns.train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**env(), **(extra_env or {})})
    attempt = Attempt(code=-1)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    reader.start()
    sent = False
    deadline = time.monotonic() + TIMEOUT_S
    assert proc.stdout is not None
    for raw in proc.stdout:
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("trainer did not finish in time")
        try:
            line = json.loads(raw)
        except ValueError:
            continue  # the goodput table
        attempt.lines.append(line)
        step = line.get("step")
        if stop_at is not None and not sent and isinstance(step, int) and step >= stop_at \
                and line.get("message", "").startswith("step "):
            proc.send_signal(sig)
            sent = True
    attempt.code = proc.wait(timeout=TIMEOUT_S)
    reader.join(timeout=10)
    attempt.stderr = "".join(err)
    return attempt


def final_params(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


def per_step(run_dir: Path) -> dict[int, list[dict[str, Any]]]:
    """Every metrics record of a training step, by step (several when a step was redone)."""
    out: dict[int, list[dict[str, Any]]] = {}
    for record in read_metrics(str(run_dir / "metrics")):
        if "loss" in record and "event" not in record:
            out.setdefault(int(record["step"]), []).append(record)
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference")
    attempt = run_attempt(base_args(run_dir))
    assert attempt.code == EXIT_OK, attempt.stderr[-3000:]
    return run_dir


class TestUninterrupted:
    """A run that is never stopped completes, exports its model and learns."""

    def test_completes_and_exports(self, reference: Path) -> None:
        config = json.loads((reference / "model" / "config.json").read_text())
        assert config["step"] == MAX_STEPS and config["workload"] == "digits"
        assert final_params(reference)
        with CheckpointManager(str(reference / "checkpoints")) as ckpt:
            assert ckpt.latest_step() == MAX_STEPS

    def test_every_step_recorded_once(self, reference: Path) -> None:
        steps = per_step(reference)
        assert sorted(steps) == list(range(1, MAX_STEPS + 1))
        assert all(len(records) == 1 for records in steps.values())

    def test_goodput_ledger_written(self, reference: Path) -> None:
        ledger = json.loads((reference / "goodput.json").read_text())
        assert len(ledger["attempts"]) == 1
        assert ledger["total"]["steps_lost"] == 0


class TestSigtermCommitsAndExits:
    """SIGTERM: the current step finishes, a checkpoint at that step commits, exit 75; the
    restart resumes from exactly that step."""

    def test_sigterm_then_resume(self, tmp_path: Path, reference: Path) -> None:
        first = run_attempt(base_args(tmp_path), stop_at=12)
        assert first.code == EXIT_PREEMPTED, first.stderr[-3000:]
        stopped = max(first.steps_logged())
        with CheckpointManager(str(tmp_path / "checkpoints")) as ckpt:
            assert ckpt.latest_step() == stopped
        second = run_attempt(base_args(tmp_path))
        assert second.code == EXIT_OK, second.stderr[-3000:]
        assert min(second.steps_logged()) == stopped + 1
        for name, tensor in final_params(reference).items():
            assert torch.equal(tensor, final_params(tmp_path)[name]), name


def schedules() -> list[list[tuple[int, signal.Signals]]]:
    rng = random.Random(20261129)
    out = []
    for _ in range(5):
        stops = sorted(rng.sample(range(3, MAX_STEPS - 2), 2))
        out.append([(s, rng.choice([signal.SIGTERM, signal.SIGKILL])) for s in stops])
    return out


class TestDeterministicResume:
    """Stopped at arbitrary steps by SIGTERM or SIGKILL and restarted until done, a run ends
    bit-identical to an uninterrupted one, with identical per-step losses and the same samples
    in the same order, none skipped or repeated."""

    @pytest.mark.parametrize("schedule", schedules(),
                             ids=lambda s: "-".join(f"{sig.name[3:]}@{st}" for st, sig in s))
    def test_schedule(self, tmp_path: Path, reference: Path,
                      schedule: list[tuple[int, signal.Signals]]) -> None:
        codes = []
        for stop_at, sig in schedule:
            attempt = run_attempt(base_args(tmp_path), stop_at=stop_at, sig=sig)
            codes.append(attempt.code)
            want = EXIT_PREEMPTED if sig == signal.SIGTERM else -signal.SIGKILL
            assert attempt.code in (want, EXIT_OK), attempt.stderr[-3000:]
        last = run_attempt(base_args(tmp_path))
        assert last.code == EXIT_OK, last.stderr[-3000:]

        ref, got = final_params(reference), final_params(tmp_path)
        assert ref.keys() == got.keys()
        for name in ref:
            assert torch.equal(ref[name], got[name]), f"{name} differs"

        ref_steps, got_steps = per_step(reference), per_step(tmp_path)
        assert sorted(got_steps) == list(range(1, MAX_STEPS + 1))
        for step, records in got_steps.items():
            want = ref_steps[step][0]
            for record in records:  # a step redone after SIGKILL must repeat exactly
                assert record["loss"] == want["loss"], f"loss differs at step {step}"
                assert record["sample_ids"] == want["sample_ids"], f"samples differ at {step}"

        seen = [i for s in sorted(got_steps) for i in got_steps[s][-1]["sample_ids"]]
        expected = [i for s in sorted(ref_steps) for i in ref_steps[s][0]["sample_ids"]]
        assert seen == expected


class TestSecondSignal:
    """A second signal exits at once (76) and leaves the last committed checkpoint intact."""

    def test_second_sigterm_exits_now(self, tmp_path: Path) -> None:
        # A slow grace: the first SIGTERM's save is raced by a second signal straight after.
        proc = subprocess.Popen(
            [sys.executable, "-m", "vertex_patterns.train", *base_args(tmp_path, max_steps=400)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
        assert proc.stdout is not None
        for raw in proc.stdout:
            if '"step 12/' in raw:
                break
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGTERM)
        proc.stdout.read()
        code = proc.wait(timeout=TIMEOUT_S)
        assert code in (EXIT_PREEMPTED_UNSAVED, EXIT_PREEMPTED)
        with CheckpointManager(str(tmp_path / "checkpoints")) as ckpt:
            restored = ckpt.restore()
        assert restored is not None and restored.step >= 10


class _Metadata(BaseHTTPRequestHandler):
    preempted = "FALSE"

    def do_GET(self) -> None:
        ok = self.path.endswith("/instance/preempted") and \
            self.headers.get("Metadata-Flavor") == "Google"
        body = (type(self).preempted if ok else "no").encode()
        self.send_response(200 if ok else 403)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class TestMetadataWatcher:
    """instance/preempted = TRUE on the metadata server acts like SIGTERM."""

    def test_metadata_preemption(self, tmp_path: Path) -> None:
        handler = type("H", (_Metadata,), {"preempted": "FALSE"})
        server = HTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "vertex_patterns.train",
                 *base_args(tmp_path, "--metadata-url", url, "--metadata-poll-seconds", "0.05",
                            max_steps=400)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
            assert proc.stdout is not None
            for raw in proc.stdout:
                if '"step 8/' in raw:
                    handler.preempted = "TRUE"
                    break
            out = proc.stdout.read()
            code = proc.wait(timeout=TIMEOUT_S)
        finally:
            server.shutdown()
        assert code == EXIT_PREEMPTED, out[-2000:]
        assert "metadata:instance/preempted" in out


class TestBadInput:
    """Bad flags and foreign run dirs: one line on stderr, exit 2, nothing written."""

    @pytest.mark.parametrize("args, message", [
        (["--workload", "no-such"], "unknown workload"),
        (["--workload", "os.path:nope"], "nope"),
        (["--workload", "nodots"], "unknown workload"),
        (["--checkpoint-every-steps", "0"], "--checkpoint-every-steps must be > 0"),
        (["--checkpoint-every-seconds", "-1"], "--checkpoint-every-seconds must be > 0"),
        (["--max-steps", "0"], "--max-steps must be > 0"),
    ])
    def test_rejected(self, tmp_path: Path, args: list[str], message: str) -> None:
        full = ["--workload", "digits", "--run-dir", str(tmp_path / "run"), "--max-steps", "5"]
        for i in range(0, len(args), 2):
            flag = args[i]
            if flag in full:
                full[full.index(flag) + 1] = args[i + 1]
            else:
                full += args[i:i + 2]
        proc = subprocess.run([sys.executable, "-m", "vertex_patterns.train", *full],
                              capture_output=True, text=True, env=env(), timeout=TIMEOUT_S)
        assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
        assert message.lower() in proc.stderr.lower()
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (tmp_path / "run").exists()

    def test_foreign_run_dir(self, tmp_path: Path, reference: Path) -> None:
        import shutil

        shutil.copytree(reference / "checkpoints", tmp_path / "checkpoints")
        before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
        proc = subprocess.run(
            [sys.executable, "-m", "vertex_patterns.train",
             *base_args(tmp_path, max_steps=60), "--seed", "8"],  # the last --seed wins
            capture_output=True, text=True, env=env(), timeout=TIMEOUT_S)
        assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
        assert "another run" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before
        assert not (tmp_path / "model").exists()


def children(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                out.append(int(entry))
    return sorted(out)


def torchrun(args: Sequence[str], *, stop_at: int | None = None) -> tuple[int, str]:
    """2 CPU ranks under torchrun; with `stop_at`, SIGTERM reaches rank 1 only."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "vertex_patterns.train", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env(), start_new_session=True)
    assert proc.stdout is not None
    out = []
    sent = False
    try:
        for raw in proc.stdout:
            out.append(raw)
            if stop_at is not None and not sent and f'"step {stop_at}/' in raw:
                ranks = children(proc.pid)
                assert len(ranks) == 2, ranks
                os.kill(ranks[1], signal.SIGTERM)  # the later-started worker
                sent = True
        code = proc.wait(timeout=TIMEOUT_S * 2)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return code, "".join(out)


class TestDistributedPreemption:
    """2 DDP ranks (gloo): a notice on one rank stops both at the same step with one
    consistent checkpoint; the resumed run ends identical to an uninterrupted 2-rank run."""

    def test_preempt_one_rank_then_resume(self, tmp_path: Path) -> None:
        steps = 24
        ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
        code, out = torchrun(base_args(ref_dir, max_steps=steps))
        assert code == 0, out[-4000:]

        code, out = torchrun(base_args(run_dir, max_steps=steps), stop_at=9)
        assert code != 0, "torchrun reports the ranks' preempted exit as a failure"
        assert out.count('"event":"preempted"') >= 1, out[-4000:]
        with CheckpointManager(str(run_dir / "checkpoints")) as ckpt:
            stopped = ckpt.latest_step()
            restored = ckpt.restore()
        assert stopped is not None and 9 <= stopped < steps
        assert restored is not None and restored.manifest.world_size == 2

        code, out = torchrun(base_args(run_dir, max_steps=steps))
        assert code == 0, out[-4000:]
        ref, got = final_params(ref_dir), final_params(run_dir)
        for name in ref:
            assert torch.equal(ref[name], got[name]), name


class TestUserWorkloadWithScaler:
    """A `module:function` workload with a GradScaler resumes with the scaler's state: the
    resumed run ends identical to an uninterrupted one and the checkpoint holds the scale."""

    def test_scaler_state_survives_resume(self, tmp_path: Path) -> None:
        helpers = str(Path(__file__).parent / "helpers")
        extra_env = {"PYTHONPATH": os.pathsep.join(
            p for p in (helpers, os.environ.get("PYTHONPATH")) if p)}
        args = ["--workload", "scaled_workload:build", "--max-steps", "20",
                "--checkpoint-every-steps", "5", "--seed", "3", "--deterministic",
                "--log-every-steps", "1"]

        def launch(run_dir: Path, stop_at: int | None = None) -> Attempt:
            return run_attempt(["--run-dir", str(run_dir), *args], stop_at=stop_at,
                               extra_env=extra_env)

        assert launch(tmp_path / "ref").code == EXIT_OK
        first = launch(tmp_path / "run", stop_at=8)
        assert first.code == EXIT_PREEMPTED, first.stderr[-2000:]
        with CheckpointManager(str(tmp_path / "run" / "checkpoints")) as ckpt:
            restored = ckpt.restore()
        assert restored is not None
        scaler = restored.state["scaler"]
        assert scaler is not None and float(scaler["scale"]) != 2.0**8  # it grew on the way
        assert launch(tmp_path / "run").code == EXIT_OK
        ref, got = final_params(tmp_path / "ref"), final_params(tmp_path / "run")
        for name in ref:
            assert torch.equal(ref[name], got[name]), name
