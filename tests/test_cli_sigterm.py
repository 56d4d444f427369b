"""SIGTERM, as a scheduler sends it, ends each long-running command with its documented code:
no traceback, one line, nothing half-written, and a re-run finishes the job.

(`launch` cancels its job on SIGTERM: see `test_launcher.TestSigterm`; `train`: see
`test_trainer_lifecycle`.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import read_tree, write_tree
from vertex_patterns.emulators.gcs import EMULATOR_ENV, free_port
from vertex_patterns.storage import Storage

EXIT_INTERRUPTED = 130
TIMEOUT_S = 120


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "vertex_patterns.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or dict(os.environ))


def catches_sigterm(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    except OSError:
        pass
    return False


def terminate(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def assert_interrupted(code: int, err: str, *commands: str) -> None:
    """Exit 130 and, last on stderr, `vertex-patterns<command>: interrupted` for one of
    `commands` (" replicate"; "" while the arguments were still being parsed)."""
    assert code == EXIT_INTERRUPTED, err
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] in {f"vertex-patterns{c}: interrupted"
                                            for c in commands}, err


class TestReplicate:
    """SIGTERM mid-copy: exit 130, every file at a final name complete, no temporary files
    left; the re-run copies only the rest."""

    def test_sigterm_mid_copy(self, store: Storage, bucket: str, tmp_path: Path) -> None:
        src = f"gs://{bucket}/data"
        files = {f"obj-{i:04d}": os.urandom(256 * 1024) for i in range(120)}
        write_tree(store, src, files)
        dest = tmp_path / "dest"
        proc = cli("replicate", src, str(dest), "--workers", "2", "--no-progress")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if dest.exists() and len(os.listdir(dest)) >= 10:
                break
            time.sleep(0.01)
        code, err = terminate(proc)
        if code == 0:  # finished first on a fast machine: nothing to check mid-way
            return
        assert_interrupted(code, err, " replicate")
        done = {p.name for p in dest.iterdir()}
        assert not [n for n in done if n not in files], done  # no temporary names
        for name in done:
            assert (dest / name).read_bytes() == files[name]
        rerun = subprocess.run([sys.executable, "-m", "vertex_patterns.cli", "replicate", src,
                                str(dest)], capture_output=True, text=True, timeout=TIMEOUT_S)
        assert rerun.returncode == 0, rerun.stderr
        assert read_tree(store, str(dest)) == files


class TestFanOutFollow:
    """`checkpoints fan-out --follow`, waiting for its marker: SIGTERM ends it with 130."""

    def test_sigterm_while_following(self, tmp_path: Path) -> None:
        source, replica = tmp_path / "ckpt", tmp_path / "replica"
        source.mkdir()
        proc = cli("checkpoints", "fan-out", str(source), str(replica), "--follow",
                   "--until-marker", str(tmp_path / "DONE"), "--poll-seconds", "0.1")
        assert proc.stderr is not None
        deadline = time.monotonic() + TIMEOUT_S
        while "waiting for" not in proc.stderr.readline():
            assert time.monotonic() < deadline and proc.poll() is None, "no pass logged"
        code, err = terminate(proc)
        assert_interrupted(code, err, " checkpoints")


class TestEmulatorsUp:
    """`emulators up` told to stop while it is still starting: 130, no traceback, and the
    port is free again."""

    def test_sigterm_during_start(self) -> None:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != EMULATOR_ENV}
        proc = cli("emulators", "up", "--gcs-port", str(port), env=env)
        deadline = time.monotonic() + TIMEOUT_S
        while not catches_sigterm(proc.pid):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.0005)
        # The first handler is the CLI's own, in place before the emulators start.
        code, err = terminate(proc)
        assert_interrupted(code, err, " emulators", "")
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
