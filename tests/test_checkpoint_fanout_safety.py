"""Data safety of checkpoint fan-out and of the commit protocol: a replica is never damaged,
a damaged source is never committed, a symlink never leads a write outside, a save whose
commit answer was lost is still a save, and a query writes nothing."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import pytest
import torch

from conftest import read_tree
from vertex_patterns.checkpoint import commit as commit_module
from vertex_patterns.checkpoint.fanout import fan_out
from vertex_patterns.checkpoint.io import list_committed, verify_step, write_step
from vertex_patterns.checkpoint.layout import MANIFEST, join, step_dir_name
from vertex_patterns.checkpoint.serialization import flatten_state
from vertex_patterns.emulators.fault_proxy import FaultConfig, FaultProxy
from vertex_patterns.emulators.gcs import GcsEmulator
from vertex_patterns.storage import GcsBackend, RetryPolicy, Storage

TENSORS = "tensors-00000.safetensors"


def save(directory: str, step: int, value: float) -> None:
    """Commits a small checkpoint whose bytes depend on `value` (a step saved again with
    another value replaces the one there, as a redone step does)."""
    skeleton, tensors = flatten_state({"w": torch.full((256,), value),
                                       "b": torch.arange(64) * value})
    write_step(Storage(), directory, step, skeleton, tensors)


def every_listed_step_verifies(store: Storage, directory: str) -> dict[int, Any]:
    committed = list_committed(store, directory)
    for step, manifest in committed.items():
        verify_step(store, join(directory, step_dir_name(step)), manifest, mapped=False)
    return committed


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not an Exception, so nothing catches it)."""


class KillingStorage(Storage):
    """A Storage that dies at its `kill_at`-th write, copy or delete."""

    def __init__(self, kill_at: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kill_at = kill_at
        self.calls = 0

    def tick(self) -> None:
        self.calls += 1
        if self.calls == self.kill_at:
            raise _Killed



def _kill_point(name: str) -> Callable[..., Any]:
    def call(self: KillingStorage, *args: Any, **kwargs: Any) -> Any:
        self.tick()
        return getattr(Storage, name)(self, *args, **kwargs)
    return call


# The calls that change storage: a kill between two reads leaves what a kill after the
# write before them leaves, so these are all the kill points that differ.
for _name in ("write_bytes", "upload_file", "download_file", "write_stream", "delete",
              "copy"):
    setattr(KillingStorage, _name, _kill_point(_name))


@pytest.fixture
def dirs(request: pytest.FixtureRequest, tmp_path, make_bucket) -> tuple[str, str]:
    """(source, replica) on local disk or on the GCS emulator."""
    if request.param == "local":
        return str(tmp_path / "src"), str(tmp_path / "replica")
    bucket = make_bucket("fo")
    return f"gs://{bucket}/src", f"gs://{bucket}/replica"


class TestKillDuringFanOutOverCommittedStep:
    """Fan-out redoing a step the replica already holds with other bytes, killed at every
    point where storage changes (before each write, copy and delete, each directory fsync
    and trash removal of the local commit):
    every step the replica lists still verifies, and a complete pass afterwards gives it the
    source's step."""

    @pytest.mark.parametrize("dirs", ["local", "gcs"], indirect=True)
    def test_every_kill_point(self, store: Storage, dirs: tuple[str, str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
        src, replica = dirs
        old_src = f"{src}-old"
        save(old_src, 1, 1.0)
        save(src, 1, 2.0)  # the step redone with different bytes
        kill_at = 0

        def kill_point(real: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                killing.tick()
                return real(*args, **kwargs)
            return call

        monkeypatch.setattr(commit_module, "fsync_dir", kill_point(commit_module.fsync_dir))
        monkeypatch.setattr(commit_module, "_remove", kill_point(commit_module._remove))
        killed = 0
        while True:
            kill_at += 1
            # The replica holds step 1 as the old source wrote it, committed.
            for obj in list(store.list(replica)) if replica.startswith("gs://") else []:
                store.delete(obj.uri)
            if not replica.startswith("gs://") and os.path.exists(replica):
                shutil.rmtree(replica)
            killing = KillingStorage(10**9)  # no kill while setting up
            fan_out(store, old_src, replica)
            before = every_listed_step_verifies(store, replica)
            assert list(before) == [1]
            killing = KillingStorage(kill_at)
            try:
                fan_out(killing, src, replica)
            except _Killed:
                killed += 1
                every_listed_step_verifies(store, replica)
                continue
            break
        assert killed >= 3  # the pass had that many kill points, each one tried
        fan_out(store, src, replica)
        after = every_listed_step_verifies(store, replica)
        assert after[1].files == list_committed(store, src)[1].files


class TestDamagedSourceIsNotFannedOut:
    """A source step with one flipped byte is not committed on the replica, is reported,
    and the replica keeps the step it had."""

    @pytest.mark.parametrize("dirs", ["local", "gcs"], indirect=True)
    def test_flipped_byte(self, store: Storage, dirs: tuple[str, str]) -> None:
        src, replica = dirs
        save(src, 1, 1.0)
        fan_out(store, src, replica)
        held = read_tree(store, join(replica, step_dir_name(1)))
        save(src, 1, 3.0)  # redone, then damaged before the fan-out
        uri = join(src, step_dir_name(1), TENSORS)
        data = bytearray(store.read_bytes(uri))
        data[-1] ^= 0x01
        store.delete(uri)
        store.write_bytes(uri, bytes(data))
        result = fan_out(store, src, replica)
        assert result.steps_copied == [] and list(result.damaged) == [1]
        assert "CRC32C" in result.damaged[1]
        assert read_tree(store, join(replica, step_dir_name(1))) == held
        every_listed_step_verifies(store, replica)

    @pytest.mark.parametrize("dirs", ["local", "gcs"], indirect=True)
    def test_new_step_damaged(self, store: Storage, dirs: tuple[str, str]) -> None:
        src, replica = dirs
        save(src, 1, 1.0)
        uri = join(src, step_dir_name(1), TENSORS)
        data = bytearray(store.read_bytes(uri))
        data[100] ^= 0x10
        store.delete(uri)
        store.write_bytes(uri, bytes(data))
        result = fan_out(store, src, replica)
        assert list(result.damaged) == [1]
        assert list_committed(store, replica) == {}


class TestSymlinkedReplicaStep:
    """A `step-…` symlink in a local replica leads no write outside the replica."""

    def test_nothing_written_outside(self, store: Storage, tmp_path) -> None:
        src, replica, outside = tmp_path / "src", tmp_path / "replica", tmp_path / "outside"
        save(str(src), 1, 1.0)
        outside.mkdir()
        (outside / "keep.txt").write_bytes(b"not yours")
        replica.mkdir()
        os.symlink(outside, replica / step_dir_name(1))
        result = fan_out(store, str(src), str(replica))
        assert result.steps_copied == [1]
        assert sorted(os.listdir(outside)) == ["keep.txt"]
        assert (outside / "keep.txt").read_bytes() == b"not yours"
        assert not os.path.islink(replica / step_dir_name(1))
        every_listed_step_verifies(store, str(replica))


class TestLocalReplicaIsDurable:
    """The local commit fsyncs every data file before the manifest is written."""

    def test_data_fsynced_before_manifest(self, store: Storage, tmp_path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
        src, replica = str(tmp_path / "src"), str(tmp_path / "replica")
        save(src, 1, 1.0)
        events: list[str] = []
        real_fsync, real_open = os.fsync, open

        def fsync(fd: int) -> None:
            events.append("fsync:" + os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def tracking_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if str(path).endswith(MANIFEST) and "w" in mode:
                events.append("manifest")
            return real_open(path, mode, *args, **kwargs)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr("builtins.open", tracking_open)
        fan_out(store, src, replica)
        monkeypatch.undo()
        manifest_at = events.index("manifest")
        for name in (TENSORS, "state.json"):
            assert f"fsync:{name}" in events[:manifest_at], events


class TestLostCommitAnswer:
    """A GCS save whose manifest upload landed but whose answer was lost is retried, meets
    412 (the manifest exists) and is accepted: the save is committed, not reported failed."""

    def test_manifest_response_dropped(self, store: Storage, bucket: str,
                                       gcs_emulator: GcsEmulator) -> None:
        directory = f"gs://{bucket}/ckpt"
        with FaultProxy(gcs_emulator.url, FaultConfig(seed=0)) as proxy:
            flaky = Storage(gcs=GcsBackend(endpoint=proxy.url, retry=RetryPolicy(
                max_attempts=4, initial_backoff_s=0.001, max_backoff_s=0.01, seed=1)))
            # Each file is a resumable upload (POST, then PUT); the manifest's PUT is third.
            proxy.inject("drop_after", method="PUT", after=2)
            manifest = write_step(flaky, directory, 5, {"w": "w"},
                                  {"w": torch.ones(16)})
            assert proxy.stats["drop_after"] == 1
        assert list(list_committed(store, directory)) == [5]
        assert list_committed(store, directory)[5].files == manifest.files


class TestFinalUrisIsAQuery:
    """`final_uris` reads the committed listing and writes nothing (no cleanup)."""

    def test_leftover_untouched(self, store: Storage, tmp_path) -> None:
        from vertex_patterns.launcher.launcher import final_uris

        class Policy:
            def checkpoint_dir(self, region: str) -> str:
                return str(tmp_path / region / "ckpt")

            def run_dir(self, region: str) -> str:
                return str(tmp_path / region)

        directory = str(tmp_path / "r1" / "ckpt")
        save(directory, 3, 1.0)
        leftover = tmp_path / "r1" / "ckpt" / step_dir_name(4)
        leftover.mkdir()
        (leftover / TENSORS).write_bytes(b"half")
        checkpoint, model = final_uris(Policy(), "r1")  # type: ignore[arg-type]
        assert checkpoint == join(directory, step_dir_name(3))
        assert model == str(tmp_path / "r1" / "model")
        assert (leftover / TENSORS).read_bytes() == b"half"
