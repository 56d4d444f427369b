"""`CheckpointManager`: atomic, verified, async checkpoints, retained and fanned out.

    with CheckpointManager("gs://ckpt-us-central1/run1", replicas=["gs://ckpt-europe-west4/run1"],
                           keep_last=3) as ckpt:
        restored = ckpt.restore()
        start = restored.step + 1 if restored else 0
        for step in range(start, steps):
            ...
            if step % 100 == 0:
                ckpt.save(step, {"model": model.state_dict(), "optim": opt.state_dict()})

Only the host-memory snapshot blocks the caller; a background thread writes and commits
(orbax's `_AsyncManager`). A second background thread fans committed steps out to replicas and
applies retention; its failures are logged and retried on the next save, never fatal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch

from vertex_patterns.checkpoint.distributed import (
    CheckpointGroup,
    agree_on_candidate,
    agree_to_save,
    follow_step,
    is_distributed,
    write_step_as_leader,
)
from vertex_patterns.checkpoint.fanout import ReplicaLag, fan_out, replica_lag
from vertex_patterns.checkpoint.io import (
    CorruptCheckpointError,
    delete_step,
    list_committed,
    load_step,
    materialize,
    quarantine_step,
    remove_leftovers,
    write_step,
)
from vertex_patterns.checkpoint.layout import Manifest, join, step_dir_name
from vertex_patterns.checkpoint.retention import (
    RetentionPolicy,
    build_policies,
    steps_to_delete,
)
from vertex_patterns.checkpoint.serialization import flatten_state
from vertex_patterns.checkpoint.sharded import (
    ShardBuffers,
    check_world_size,
    load_sharded,
    merge_sharded,
    replicated_manifest,
    sharded_files,
    split_sharded,
    verify_share,
)
from vertex_patterns.checkpoint.snapshot import HostBuffers, in_place
from vertex_patterns.errors import ConfigError, StoppedError, StorageError, VertexPatternsError
from vertex_patterns.storage import Storage
from vertex_patterns.storage.uri import parse_uri

log = logging.getLogger("vertex_patterns.checkpoint")


class CheckpointDeadlineError(VertexPatternsError, TimeoutError):
    """A blocking save did not commit by its deadline; the previous checkpoint is intact."""


@dataclass(frozen=True)
class Restored:
    """A restored checkpoint.

    Attributes:
        step: Its step.
        state: The saved structure; tensors on CPU or the requested device.
        uri: The step directory it was read from (primary or a replica).
        manifest: Its manifest (metrics, wall time, versions).
    """

    step: int
    state: Any
    uri: str
    manifest: Manifest


class CheckpointManager:
    """Saves and restores checkpoints below one directory URI, with optional replicas.

    Args:
        directory: `gs://bucket/prefix` or a local directory.
        replicas: Backup directories (other regions) that every committed checkpoint is
            copied to, and that `restore` falls back on.
        keep_last: Keep the newest N checkpoints.
        keep_every_steps: Keep checkpoints whose step is a multiple of K, for good.
        keep_best: Keep the best N by `best_metric`.
        best_metric: Metric name for `keep_best` (from `save(..., metrics=)`).
        best_mode: "min" or "max".
        retention: Extra policies (objects with `keep(manifests) -> set[int]`).
        storage: Storage facade (defaults follow `STORAGE_EMULATOR_HOST`).
        shard_bytes: Target size of each tensor file.
        is_writer: Whether this process writes the replicated state; other ranks only
            restore. Always rank 0 in distributed mode; otherwise defaults to True.
        cleanup: Remove leftovers of crashed saves on start (writers only).
        restore_mapped: `restore` returns tensors of local checkpoints as copy-on-write
            views of their files (memory maps: nothing is copied, a page is copied only when
            written to). Checkpoint files are never rewritten in place, only deleted, which
            leaves the views valid. False reads them into private memory instead (one copy),
            for directories that something else might rewrite in place (`cp` over a file).
        distributed: Coordinate the ranks of a torch.distributed job (default: when it is
            initialised): every rank calls `save`, rank 0 writes the replicated state once,
            DTensors go through torch.distributed.checkpoint, and rank 0 commits after every
            rank has finished (see `checkpoint.distributed`). Every rank must then construct
            the manager (it creates a gloo process group) and call `save`/`restore` alike.
    """

    def __init__(
        self,
        directory: str,
        *,
        replicas: Sequence[str] = (),
        keep_last: int | None = None,
        keep_every_steps: int | None = None,
        keep_best: int | None = None,
        best_metric: str | None = None,
        best_mode: str = "min",
        retention: Sequence[RetentionPolicy] = (),
        storage: Storage | None = None,
        shard_bytes: int = 512 * 1024 * 1024,
        is_writer: bool | None = None,
        cleanup: bool = True,
        restore_mapped: bool = True,
        distributed: bool | None = None,
    ) -> None:
        self.directory = str(parse_uri(directory)).rstrip("/")
        self.replicas = [str(parse_uri(r)).rstrip("/") for r in replicas]
        for r in self.replicas:
            if parse_uri(r).contains(parse_uri(self.directory)) or \
                    parse_uri(self.directory).contains(parse_uri(r)):
                raise ConfigError(f"replica {r} overlaps the checkpoint directory "
                                  f"{self.directory}: give a separate location")
        if len(set(self.replicas)) != len(self.replicas):
            raise ConfigError("a replica is given twice")
        if shard_bytes < 1024:
            raise ConfigError(f"shard_bytes must be at least 1024, got {shard_bytes}")
        try:
            self.policies: list[RetentionPolicy] = [
                *build_policies(keep_last=keep_last, keep_every_steps=keep_every_steps,
                                keep_best=keep_best, best_metric=best_metric,
                                best_mode=best_mode, extra=retention),
            ]
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.store = storage or Storage()
        self.shard_bytes = shard_bytes
        self.restore_mapped = restore_mapped
        if distributed is None:
            distributed = is_distributed()
        if distributed and is_writer is not None and is_writer != (_rank() == 0):
            raise ConfigError("in a distributed job rank 0 writes and commits every "
                              "checkpoint; leave is_writer unset, or pass distributed=False "
                              "to coordinate the ranks yourself")
        if is_writer is None:
            is_writer = _rank() == 0
        self.is_writer = is_writer
        self._group = CheckpointGroup() if distributed else None
        self._buffers = HostBuffers()
        self._shard_buffers = ShardBuffers()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="ckpt-write")
        self._background = ThreadPoolExecutor(1, thread_name_prefix="ckpt-fanout")
        self._pending: Future[Manifest] | None = None
        self._pending_background: Future[None] | None = None
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._manifests: dict[int, Manifest] = {}
        self._closed = False
        self.last_save_stats: dict[str, float] = {}
        """Step, bytes, write and blocking seconds of the last committed save."""
        if self.is_writer and cleanup:
            removed = remove_leftovers(self.store, self.directory)
            if removed:
                log.info("removed %d leftovers of crashed saves in %s", removed, self.directory)
        if self._group is not None:
            self._group.barrier()  # no rank lists while rank 0 cleans up
        self._manifests = list_committed(self.store, self.directory)

    # -- listing ------------------------------------------------------------------------
    def all_steps(self) -> list[int]:
        """Committed steps in the primary directory, oldest first."""
        self._manifests = list_committed(self.store, self.directory)
        return sorted(self._manifests)

    def latest_step(self) -> int | None:
        """The newest committed step in the primary directory, or None."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def replica_lag(self) -> list[ReplicaLag]:
        """Per replica: its newest step and how many steps/seconds it trails the primary.

        A replica that cannot be listed (its region is down) counts as holding nothing.
        """
        primary = list_committed(self.store, self.directory)
        lags = []
        for r in self.replicas:
            try:
                held = list_committed(self.store, r)
            except StorageError as exc:
                log.warning("cannot list replica %s: %s", r, exc)
                held = {}
            lags.append(replica_lag(primary, r, held))
        return lags

    # -- saving -------------------------------------------------------------------------
    def _raise_background_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _wait_pending(self, timeout: float | None = None) -> None:
        pending = self._pending
        if pending is None:
            return
        try:
            pending.result(timeout=timeout)
        except FutureTimeout:
            raise
        except StoppedError as exc:
            # Stopped at a blocking save's deadline: already raised as CheckpointDeadlineError.
            if not self._stop.is_set():
                self._error = self._error or exc
        except BaseException as exc:  # recorded once, raised to the caller below
            self._error = self._error or exc
        finally:
            if pending.done():
                self._pending = None
        self._raise_background_error()

    def save(
        self,
        step: int,
        state: Mapping[str, Any],
        *,
        metrics: Mapping[str, float] | None = None,
        blocking: bool = False,
        deadline_s: float | None = None,
    ) -> None:
        """Saves `state` as checkpoint `step`.

        Waits for the previous save to commit, snapshots the state into host memory, and
        writes it in the background (or before returning when `blocking`). A step that is
        already committed is not written again.

        Args:
            step: The training step (>= 0).
            state: Nested dict of tensors, numbers, strings, lists (model, optimizer,
                scheduler, RNG states, data position, user metadata).
            metrics: Numbers recorded in the manifest (for keep-best retention).
            blocking: Return only once the checkpoint is committed.
            deadline_s: With `blocking`, give up after this many seconds (the emergency
                save of a preemption notice); the write is stopped before it commits.

        Raises:
            CheckpointDeadlineError: The blocking save did not commit in time; the previous
                checkpoint is intact.
            StorageError: A previous background save failed (raised once).
            StateError: The state holds something that cannot be saved without pickling.
        """
        if self._closed:
            raise RuntimeError("CheckpointManager is closed")
        if step < 0:
            raise ConfigError(f"checkpoint step must be >= 0, got {step}")
        started = time.monotonic()
        deadline = None if deadline_s is None else started + deadline_s
        self._raise_background_error()
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            self._wait_pending(timeout=remaining)
        except FutureTimeout as exc:
            raise CheckpointDeadlineError(
                f"previous checkpoint still writing at the deadline; step {step} not saved"
            ) from exc
        direct: dict[str, torch.Tensor] | None = None
        if self._group is not None:
            prepared = self._prepare_collectively(step, state)
            if prepared is None:
                return
            skeleton, snapshot, sharded = prepared
        else:
            if not self.is_writer:
                return
            if step in self._manifests:
                log.info("checkpoint step %d is already committed; not saving it again", step)
                return
            plain, sharded = split_sharded(dict(state))
            if sharded:
                raise ConfigError("the state holds DTensors; sharded state needs the "
                                  "manager's distributed mode (torch.distributed initialised)")
            skeleton, tensors = flatten_state(plain)
            # A blocking save without a deadline returns only after the write: it can write
            # the tensors where they are. One with a deadline may return mid-write.
            direct = in_place(tensors) if blocking and deadline is None else None
            snapshot = direct if direct is not None else self._buffers.snapshot(tensors)
        blocked = time.monotonic() - started
        self._stop.clear()
        metric_values = {k: float(v) for k, v in (metrics or {}).items()}
        if self.is_writer:
            self._pending = self._writer.submit(self._write, step, skeleton, snapshot, sharded,
                                                metric_values, blocked)
        else:
            self._pending = self._writer.submit(self._follow, step, sharded)
        if blocking:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                self._wait_pending(timeout=remaining)
            except FutureTimeout as exc:
                self._stop.set()  # the writer stops before committing
                raise CheckpointDeadlineError(
                    f"checkpoint step {step} did not commit within {deadline_s:.1f}s; the "
                    "previous checkpoint is intact") from exc
            except BaseException:
                if direct is not None:  # e.g. KeyboardInterrupt: the caller may run on and
                    self._stop.set()  # change the tensors being written; never commit them
                raise

    def _prepare_collectively(
        self, step: int, state: Mapping[str, Any]
    ) -> tuple[Any, dict[str, torch.Tensor], dict[str, Any]] | None:
        """Snapshots this rank's part of a distributed save, then agrees with every rank.

        Runs in the caller's thread, so the agreement is the save's barrier: no checkpoint
        commits before every rank has reached it. A local failure is raised on every rank.

        Returns:
            The skeleton and replicated snapshot (rank 0) and the shard snapshot, or None
            when the step is already committed.
        """
        assert self._group is not None
        skeleton: Any = None
        snapshot: dict[str, torch.Tensor] = {}
        sharded: dict[str, Any] = {}
        failure: Exception | None = None
        try:
            plain, sharded = split_sharded(dict(state))
            if self.is_writer:
                skeleton, tensors = flatten_state(plain)
                snapshot = self._buffers.snapshot(tensors)
            sharded = self._shard_buffers.snapshot(sharded)
        except Exception as exc:  # raised by agree_to_save once the other ranks know
            failure = exc
        if not agree_to_save(self._group, step, bool(sharded), step in self._manifests,
                             self.directory, failure=failure):
            return None
        return skeleton, snapshot, sharded

    def _write(self, step: int, skeleton: Any, tensors: dict[str, torch.Tensor],
               sharded: dict[str, Any], metrics: dict[str, float], blocked_s: float
               ) -> Manifest:
        t0 = time.monotonic()
        if self._group is not None:
            manifest = write_step_as_leader(
                self._group, self.store, self.directory, step, skeleton, tensors, sharded,
                metrics=metrics, shard_bytes=self.shard_bytes, should_stop=self._stop.is_set)
        else:
            manifest = write_step(self.store, self.directory, step, skeleton, tensors,
                                  metrics=metrics, world_size=_world_size(),
                                  shard_bytes=self.shard_bytes, should_stop=self._stop.is_set)
        with self._lock:
            self._manifests[step] = manifest
        seconds = time.monotonic() - t0
        log.info("checkpoint step %d committed: %.1f MB in %.2fs (blocked %.3fs)", step,
                 manifest.total_bytes / 1e6, seconds, blocked_s)
        self.last_save_stats = {"step": step, "bytes": manifest.total_bytes,
                                "write_seconds": seconds, "blocking_seconds": blocked_s}
        self._pending_background = self._background.submit(self._after_commit)
        return manifest

    def _follow(self, step: int, sharded: dict[str, Any]) -> Manifest:
        """A non-zero rank's part of a distributed save: its shards, then rank 0's commit."""
        assert self._group is not None
        manifest = follow_step(self._group, self.store, step, sharded)
        with self._lock:
            self._manifests[step] = manifest
        return manifest

    def _after_commit(self) -> None:
        """Fan out to replicas, then apply retention. Failures are logged, never raised."""
        replicated: dict[str, set[int]] = {}
        for replica in self.replicas:
            try:
                fan_out(self.store, self.directory, replica)
            except (StorageError, OSError, ValueError) as exc:
                log.warning("fan-out to %s failed (will retry after the next save): %s",
                            replica, exc)
            try:
                replicated[replica] = set(list_committed(self.store, replica))
            except (StorageError, OSError) as exc:
                log.warning("cannot list replica %s: %s", replica, exc)
                replicated[replica] = set()
        try:
            self._apply_retention(replicated)
        except (StorageError, OSError) as exc:
            log.warning("retention failed (will retry after the next save): %s", exc)

    def _apply_retention(self, replicated: dict[str, set[int]]) -> None:
        with self._lock:
            manifests = list(self._manifests.values())
        committed = {m.step for m in manifests}
        # Never delete a checkpoint some replica does not have yet.
        protected = set()
        for steps in replicated.values():
            protected |= committed - steps
        for step in steps_to_delete(manifests, self.policies, protected=protected):
            failed = False
            for location in (self.directory, *self.replicas):
                try:
                    delete_step(self.store, location, step)
                except (StorageError, OSError) as exc:
                    failed = True
                    log.warning("could not delete step %d in %s: %s", step, location, exc)
            if failed:
                continue  # still listed here, so the next save's retention tries again
            with self._lock:
                self._manifests.pop(step, None)
            log.info("retention: deleted checkpoint step %d", step)

    def discard_after(self, step: int) -> list[int]:
        """Moves committed checkpoints newer than `step` aside (quarantine) everywhere.

        After a rewind they hold state the run abandoned: a resume must not pick them, and a
        later save of the same step must not be skipped as already committed. Every rank
        calls it; the writer moves the files.

        Returns:
            The steps discarded.
        """
        self._wait_pending()
        with self._lock:
            newer = sorted(s for s in self._manifests if s > step)
        for s in newer if self.is_writer else []:
            for location in (self.directory, *self.replicas):
                try:
                    quarantine_step(self.store, location, s)
                except (StorageError, OSError) as exc:  # a replica may not have it
                    log.info("discard step %d in %s: %s", s, location, exc)
        if self._group is not None:
            self._group.barrier()
        with self._lock:
            for s in newer:
                self._manifests.pop(s, None)
        return newer

    def wait(self) -> None:
        """Blocks until pending saves are committed and fanned out.

        Raises:
            StorageError: A background save failed (raised once).
        """
        self._wait_pending()
        background = self._pending_background
        if background is not None:
            background.result()
        self._raise_background_error()

    def close(self) -> None:
        """Flushes pending work and stops the background threads."""
        if self._closed:
            return
        try:
            self.wait()
        finally:
            self._closed = True
            self._writer.shutdown(wait=True)
            self._background.shutdown(wait=True)

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- restoring ----------------------------------------------------------------------
    def restore(
        self,
        step: int | None = None,
        *,
        device: torch.device | str | None = None,
        into: Mapping[str, Any] | None = None,
    ) -> Restored | None:
        """Restores the newest valid checkpoint (or `step`) across primary and replicas.

        Every file is checked against the manifest. A damaged checkpoint is reported,
        moved aside (not deleted) and the next older valid one is tried. With replicas, the
        newest valid checkpoint in any location wins (the primary on ties), so a missing or
        damaged primary does not stop a resume.

        In distributed mode every rank must call it: rank 0 picks the candidates, every rank
        tries the same ones in the same order, and all restore the same step.

        Args:
            step: A specific step; None for the newest.
            device: Where to put the tensors (default CPU).
            into: For checkpoints with sharded state: a state whose DTensors (at the paths
                they were saved from, e.g. `get_state_dict(model, optimizer)`) receive it in
                place, at the world size that saved it. The restored state holds them.

        Returns:
            The restored checkpoint, or None when nothing valid is committed anywhere.

        Raises:
            ConfigError: The newest checkpoint holds sharded state and `into` is missing or
                lacks one of its DTensors, or it was written by another number of ranks.
        """
        self._wait_pending()
        candidates: list[tuple[int, int, str, Manifest]] = []
        for rank, location in enumerate((self.directory, *self.replicas)):
            if self._group is not None and self._group.rank != 0:
                break  # rank 0 lists; its view is broadcast below
            try:
                committed = list_committed(self.store, location)
            except StorageError as exc:
                log.warning("cannot list checkpoints in %s: %s", location, exc)
                continue
            candidates += [(s, -rank, location, m) for s, m in committed.items()
                           if step is None or s == step]
        ordered = [(s, location, m) for s, _r, location, m in sorted(candidates, reverse=True)]
        rank, world = 0, _world_size()
        if self._group is not None:
            rank, world = self._group.rank, self._group.world_size
            listed = self._group.broadcast([[s, location, m.to_json().decode()]
                                            for s, location, m in ordered])
            ordered = [(int(s), str(loc), Manifest.from_json(m.encode()))
                       for s, loc, m in listed]
        for s, location, manifest in ordered:
            step_uri = join(location, step_dir_name(s))
            sharded = bool(sharded_files(manifest))
            if sharded:
                check_world_size(manifest, world)
                if into is None:
                    raise ConfigError(f"checkpoint step {s} holds sharded (DTensor) state; "
                                      "pass restore(into=state) with the DTensors to load it "
                                      "into")
                if parse_uri(location).is_gcs:
                    log.warning("skipping %s: sharded checkpoints are read from a filesystem "
                                "path (a GCS FUSE mount), not gs://", step_uri)
                    continue
            problem: str | None = None
            corrupt = False
            try:
                data = load_step(self.store, step_uri, replicated_manifest(manifest),
                                 mapped=self.restore_mapped)
                verify_share(self.store, step_uri, manifest, rank, world)
            except CorruptCheckpointError as exc:
                problem, corrupt = "; ".join(exc.problems), True
            except StorageError as exc:
                problem = str(exc)
            problem, corrupt = agree_on_candidate(self._group, problem, corrupt)
            if corrupt:
                log.error("checkpoint %s is damaged (%s); moving it aside", step_uri, problem)
                if self.is_writer:
                    try:
                        quarantine_step(self.store, location, s)
                    except (StorageError, OSError) as qexc:
                        log.warning("could not move %s aside: %s", step_uri, qexc)
                if location == self.directory:
                    with self._lock:  # a later save of this step must write it anew
                        self._manifests.pop(s, None)
                continue
            if problem is not None:
                log.warning("cannot read %s: %s", step_uri, problem)
                continue
            state = materialize(data, device)
            if sharded:
                assert into is not None
                state, targets = merge_sharded(state, split_sharded(dict(into))[1])
                load_sharded(step_uri, targets,
                             None if self._group is None else self._group.group)
            if location != self.directory:
                log.warning("restored step %d from replica %s", s, location)
            else:
                log.info("restored step %d from %s", s, location)
            return Restored(step=s, state=state, uri=step_uri, manifest=manifest)
        return None


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_rank())
    return 0


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_world_size())
    return 1
