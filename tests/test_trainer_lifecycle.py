"""The trainer from its first instant to its last: a SIGTERM at any point ends in a documented
exit, telemetry never changes the exit code, the exported model is complete whenever its
`config.json` exists, and Vertex AI's `AIP_*` directories stand in for `--run-dir`.

Real `python -m vertex_patterns.train` processes, real signals, real kills.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from conftest import wait_for
from vertex_patterns.errors import ConfigError
from vertex_patterns.storage import Storage
from vertex_patterns.training.config import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_PREEMPTED,
    EXIT_PREEMPTED_UNSAVED,
    run_dir_from_environment,
)
from vertex_patterns.training.export import ExportStoppedError, export_model
from vertex_patterns.training.metrics import read_metrics
from vertex_patterns.training.tensorboard import TensorBoardWriter
from vertex_patterns.training.workload import Workload

STEPS = 20
TIMEOUT_S = 180
DOCUMENTED = (EXIT_OK, EXIT_PREEMPTED, EXIT_PREEMPTED_UNSAVED)
HELPERS = Path(__file__).parent / "helpers"


def train_args(run_dir: Path | None, *extra: str) -> list[str]:
    where = ["--run-dir", str(run_dir)] if run_dir is not None else []
    return ["--workload", "digits", *where, "--max-steps", str(STEPS),
            "--checkpoint-every-steps", "5", "--seed", "7", "--deterministic",
            "--log-every-steps", "1", "--grace-seconds", "20", "--grace-margin-seconds", "2",
            *extra]


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIP_")}
    return {**base, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler installed (its SigCgt mask in /proc)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    except OSError:
        pass
    return False


@dataclass
class Attempt:
    code: int
    sent: bool
    stdout: list[str] = field(default_factory=list)
    stderr: str = ""


def run(args: list[str], *, trigger: str | None = None, at_start: bool = False,
        environ: dict[str, str] | None = None) -> Attempt:
    """One trainer process. `at_start`: SIGTERM as soon as its first handler is in place;
    `trigger`: SIGTERM right after it prints a line containing that text."""
    proc = subprocess.Popen([sys.executable, "-m", "vertex_patterns.train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environ or env())
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    reader.start()
    attempt = Attempt(code=-1, sent=False)
    try:
        if at_start:
            deadline = time.monotonic() + TIMEOUT_S
            while not catches_sigterm(proc.pid) and proc.poll() is None:
                assert time.monotonic() < deadline, "no SIGTERM handler ever installed"
                time.sleep(0.0005)
            proc.send_signal(signal.SIGTERM)
            attempt.sent = True
        assert proc.stdout is not None
        for line in proc.stdout:
            attempt.stdout.append(line)
            if trigger is not None and not attempt.sent and trigger in line:
                proc.send_signal(signal.SIGTERM)
                attempt.sent = True
        attempt.code = proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    attempt.stderr = "".join(err)
    return attempt


def losses(run_dir: Path) -> dict[int, set[float]]:
    out: dict[int, set[float]] = {}
    for record in read_metrics(str(run_dir / "metrics")):
        if "loss" in record and "event" not in record:
            out.setdefault(int(record["step"]), set()).add(record["loss"])
    return out


def assert_model_complete_or_absent(model_dir: Path, want_keys: set[str]) -> None:
    """No `config.json` without complete weights of the step it names."""
    config = model_dir / "config.json"
    if config.exists():
        assert json.loads(config.read_text())["step"] == STEPS
        assert set(load_file(str(model_dir / "model.safetensors"))) == want_keys


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference")
    attempt = run(train_args(run_dir))
    assert attempt.code == EXIT_OK, attempt.stderr[-3000:]
    return run_dir


# Each instant, in the order a run goes through them: (name, trigger, exits allowed). The
# attempts share one run dir, so each resumes what the previous one left.
INSTANTS: list[tuple[str, str | None, tuple[int, ...]]] = [
    ("start-up: first handler in place, imports running", None, (EXIT_PREEMPTED_UNSAVED,)),
    ("workload being built", "building workload", (EXIT_PREEMPTED_UNSAVED, EXIT_PREEMPTED)),
    ("restore", "starting from step 0", (EXIT_PREEMPTED,)),
    ("checkpoint save in flight", '"step 10/', (EXIT_PREEMPTED,)),
    ("final step", f'"step {STEPS}/{STEPS}', (EXIT_OK, EXIT_PREEMPTED)),
    ("model export", "exporting the final model", DOCUMENTED),
    ("teardown", "training complete", (EXIT_OK,)),
]


class TestSigtermAtAnyInstant:
    """A SIGTERM at any instant of a run (start-up, build, restore, a step with a save in
    flight, the final step, the export, teardown) ends in 0, 75 or 76 with no traceback, and
    re-running to completion ends bit-identical to an uninterrupted run, with the same
    per-step losses; `config.json` never sits beside incomplete weights."""

    def test_sweep(self, tmp_path: Path, reference: Path) -> None:
        want = load_file(str(reference / "model" / "model.safetensors"))
        codes = []
        for name, trigger, allowed in INSTANTS:
            attempt = run(train_args(tmp_path), trigger=trigger, at_start=trigger is None)
            assert attempt.sent, f"{name}: the trigger never came"
            assert attempt.code in allowed, (name, attempt.code, attempt.stderr[-3000:])
            assert "Traceback" not in attempt.stderr, (name, attempt.stderr[-3000:])
            assert_model_complete_or_absent(tmp_path / "model", set(want))
            codes.append(attempt.code)
        assert codes[-1] == EXIT_OK  # the teardown instant ran on a completed run

        got = load_file(str(tmp_path / "model" / "model.safetensors"))
        assert got.keys() == want.keys()
        for key in want:
            assert torch.equal(want[key], got[key]), key
        ref_losses, got_losses = losses(reference), losses(tmp_path)
        assert sorted(got_losses) == list(range(1, STEPS + 1))
        for step, values in got_losses.items():
            assert values == ref_losses[step], f"step {step}: {values} != {ref_losses[step]}"


class TestStartUpThroughTheCli:
    """`vertex-patterns train` answers a SIGTERM in its first instant as the trainer does
    (76), not as an interrupted command (130, which a launcher reads as a user error)."""

    def test_sigterm_at_start(self, tmp_path: Path) -> None:
        proc = subprocess.Popen([sys.executable, "-m", "vertex_patterns.cli", "train",
                                 *train_args(tmp_path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env())
        deadline = time.monotonic() + TIMEOUT_S
        while not catches_sigterm(proc.pid) and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.0005)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT_S)
        assert proc.returncode == EXIT_PREEMPTED_UNSAVED, err
        assert "Traceback" not in err and not (tmp_path / "checkpoints").exists()


class TestTelemetryNeverFatal:
    """A TensorBoard directory that cannot be written (a missing bucket: every periodic flush
    and the final upload fail) leaves the exit codes 75 and 0 unchanged, and says why."""

    def test_failing_tensorboard_dir(self, tmp_path: Path, gcs_emulator: Any) -> None:
        environ = env(AIP_TENSORBOARD_LOG_DIR="gs://no-such-bucket-404/logs/")
        args = train_args(tmp_path, "--tensorboard-flush-seconds", "0.2")
        first = run(args, trigger='"step 4/', environ=environ)
        assert first.code == EXIT_PREEMPTED, first.stderr[-3000:]
        second = run(args, environ=environ)
        assert second.code == EXIT_OK, second.stderr[-3000:]
        for attempt in (first, second):
            out = "".join(attempt.stdout)
            assert "TensorBoard close failed (telemetry; the exit code is unchanged)" in out
            assert "Traceback" not in attempt.stderr and "ReportedErrorEvent" not in out
        assert (tmp_path / "model" / "config.json").exists()

    def test_gcs_log_dir_shows_progress(self, store: Storage, bucket: str) -> None:
        uri = f"gs://{bucket}/run/logs"
        tb = TensorBoardWriter(uri, storage=store, flush_every_s=0.05)
        try:
            tb.scalars(1, {"loss": 2.0})
            # No flush() call: the periodic flush uploads the event file by itself.
            wait_for(lambda: list(store.list(uri)), timeout=30, what="periodic upload")
        finally:
            tb.close()


def tiny_workload(fill: float, size: int = 3 * 1024 * 1024) -> Workload:
    model = torch.nn.Module()
    model.register_buffer("w", torch.full((size,), fill))  # 12 MiB: several write pieces
    model.register_buffer("b", torch.full((7,), fill, dtype=torch.float64))
    return Workload(name="export-test", model=model,
                    optimizer=torch.optim.SGD([torch.zeros(1)]), scheduler=None,
                    dataset_size=1, batch_size=1, get_batch=lambda ids: ids,
                    loss_fn=lambda m, b: torch.zeros(()), evaluate=None, config={"n": 1})


def read_model(store: Storage, model_dir: str) -> tuple[dict[str, Any] | None, bytes | None]:
    config = store.stat(f"{model_dir}/config.json")
    weights = store.stat(f"{model_dir}/model.safetensors")
    return (json.loads(store.read_bytes(config.uri)) if config else None,
            store.read_bytes(weights.uri) if weights else None)


class TestExportedModel:
    """`config.json` exists only beside complete weights of the step it names: an export
    stopped at any piece leaves no `config.json`, and so does a SIGKILL at any instant."""

    def test_stopped_at_every_piece(self, root_uri: str, store: Storage) -> None:
        from safetensors.torch import load

        model_dir = f"{root_uri}/model"
        export_model(store, model_dir, tiny_workload(1.0), 1, {"acc": 0.5})
        config, _ = read_model(store, model_dir)
        assert config is not None and config["step"] == 1 and config["eval"] == {"acc": 0.5}
        polls = 0

        def count() -> bool:
            nonlocal polls
            polls += 1
            return False

        export_model(store, model_dir, tiny_workload(2.0), 2, {}, should_stop=count)
        assert polls >= 3
        for stop_at in range(polls + 1):
            calls = 0

            def stop(limit: int = stop_at) -> bool:
                nonlocal calls
                calls += 1
                return calls > limit

            try:
                export_model(store, model_dir, tiny_workload(10.0 + stop_at), 10 + stop_at, {},
                             should_stop=stop)
            except ExportStoppedError:
                config, _ = read_model(store, model_dir)
                assert config is None, f"config.json left after a stop at poll {stop_at}"
            else:
                assert stop_at >= polls
            config, weights = read_model(store, model_dir)
            if config is not None:
                assert weights is not None
                tensors = load(weights)
                assert float(tensors["w"][0]) == config["step"]
                assert tensors["w"].numel() == 3 * 1024 * 1024
        final = read_model(store, model_dir)[1]
        assert final is not None and float(load(final)["b"][0]) == 10.0 + polls

    def test_sigkill_at_any_instant(self, tmp_path: Path) -> None:
        proc = subprocess.run(
            [sys.executable, str(HELPERS / "export_kill_loop.py"), str(tmp_path / "model"), "4",
             "20261201"], capture_output=True, text=True, timeout=TIMEOUT_S,
            env=env(PYTHONPATH=os.pathsep.join(filter(None, [str(HELPERS),
                                                                 os.environ.get("PYTHONPATH")]))))
        assert proc.returncode == 0, proc.stderr[-3000:]
        rounds = [json.loads(line) for line in proc.stdout.splitlines()]
        assert len(rounds) == 4
        for seen in rounds:
            if seen["config_step"] is not None:
                assert seen["complete"] and seen["weights_step"] == seen["config_step"], seen
            if os.path.exists(tmp_path / "model" / "model.safetensors"):
                assert seen["complete"], seen  # the weights file is replaced atomically


class TestVertexEnvironment:
    """Under Vertex AI's `AIP_*` variables the trainer needs no `--run-dir`: the run dir is
    their common parent, the base output directory."""

    @pytest.mark.parametrize("environ, want", [
        ({"AIP_MODEL_DIR": "gs://bkt-x/out/model/",
          "AIP_CHECKPOINT_DIR": "gs://bkt-x/out/checkpoints/",
          "AIP_TENSORBOARD_LOG_DIR": "gs://bkt-x/out/logs/"}, "gs://bkt-x/out"),
        ({"AIP_CHECKPOINT_DIR": "gs://bkt-x/a/b/checkpoints"}, "gs://bkt-x/a/b"),
        ({"AIP_MODEL_DIR": "/data/run/model/", "AIP_CHECKPOINT_DIR": "/data/run/ckpt"},
         "/data/run"),
    ])
    def test_common_parent(self, environ: dict[str, str], want: str) -> None:
        assert run_dir_from_environment(environ) == want

    @pytest.mark.parametrize("environ, message", [
        ({}, "--run-dir is required"),
        ({"AIP_MODEL_DIR": "gs://bkt-x/m/", "AIP_CHECKPOINT_DIR": "gs://bkt-y/c/"},
         "share no parent"),
        ({"AIP_MODEL_DIR": "gs://bkt-x/m/", "AIP_CHECKPOINT_DIR": "/local/c"},
         "share no parent"),
    ])
    def test_no_run_dir(self, environ: dict[str, str], message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            run_dir_from_environment(environ)

    def test_trains_without_run_dir(self, tmp_path: Path) -> None:
        base = tmp_path / "base"
        environ = env(AIP_MODEL_DIR=f"{base}/model/", AIP_CHECKPOINT_DIR=f"{base}/checkpoints/",
                      AIP_TENSORBOARD_LOG_DIR=f"{base}/logs/")
        attempt = run(train_args(None), environ=environ)
        assert attempt.code == EXIT_OK, attempt.stderr[-3000:]
        assert (base / "model" / "config.json").exists()
        assert any((base / "checkpoints").iterdir())
        assert (base / "goodput.json").exists() and read_metrics(str(base / "metrics"))
        assert any((base / "logs").iterdir())

    def test_outside_vertex_run_dir_is_required(self, tmp_path: Path) -> None:
        proc = subprocess.run([sys.executable, "-m", "vertex_patterns.train",
                               *train_args(None)], capture_output=True, text=True,
                              env=env(), timeout=TIMEOUT_S, cwd=tmp_path)
        assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "--run-dir" in proc.stderr
        assert os.listdir(tmp_path) == []
