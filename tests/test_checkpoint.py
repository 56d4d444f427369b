"""CheckpointManager: round trips, commit markers, verification, replicas, async, retention.

Every failure is built for real: files damaged on disk or rewritten through the GCS client,
directories replaced by files, buckets deleted or never created, directories made immutable.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from helpers.checkpoint_writer import assert_same_state
from vertex_patterns.checkpoint import CheckpointDeadlineError, CheckpointManager, Manifest
from vertex_patterns.checkpoint.layout import MANIFEST, join, step_dir_name
from vertex_patterns.errors import StorageError
from vertex_patterns.storage import Storage, crc32c_bytes
from vertex_patterns.storage.uri import parse_uri

LOG = "vertex_patterns.checkpoint"
TENSOR_FILE = "tensors-00000.safetensors"


# -- helpers ------------------------------------------------------------------------------
def state(step: int) -> dict[str, Any]:
    """A small state whose content identifies its step."""
    return {"w": torch.full((8,), float(step)), "step": step}


def step_uri(root: str, step: int) -> str:
    return join(root, step_dir_name(step))


def steps_in(store: Storage, root: str) -> list[int]:
    """Committed steps as a fresh read-only manager sees them (no cleanup, no cache)."""
    with CheckpointManager(root, storage=store, is_writer=False, cleanup=False) as reader:
        return reader.all_steps()


def top_level(store: Storage, root: str) -> set[str]:
    """First path segments of everything stored below `root`."""
    return {o.key.split("/", 1)[0] for o in store.list(root)}


def save_steps(manager: CheckpointManager, steps: Sequence[int], **metrics: list[float]) -> None:
    for i, s in enumerate(steps):
        manager.save(s, state(s), metrics={k: v[i] for k, v in metrics.items()})
    manager.wait()


def rewrite(store: Storage, uri: str, data: bytes) -> None:
    """Replaces an object's bytes: in place on disk, through the client on GCS."""
    location = parse_uri(uri)
    if location.is_gcs:
        store.gcs.client().bucket(location.bucket).blob(location.path).upload_from_string(data)
    else:
        with open(location.path, "r+b") as f:
            f.write(data)
            f.truncate()


def flip_bit(store: Storage, uri: str) -> bytes:
    data = bytearray(store.read_bytes(uri))
    data[-1] ^= 0x10  # in the tensor data: the file still parses, only the CRC tells
    rewrite(store, uri, bytes(data))
    return bytes(data)


def truncate(store: Storage, uri: str) -> bytes:
    data = store.read_bytes(uri)[:-5]
    rewrite(store, uri, data)
    return data


DAMAGE = {"flip_bit": flip_bit, "truncate": truncate}


def rich_state() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    return {
        "model": {
            "embed.weight": torch.randn(5, 3, generator=g).to(torch.bfloat16),
            "head.weight": torch.randn(3, 2, generator=g).t(),  # not contiguous
            "head.bias": torch.zeros(2, dtype=torch.float16),
            "positions": torch.arange(6, dtype=torch.int64).reshape(2, 3),
            "codes": torch.tensor([-3, 7], dtype=torch.int8),
            "mask": torch.tensor([True, False, True]),
            "empty": torch.empty(0, 4),
            "scalar": torch.tensor(2.5, dtype=torch.float64),
        },
        "optim": {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(5, 3, generator=g)},
                      1: {"step": torch.tensor(3.0), "exp_avg": torch.randn(3, 2, generator=g)}},
            "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False,
                              "foreach": None, "params": [0, 1]}],
        },
        "rng": {"torch": torch.get_rng_state(), "python": (3, (1, 2, 3), None)},
        "data": {"epoch": 2, "offset": 2**40 + 1, "neg": -7, "ratio": 0.25,
                 "inf": float("-inf"), "name": "ünïcode ✓", "blob": b"\x00\xffraw",
                 "shards": ["a-000", "b-001"], "nothing": None, "empty": [], "none": {}},
        "nested": [{"a": (1, [2, (3,)])}, [[]]],
        "odd_keys": {1.5: "float", -3: "int", None: "none", "__tensor__": "tag-like"},
    }


# -- saving and restoring -----------------------------------------------------------------
class TestNothingCommitted:
    """Before any commit, restore() returns None and no step is listed."""

    def test_empty(self, store: Storage, root_uri: str) -> None:
        with CheckpointManager(root_uri, storage=store) as manager:
            assert manager.restore() is None
            assert manager.all_steps() == [] and manager.latest_step() is None


class TestStateRoundTrip:
    """restore() gives back the saved structure exactly: nested dicts with int/float/None keys,
    tuples, lists, numbers, strings, bytes, and bf16/fp16/int/bool tensors on CPU."""

    def test_structure_and_values(self, store: Storage, root_uri: str) -> None:
        saved = rich_state()
        with CheckpointManager(root_uri, storage=store) as manager:
            manager.save(7, saved, metrics={"loss": 0.5})
            manager.wait()
            assert manager.all_steps() == [7] and manager.latest_step() == 7
        with CheckpointManager(root_uri, storage=store) as fresh:
            restored = fresh.restore()
        assert restored is not None
        assert (restored.step, restored.uri) == (7, step_uri(root_uri, 7))
        assert restored.manifest.metrics == {"loss": 0.5}
        assert_same_state(restored.state, rich_state())

    def test_files_are_plain_safetensors(self, store: Storage, tmp_path) -> None:
        from safetensors.torch import load_file

        root = str(tmp_path / "ckpt")
        with CheckpointManager(root, storage=store) as manager:
            manager.save(1, {"model": {"w": torch.arange(4.0)}}, blocking=True)
        loaded = load_file(os.path.join(step_uri(root, 1), TENSOR_FILE))
        assert torch.equal(loaded["model/w"], torch.arange(4.0))


def _training(seed: int) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    return model, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)


def _train(model: nn.Module, opt: torch.optim.Optimizer, sched: Any, steps: range) -> list[float]:
    losses = []
    for i in steps:
        x = torch.randn(32, 8, generator=torch.Generator().manual_seed(i))
        loss = F.mse_loss(model(x), x.sum(1, keepdim=True))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


class TestTrainingResumesIdentically:
    """A model + AdamW + scheduler restored into fresh objects continues training with results
    bit-identical to the run that never stopped."""

    def test_adamw_resume(self, store: Storage, root_uri: str) -> None:
        model, opt, sched = _training(seed=0)
        _train(model, opt, sched, range(0, 4))
        optim_at_save = copy.deepcopy(opt.state_dict())
        with CheckpointManager(root_uri, storage=store) as manager:
            manager.save(4, {"model": model.state_dict(), "optim": opt.state_dict(),
                             "sched": sched.state_dict(), "next": 4})
            # Training goes on while the save runs: the snapshot was taken at save().
            uninterrupted = _train(model, opt, sched, range(4, 8))
        with CheckpointManager(root_uri, storage=store) as fresh:
            restored = fresh.restore()
        assert restored is not None and restored.step == 4
        assert_same_state(restored.state["optim"], optim_at_save)  # int keys, tuples, tensors
        model2, opt2, sched2 = _training(seed=1)
        model2.load_state_dict(restored.state["model"])
        opt2.load_state_dict(restored.state["optim"])
        sched2.load_state_dict(restored.state["sched"])
        resumed = _train(model2, opt2, sched2, range(restored.state["next"], 8))
        assert resumed == uninterrupted
        for a, b in zip(model.parameters(), model2.parameters(), strict=True):
            assert torch.equal(a, b)


class TestSaveWaitsForPrevious:
    """A new save starts only after the previous one committed, and each checkpoint holds the
    state as it was when save() was called, not later in-place updates."""

    def test_second_save_waits_and_snapshots(self, store: Storage, tmp_path) -> None:
        root = str(tmp_path / "ckpt")
        live = {"w": torch.zeros(4_000_000)}  # 16 MB: takes a moment to write
        with CheckpointManager(root, storage=store) as manager:
            manager.save(1, live)
            live["w"].add_(1.0)  # the training loop keeps updating in place
            manager.save(2, live)
            assert 1 in steps_in(store, root)  # committed before save(2) returned
            manager.wait()
            one, two = manager.restore(1), manager.restore(2)
        assert one is not None and two is not None
        assert torch.equal(one.state["w"], torch.zeros(4_000_000))
        assert torch.equal(two.state["w"], torch.ones(4_000_000))


class TestEmergencySaveDeadline:
    """A blocking save that misses its deadline raises CheckpointDeadlineError, commits nothing,
    leaves no partial files, and the previous checkpoint stays intact and restorable."""

    def test_deadline(self, store: Storage, tmp_path) -> None:
        root = str(tmp_path / "ckpt")
        with CheckpointManager(root, storage=store) as manager:
            manager.save(1, state(1), blocking=True)
            big = {"w": torch.ones(50_000_000)}  # 200 MB
            with pytest.raises(CheckpointDeadlineError):
                manager.save(2, big, blocking=True, deadline_s=0.001)
            restored = manager.restore()  # waits for the stopped write; raises nothing
            assert restored is not None and restored.step == 1
            assert_same_state(restored.state, state(1))
            assert manager.all_steps() == [1]
        assert sorted(os.listdir(root)) == [step_dir_name(1)]  # no partial files left
        assert steps_in(store, root) == [1]


class TestBackgroundErrorRaisedOnce:
    """A failed background save is raised once, at the next save/wait/close, and the manager
    keeps working once the cause is gone."""

    @pytest.mark.parametrize("next_call", ["save", "wait", "close"])
    def test_local_directory_replaced_by_file(
        self, store: Storage, tmp_path, next_call: str
    ) -> None:
        root = tmp_path / "ckpt"
        manager = CheckpointManager(str(root), storage=store)
        manager.save(1, state(1), blocking=True)
        shutil.rmtree(root)
        root.write_bytes(b"not a directory")
        manager.save(2, state(2))  # returns: the write fails in the background
        with pytest.raises((OSError, StorageError)):
            {"save": lambda: manager.save(3, state(3)), "wait": manager.wait,
             "close": manager.close}[next_call]()
        if next_call == "close":
            manager.close()  # already closed: nothing raised twice
            return
        manager.wait()  # raised once only
        root.unlink()
        manager.save(4, state(4), blocking=True)
        manager.close()
        assert steps_in(store, str(root)) == [4]

    def test_gcs_bucket_deleted_after_start(self, store: Storage, make_bucket) -> None:
        bucket = make_bucket("gone")
        manager = CheckpointManager(f"gs://{bucket}/run", storage=store)
        store.gcs.client().bucket(bucket).delete()
        manager.save(1, state(1))
        with pytest.raises(StorageError, match=bucket):
            manager.wait()
        manager.wait()
        manager.close()


# -- what counts as a checkpoint ------------------------------------------------------------
class TestOnlyCommittedCheckpointsCount:
    """A step directory without a valid manifest is never listed or restored; a writer's start
    removes the leftovers of crashed saves and moves unreadable manifests aside."""

    def test_leftovers(self, store: Storage, root_uri: str) -> None:
        with CheckpointManager(root_uri, storage=store) as manager:
            save_steps(manager, [1, 2])
        # Step 3 crashed between its data files and its manifest (a copy of step 2's files).
        for name in (TENSOR_FILE, "state.json"):
            data = store.read_bytes(join(step_uri(root_uri, 2), name))
            store.write_bytes(join(step_uri(root_uri, 3), name), data)
        # Step 4's manifest is garbage.
        store.write_bytes(join(step_uri(root_uri, 4), TENSOR_FILE), b"x" * 64)
        store.write_bytes(join(step_uri(root_uri, 4), MANIFEST), b'{"format": "vertex-patt')
        crashed = {step_dir_name(3), step_dir_name(4)}
        if not parse_uri(root_uri).is_gcs:  # a local save crashed before its rename
            store.write_bytes(join(root_uri, ".tmp-step-000000000005-0badc0de", TENSOR_FILE),
                              b"partial")
            crashed.add(".tmp-step-000000000005-0badc0de")

        with CheckpointManager(root_uri, storage=store, is_writer=False) as reader:
            assert reader.all_steps() == [1, 2] and reader.latest_step() == 2
            assert reader.restore(3) is None and reader.restore(4) is None
            restored = reader.restore()
            assert restored is not None and restored.step == 2
        assert crashed <= top_level(store, root_uri)  # readers leave everything alone

        with CheckpointManager(root_uri, storage=store) as writer:
            assert writer.all_steps() == [1, 2]
        assert top_level(store, root_uri) == {step_dir_name(1), step_dir_name(2), "quarantine"}
        [aside] = top_level(store, join(root_uri, "quarantine"))
        assert aside.startswith(step_dir_name(4) + "-")


class TestManifestCannotEscapeItsStep:
    """A manifest whose file names point outside its step directory is rejected: not listed,
    not restored, and the outside file is never used, even when its checksum matches."""

    @pytest.mark.parametrize("name", ["../secret", "a/../../secret", "/etc/passwd"])
    def test_escaping_name(self, store: Storage, root_uri: str, name: str) -> None:
        with CheckpointManager(root_uri, storage=store) as manager:
            save_steps(manager, [1, 2])
        step2 = step_uri(root_uri, 2)
        body = json.loads(store.read_bytes(join(step2, MANIFEST)))
        [entry] = [f for f in body["files"] if f["name"] == TENSOR_FILE]
        entry["name"] = name
        secret = store.read_bytes(join(step2, TENSOR_FILE))
        if name.endswith("secret"):
            # Plant the real bytes where the name points: only the name check stops a restore.
            store.write_bytes(join(root_uri, "secret"), secret)
        elif os.path.exists(name):
            with open(name, "rb") as f:
                outside = f.read()
            entry["size"], entry["crc32c"] = len(outside), crc32c_bytes(outside)
        store.write_bytes(join(step2, MANIFEST), json.dumps(body).encode())

        with CheckpointManager(root_uri, storage=store, is_writer=False) as reader:
            assert reader.all_steps() == [1]
            assert reader.restore(2) is None
            restored = reader.restore()
            assert restored is not None and restored.step == 1
        with CheckpointManager(root_uri, storage=store) as writer:  # moved aside on start
            assert writer.all_steps() == [1]
        assert step_dir_name(2) not in top_level(store, root_uri)
        if name.endswith("secret"):
            assert store.read_bytes(join(root_uri, "secret")) == secret


class TestDamagedCheckpointIsQuarantined:
    """restore() checks every file's CRC32C and size; a damaged checkpoint is reported, moved
    under quarantine/ with its bytes kept, and the next older valid one is restored."""

    @pytest.mark.parametrize("damage", sorted(DAMAGE))
    def test_falls_back_to_older(
        self, store: Storage, root_uri: str, damage: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        with CheckpointManager(root_uri, storage=store) as manager:
            save_steps(manager, [1, 2])
        damaged = DAMAGE[damage](store, join(step_uri(root_uri, 2), TENSOR_FILE))

        with caplog.at_level(logging.ERROR, LOG), \
                CheckpointManager(root_uri, storage=store) as fresh:
            restored = fresh.restore()
            assert restored is not None and restored.step == 1
            assert_same_state(restored.state, state(1))
            assert fresh.all_steps() == [1]
        [report] = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert step_dir_name(2) in report and TENSOR_FILE in report
        kept = {o.key: o.uri for o in store.list(join(root_uri, "quarantine"))}
        [tensor_key] = [k for k in kept if k.endswith("/" + TENSOR_FILE)]
        assert tensor_key.startswith(step_dir_name(2) + "-")
        assert store.read_bytes(kept[tensor_key]) == damaged
        assert {k.split("/", 1)[1] for k in kept} == {TENSOR_FILE, "state.json", MANIFEST}

    def test_nothing_valid_restores_none(self, store: Storage, root_uri: str) -> None:
        with CheckpointManager(root_uri, storage=store) as manager:
            save_steps(manager, [1, 2])
        for s in (1, 2):
            flip_bit(store, join(step_uri(root_uri, s), TENSOR_FILE))
        with CheckpointManager(root_uri, storage=store) as fresh:
            assert fresh.restore() is None
            assert fresh.all_steps() == []


# -- replicas -----------------------------------------------------------------------------
class TestRestoreAcrossReplicas:
    """restore() picks the newest valid checkpoint across the primary and every replica (the
    primary on ties); with the primary lost, it resumes from a replica and `.uri` names it."""

    def test_local_primary_deleted(self, store: Storage, tmp_path, make_bucket) -> None:
        primary = str(tmp_path / "primary")
        replicas = [f"gs://{make_bucket('eu')}/run", str(tmp_path / "replica")]
        with CheckpointManager(primary, replicas=replicas, storage=store) as manager:
            save_steps(manager, [1, 2])
            restored = manager.restore()
            assert restored is not None and restored.uri == step_uri(primary, 2)  # ties
        shutil.rmtree(primary)
        with CheckpointManager(primary, replicas=replicas, storage=store) as fresh:
            restored = fresh.restore()
        assert restored is not None and restored.uri == step_uri(replicas[0], 2)
        assert_same_state(restored.state, state(2))

    @pytest.mark.parametrize("loss", ["objects", "bucket"])
    def test_gcs_primary_lost(self, store: Storage, make_bucket, loss: str) -> None:
        bucket = make_bucket("us")
        primary, replica = f"gs://{bucket}/run", f"gs://{make_bucket('eu')}/run"
        with CheckpointManager(primary, replicas=[replica], storage=store) as manager:
            save_steps(manager, [1, 2])
            gcs_bucket = store.gcs.client().bucket(bucket)
            for blob in list(gcs_bucket.list_blobs()):
                blob.delete()
            if loss == "bucket":
                gcs_bucket.delete()
            restored = manager.restore()
        assert restored is not None and restored.uri == step_uri(replica, 2)
        assert_same_state(restored.state, state(2))

    def test_newest_valid_anywhere(self, store: Storage, tmp_path, make_bucket) -> None:
        primary = str(tmp_path / "primary")
        replicas = [f"gs://{make_bucket('eu')}/run", str(tmp_path / "replica")]
        with CheckpointManager(primary, replicas=replicas, storage=store) as manager:
            save_steps(manager, [1, 2, 3])
        for location in (primary, replicas[0]):
            flip_bit(store, join(step_uri(location, 3), TENSOR_FILE))
        with CheckpointManager(primary, replicas=replicas, storage=store) as fresh:
            restored = fresh.restore()
            assert restored is not None and restored.uri == step_uri(replicas[1], 3)
            assert_same_state(restored.state, state(3))
            # The damaged copies were moved aside; the replica still has the newest.
            assert steps_in(store, primary) == steps_in(store, replicas[0]) == [1, 2]
            again = fresh.restore()
            assert again is not None and again.uri == step_uri(replicas[1], 3)


class TestReplicaLag:
    """replica_lag() reports, per replica, its newest step and how many steps and seconds it
    trails the primary; an unreachable replica is reported as holding nothing."""

    def test_lag(self, store: Storage, tmp_path) -> None:
        primary, replica = str(tmp_path / "primary"), str(tmp_path / "replica")
        missing = f"gs://never-created-{uuid.uuid4().hex[:8]}/run"
        with CheckpointManager(primary, replicas=[replica, missing], storage=store) as manager:
            save_steps(manager, [10, 20, 30])
            caught_up, unreachable = manager.replica_lag()
            assert (caught_up.replica, caught_up.latest_step) == (replica, 30)
            assert (caught_up.steps_behind, caught_up.seconds_behind) == (0, 0.0)
            assert (unreachable.replica, unreachable.latest_step) == (missing, None)
            assert unreachable.steps_behind == 30 and unreachable.seconds_behind > 0
            shutil.rmtree(step_uri(replica, 30))  # the replica lost its newest copy
            [behind, _] = manager.replica_lag()
        walls = {m: Manifest.from_json(store.read_bytes(join(step_uri(primary, m), MANIFEST)))
                 for m in (20, 30)}
        assert (behind.latest_step, behind.steps_behind) == (20, 10)
        assert behind.seconds_behind == pytest.approx(walls[30].wall_time - walls[20].wall_time)
        assert behind.seconds_behind > 0


# -- retention ----------------------------------------------------------------------------
class TestKeepLast:
    """keep_last=N keeps the newest N committed checkpoints, in the primary and the replicas."""

    def test_keep_last(self, store: Storage, root_uri: str, tmp_path) -> None:
        replica = str(tmp_path / "replica")
        with CheckpointManager(root_uri, replicas=[replica], keep_last=2,
                               storage=store) as manager:
            save_steps(manager, [1, 2, 3, 4, 5])
        assert steps_in(store, root_uri) == steps_in(store, replica) == [4, 5]


class TestKeepEvery:
    """keep_every_steps=K keeps checkpoints at multiples of K for good, besides the others."""

    def test_keep_every(self, store: Storage, tmp_path) -> None:
        root = str(tmp_path / "ckpt")
        with CheckpointManager(root, keep_last=1, keep_every_steps=3, storage=store) as manager:
            save_steps(manager, range(1, 8))
            assert steps_in(store, root) == [3, 6, 7]
            save_steps(manager, range(8, 11))
        assert steps_in(store, root) == [3, 6, 9, 10]


class TestKeepBest:
    """keep_best=N keeps the N best checkpoints by the metric, for "min" and "max"."""

    @pytest.mark.parametrize(("mode", "kept"), [("min", [2, 4, 5]), ("max", [3, 5])])
    def test_keep_best(self, store: Storage, tmp_path, mode: str, kept: list[int]) -> None:
        root = str(tmp_path / "ckpt")
        with CheckpointManager(root, keep_last=1, keep_best=2, best_metric="loss",
                               best_mode=mode, storage=store) as manager:
            save_steps(manager, [1, 2, 3, 4, 5], loss=[0.5, 0.1, 0.9, 0.3, 0.7])
        assert steps_in(store, root) == kept


class _KeepNothing:
    def keep(self, manifests: Sequence[Manifest]) -> set[int]:
        return set()


class TestNewestAlwaysKept:
    """The newest committed checkpoint is never deleted, whatever the policies say."""

    def test_policy_keeping_nothing(self, store: Storage, tmp_path) -> None:
        root = str(tmp_path / "ckpt")
        with CheckpointManager(root, retention=[_KeepNothing()], storage=store) as manager:
            save_steps(manager, [1, 2, 3])
        assert steps_in(store, root) == [3]

    def test_newest_is_the_worst(self, store: Storage, tmp_path) -> None:
        root = str(tmp_path / "ckpt")
        with CheckpointManager(root, keep_best=1, best_metric="loss", storage=store) as manager:
            save_steps(manager, [1, 2, 3], loss=[0.1, 0.5, 0.9])
        assert steps_in(store, root) == [1, 3]


class TestLaggingReplicaBlocksDeletion:
    """No checkpoint is deleted from the primary while some replica does not have it yet; once
    the replica catches up, retention proceeds on both."""

    def test_unreachable_replica(self, store: Storage, tmp_path) -> None:
        root = str(tmp_path / "ckpt")
        bucket = f"late-{uuid.uuid4().hex[:8]}"  # not created yet: the replica is unreachable
        replica = f"gs://{bucket}/run"
        with CheckpointManager(root, replicas=[replica], keep_last=1, storage=store) as manager:
            save_steps(manager, [1, 2, 3])
            assert steps_in(store, root) == [1, 2, 3]
            [lag] = manager.replica_lag()
            assert (lag.latest_step, lag.steps_behind) == (None, 3)
            store.gcs.client().create_bucket(bucket)  # the region comes back
            save_steps(manager, [4])
            assert [(x.latest_step, x.steps_behind) for x in manager.replica_lag()] == [(4, 0)]
        assert steps_in(store, root) == steps_in(store, replica) == [4]


@pytest.fixture
def immutable() -> Iterator[Any]:
    """Makes directories immutable (chattr +i: renames fail even for root); undone after."""
    done: list[str] = []

    def make(path: str) -> None:
        result = subprocess.run(["chattr", "+i", path], capture_output=True, check=False)
        if result.returncode != 0:
            pytest.skip(f"chattr +i is not supported here: {result.stderr.decode().strip()}")
        done.append(path)

    yield make
    for path in done:  # those still present (a test may have undone and deleted them)
        if os.path.exists(path):
            subprocess.run(["chattr", "-i", path], check=True)


class TestFailedDeleteIsNotFatal:
    """A checkpoint that cannot be deleted is logged and kept; saving goes on, and the delete
    is tried again after later saves."""

    def test_undeletable_step(
        self, store: Storage, tmp_path, immutable: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        root = str(tmp_path / "ckpt")
        with CheckpointManager(root, keep_last=1, storage=store) as manager:
            save_steps(manager, [1])
            immutable(step_uri(root, 1))
            with caplog.at_level(logging.WARNING, LOG):
                save_steps(manager, [2, 3])
            assert steps_in(store, root) == [1, 3]
            assert any("could not delete step 1" in r.getMessage() for r in caplog.records)
            subprocess.run(["chattr", "-i", step_uri(root, 1)], check=True)
            save_steps(manager, [4])
        assert steps_in(store, root) == [4]
