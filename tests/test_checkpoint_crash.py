"""Crash safety: a writer SIGKILLed at random moments never leaves a checkpoint that restores
partially, and the next start cleans up after it.

One real writer process after another (forked by `helpers/checkpoint_writer.py`, which imports
torch once) restores, then saves a few MB per step, each step's content different, until it is
SIGKILLed at a random moment: during its start, during a save's data files, between them and
the manifest, during retention's deletes. After every kill the test looks at what the killed
save left, then starts a fresh CheckpointManager, restores and compares with what was saved.
50 kills on local disk, 10 on the GCS emulator.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from helpers.checkpoint_writer import assert_same_state, expected_state
from vertex_patterns.checkpoint import CheckpointManager
from vertex_patterns.checkpoint.io import TMP_PREFIX, TRASH_PREFIX
from vertex_patterns.checkpoint.layout import MANIFEST, QUARANTINE, parse_step_dir
from vertex_patterns.emulators.gcs import GcsEmulator
from vertex_patterns.storage import Storage
from vertex_patterns.storage.uri import parse_uri

WRITER = os.path.join(os.path.dirname(__file__), "helpers", "checkpoint_writer.py")
KILLS = {"local": 50, "gcs": 10}
FIRST_GUESS_SAVE_S = {"local": 0.1, "gcs": 0.3}
LINE_TIMEOUT_S = 30.0


@dataclass
class Kill:
    """What one SIGKILL left behind and what the next start made of it."""

    last_saved: int | None
    """Newest step any writer reported committed before this kill."""
    unfinished: set[str]
    """Uncommitted saves right after the kill: temporary step directories and step
    directories without a manifest."""
    leftovers_after_start: set[str] = field(default_factory=set)
    restored_step: int | None = None
    mismatch: str | None = None
    """Why the restored state differs from what was saved at its step; None when exact."""
    resumed_at: int | None = None
    """The step the next writer started saving at."""


def leftovers(store: Storage, root: str) -> tuple[set[str], set[str]]:
    """(unfinished saves, unfinished deletes) below `root`, by top-level name."""
    location = parse_uri(root)
    files: dict[str, set[str]] = {}
    if location.is_gcs:
        for obj in store.list(root):
            head, _, rest = obj.key.partition("/")
            files.setdefault(head, set()).add(rest)
    elif os.path.isdir(location.path):
        for name in os.listdir(location.path):
            path = os.path.join(location.path, name)
            files[name] = set(os.listdir(path)) if os.path.isdir(path) else set()
    saves = {name for name, held in files.items() if name.startswith(TMP_PREFIX)
             or (parse_step_dir(name) is not None and MANIFEST not in held)}
    deletes = {name for name in files if name.startswith(TRASH_PREFIX)}
    return saves, deletes


class WriterServer:
    """The fork server of helpers/checkpoint_writer.py, and the lines its writers print."""

    def __init__(self, log_path: str) -> None:
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in close()
        self.log_path = log_path
        self.proc = subprocess.Popen([sys.executable, WRITER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, bufsize=0)
        self._lines: queue.Queue[list[str]] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.last_saved: int | None = None
        self.save_seconds: list[float] = []
        self._last_saved_at: float | None = None

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.decode().split())
        self._lines.put(["eof"])

    def next(self, *words: str) -> list[str]:
        """The next line starting with one of `words`, noting every `saved` line on the way."""
        deadline = time.monotonic() + LINE_TIMEOUT_S
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {'/'.join(words)} line in {LINE_TIMEOUT_S}s; "
                                     f"{self.log()}") from None
            if line[0] == "saved":
                self.last_saved = int(line[1])
                if self._last_saved_at is not None:  # a save's duration, ready counts as 0
                    self.save_seconds.append(time.monotonic() - self._last_saved_at)
            if line[0] in ("ready", "saved"):
                self._last_saved_at = time.monotonic()
            if line[0] == "eof":
                raise AssertionError(f"writer server ended; {self.log()}")
            if line[0] in words:
                return line

    def run_and_kill(self, root: str, saves_first: int, delay_s: float) -> int:
        """Starts a writer on `root`, lets it commit `saves_first` steps, waits `delay_s` and
        SIGKILLs it. Returns the step it resumed at."""
        assert self.proc.stdin is not None
        self._last_saved_at = None
        self.proc.stdin.write(f"run {root}\n".encode())
        ready = self.next("ready", "exit")
        assert ready[0] == "ready", f"writer ended before it was ready; {self.log()}"
        pid = int(ready[1])
        for _ in range(saves_first):
            saved = self.next("saved", "exit")
            assert saved[0] == "saved", f"writer {pid} ended by itself; {self.log()}"
        time.sleep(delay_s)
        os.kill(pid, signal.SIGKILL)
        _, exited, status = self.next("exit")
        assert int(exited) == pid
        code = int(status)
        assert os.WIFSIGNALED(code) and os.WTERMSIG(code) == signal.SIGKILL, \
            f"writer {pid} ended by itself (status {code}); {self.log()}"
        return int(ready[2])

    def log(self) -> str:
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return "writer stderr:\n" + f.read()[-3000:].decode(errors="replace")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def writer_server(gcs_emulator: GcsEmulator, tmp_path_factory) -> Iterator[WriterServer]:
    """One fork server for the module (it inherits STORAGE_EMULATOR_HOST)."""
    server = WriterServer(str(tmp_path_factory.mktemp("writer") / "stderr.log"))
    yield server
    server.close()


@pytest.fixture(scope="module", params=sorted(KILLS))
def kills(request: pytest.FixtureRequest, writer_server: WriterServer,
          tmp_path_factory) -> tuple[str, list[Kill]]:
    """Runs the kill loop once per backend; returns the root and a record per kill."""
    backend = request.param
    store = Storage()
    if backend == "gcs":
        bucket = f"crash-{uuid.uuid4().hex[:10]}"
        store.gcs.client().create_bucket(bucket)
        root = f"gs://{bucket}/run"
    else:
        root = str(tmp_path_factory.mktemp("crash") / "run")
    rng = random.Random(f"{backend}-kills")
    writer_server.save_seconds.clear()
    records: list[Kill] = []
    for _ in range(KILLS[backend]):
        recent = writer_server.save_seconds[-10:] or [FIRST_GUESS_SAVE_S[backend]]
        resumed_at = writer_server.run_and_kill(
            root, saves_first=rng.choice([0, 1, 1, 2]),
            delay_s=rng.uniform(0.0, 1.2 * sum(recent) / len(recent)))
        if records:
            records[-1].resumed_at = resumed_at
        unfinished, _ = leftovers(store, root)
        kill = Kill(last_saved=writer_server.last_saved, unfinished=unfinished)
        with CheckpointManager(root, storage=store) as fresh:
            kill.leftovers_after_start = set.union(*leftovers(store, root))
            restored = fresh.restore()
        if restored is not None:
            kill.restored_step = restored.step
            try:
                assert_same_state(restored.state, expected_state(restored.step))
            except AssertionError as exc:
                kill.mismatch = str(exc)
        records.append(kill)
    return root, records


class TestRestoreAfterKillIsASavedStep:
    """After every SIGKILL, a fresh manager restores a checkpoint that passed every CRC32C and
    equals exactly what was saved at its step; that step is the newest committed one (the last
    the writer reported, or the next if the kill came between its commit and its report)."""

    def test_every_kill(self, kills: tuple[str, list[Kill]]) -> None:
        _, records = kills
        for i, kill in enumerate(records):
            assert kill.mismatch is None, f"kill {i}: {kill.mismatch}"
            newest = {None, 0} if kill.last_saved is None else \
                {kill.last_saved, kill.last_saved + 1}
            assert kill.restored_step in newest, f"kill {i}: {kill}"
        assert records[-1].restored_step is not None, "no writer ever committed a step"


class TestKillsLandBeforeTheCommit:
    """Some of the random kills landed while a save had written data but no manifest yet
    (so the invariants above were tested against real uncommitted leftovers)."""

    def test_some_kills_left_uncommitted_saves(self, kills: tuple[str, list[Kill]]) -> None:
        _, records = kills
        hits = [k for k in records if k.unfinished]
        assert hits, f"none of {len(records)} kills landed inside a save"


class TestStartCleansUp:
    """A fresh manager's start removes every leftover of the killed save, and no kill ever
    damaged a committed checkpoint (nothing was moved to quarantine)."""

    def test_no_leftovers_no_quarantine(
        self, kills: tuple[str, list[Kill]], writer_server: WriterServer
    ) -> None:
        root, records = kills
        for i, kill in enumerate(records):
            assert not kill.leftovers_after_start, f"kill {i}: {kill.leftovers_after_start}"
        store = Storage()
        assert not [o.key for o in store.list(f"{root}/{QUARANTINE}")], writer_server.log()


class TestWriterResumes:
    """Each restarted writer resumes right after the step a fresh manager restored."""

    def test_resume_points(self, kills: tuple[str, list[Kill]]) -> None:
        _, records = kills
        for i, kill in enumerate(records[:-1]):
            expected = 0 if kill.restored_step is None else kill.restored_step + 1
            assert kill.resumed_at == expected, f"kill {i}: {kill}"
