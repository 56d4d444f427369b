"""Incremental, verified, parallel replication of a prefix to one or more destinations.

An object is skipped when the destination holds the same size and CRC32C (never mtime
alone), so re-running over unchanged data copies nothing and an interrupted run resumes where
it stopped. Each copy is verified by CRC32C; local destinations are written under a temporary
name and renamed only once verified; gs→gs copies are server-side rewrites.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

from vertex_patterns.errors import (
    ConfigError,
    IntegrityError,
    NotFoundError,
    PermanentError,
    StorageError,
)
from vertex_patterns.replication.progress import Progress
from vertex_patterns.replication.report import DestinationReport, ReplicationReport
from vertex_patterns.storage import ObjectInfo, Storage
from vertex_patterns.storage.checksum import crc32c_file
from vertex_patterns.storage.local import remove_stale_temp_files
from vertex_patterns.storage.uri import StorageUri, parse_uri, safe_local_path

log = logging.getLogger("vertex_patterns.replication")


@dataclass(frozen=True)
class _Copy:
    dest: int
    source: ObjectInfo
    target: str
    existing: ObjectInfo | None


@dataclass(frozen=True)
class _Delete:
    dest: int
    target: ObjectInfo


def _check_locations(source: StorageUri, dests: list[StorageUri]) -> None:
    seen: set[str] = set()
    for d in dests:
        if str(d) in seen:
            raise ConfigError(f"destination {d} is given twice")
        seen.add(str(d))
        if source.contains(d) or d.contains(source):
            where = "equal to" if str(source) == str(d) else "overlapping"
            raise ConfigError(
                f"destination {d} is {where} the source {source}: choose a prefix outside it"
            )
    for i, a in enumerate(dests):
        for b in dests[i + 1:]:
            if a.contains(b) or b.contains(a):
                raise ConfigError(f"destinations {a} and {b} overlap: give disjoint prefixes")


def _check_exists(store: Storage, source: StorageUri, dests: list[StorageUri]) -> None:
    if source.is_gcs:
        if not store.gcs.bucket_exists(source):
            raise ConfigError(f"source bucket gs://{source.bucket} does not exist: fix the URI")
    elif not os.path.isdir(source.path):
        what = "is not a directory" if os.path.exists(source.path) else "does not exist"
        raise ConfigError(f"source {source} {what}: give a directory or gs:// prefix")
    for d in dests:
        if d.is_gcs:
            if not store.gcs.bucket_exists(d):
                raise ConfigError(
                    f"destination bucket gs://{d.bucket} does not exist: create it first "
                    f"(gcloud storage buckets create gs://{d.bucket} --location=REGION)"
                )
        elif os.path.exists(d.path) and not os.path.isdir(d.path):
            raise ConfigError(f"destination {d} exists and is not a directory")


def _target_uri(dest: StorageUri, key: str) -> str:
    """Where `key` lands below `dest`; local targets are checked against path escapes."""
    if dest.is_gcs:
        return str(dest.join(key))
    return safe_local_path(dest.path, key)


def _is_dir_marker(info: ObjectInfo) -> bool:
    return info.key.endswith("/") and info.size == 0


class Replicator:
    """One replication run; see `replicate` for the arguments."""

    def __init__(
        self,
        source: str,
        destinations: Sequence[str],
        *,
        storage: Storage | None = None,
        workers: int = 8,
        delete: bool = False,
        allow_empty_source: bool = False,
        dry_run: bool = False,
        progress: bool | None = None,
        copy_attempts: int = 3,
    ) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        if copy_attempts < 1:
            raise ConfigError(f"copy_attempts must be at least 1, got {copy_attempts}")
        if not destinations:
            raise ConfigError("no destination given: name at least one DST")
        self.source = parse_uri(source)
        self.dests = [parse_uri(d) for d in destinations]
        _check_locations(self.source, self.dests)
        self.store = storage or Storage()
        self.workers = workers
        self.delete = delete
        self.allow_empty_source = allow_empty_source
        self.dry_run = dry_run
        self.progress_enabled = progress
        self.copy_attempts = copy_attempts
        self.reports = [DestinationReport(uri=str(d)) for d in self.dests]
        self._lock = threading.Lock()
        self._start = 0.0

    # -- planning -----------------------------------------------------------------------
    def _list_source(self, pool: ThreadPoolExecutor) -> list[ObjectInfo]:
        objects = list(self.store.list(str(self.source)))
        if not self.source.is_gcs:
            # Local sources: checksum every file once, in parallel (each destination needs it
            # for the skip decision or the verification).
            crcs = list(pool.map(lambda o: crc32c_file(o.uri), objects))
            objects = [replace(o, crc32c=c) for o, c in zip(objects, crcs, strict=True)]
        return objects

    def _plan(self, pool: ThreadPoolExecutor) -> tuple[list[_Copy], list[_Delete]]:
        _check_exists(self.store, self.source, self.dests)
        sources = self._list_source(pool)
        if not sources and self.delete and not self.allow_empty_source:
            raise ConfigError(
                f"source {self.source} lists no objects and --delete would empty every "
                "destination: pass --allow-empty-source if that is intended"
            )
        copies: list[_Copy] = []
        deletes: list[_Delete] = []
        source_keys = {o.key for o in sources}
        for i, dest in enumerate(self.dests):
            existing = {o.key: o for o in self.store.list(str(dest))}
            for obj in sources:
                if _is_dir_marker(obj) and not dest.is_gcs:
                    self.reports[i].skipped += 1  # a GCS "folder" placeholder: nothing to write
                    continue
                try:
                    target = _target_uri(dest, obj.key)
                except ConfigError as exc:
                    self._fail(i, str(exc))
                    continue
                copies.append(_Copy(i, obj, target, existing.get(obj.key)))
            if self.delete:
                deletes.extend(_Delete(i, o) for k, o in sorted(existing.items())
                               if k not in source_keys)
        return copies, deletes

    # -- execution ----------------------------------------------------------------------
    def _fail(self, dest: int, message: str) -> None:
        log.error("%s", message)
        with self._lock:
            self.reports[dest].failed += 1
            self.reports[dest].errors.append(message)

    def _finish(self, dest: int) -> None:
        with self._lock:
            self.reports[dest].seconds = time.monotonic() - self._start

    def _same(self, task: _Copy) -> bool:
        have = task.existing
        if have is None or have.size != task.source.size:
            return False
        crc = have.crc32c
        if crc is None:  # local destination: checksum only when the sizes already match
            crc = crc32c_file(have.uri)
        return crc == task.source.crc32c

    def _copy(self, task: _Copy, progress: Progress) -> None:
        report = self.reports[task.dest]
        if self._same(task):
            with self._lock:
                report.skipped += 1
            progress.advance(1, task.source.size)
            self._finish(task.dest)
            return
        if self.dry_run:
            print(f"would copy {task.source.uri} -> {task.target}", flush=True)
            with self._lock:
                report.copied += 1
                report.bytes_copied += task.source.size
            return
        generation = task.existing.generation if task.existing else 0
        error: StorageError | None = None
        for attempt in range(1, self.copy_attempts + 1):
            try:
                result = self.store.copy(task.source, task.target, expected_generation=generation)
            except (PermanentError, ConfigError) as exc:
                error = exc if isinstance(exc, StorageError) else StorageError(str(exc))
                break
            except StorageError as exc:  # transient, exhausted retries, integrity mismatch
                error = exc
                log.warning("copy of %s to %s failed (attempt %d/%d): %s", task.source.uri,
                            task.target, attempt, self.copy_attempts, exc)
                generation = None  # the destination may have changed: look again
                continue
            with self._lock:
                report.copied += 1
                report.bytes_copied += task.source.size
                report.bytes_through_client += result.bytes_through_client
            progress.advance(1, task.source.size)
            self._finish(task.dest)
            return
        if isinstance(error, IntegrityError) and self.dests[task.dest].is_gcs:
            # Do not leave bytes that failed verification at the final name.
            try:
                self.store.delete(task.target)
            except StorageError as exc:
                log.error("could not remove unverified %s: %s", task.target, exc)
        self._fail(task.dest, f"copy {task.source.uri} -> {task.target}: {error}")
        progress.advance(1, task.source.size)
        self._finish(task.dest)

    def _delete(self, task: _Delete, progress: Progress) -> None:
        if self.dry_run:
            print(f"would delete {task.target.uri}", flush=True)
            with self._lock:
                self.reports[task.dest].deleted += 1
            return
        try:
            self.store.delete(task.target.uri, generation=task.target.generation)
        except NotFoundError:
            pass
        except StorageError as exc:
            self._fail(task.dest, f"delete {task.target.uri}: {exc}")
            progress.advance(1, 0)
            return
        with self._lock:
            self.reports[task.dest].deleted += 1
        progress.advance(1, 0)
        self._finish(task.dest)

    def run(self) -> ReplicationReport:
        """Plans, copies, verifies and (with `delete`) prunes; returns the report.

        Raises:
            ConfigError: Bad input, found before anything is written.
        """
        self._start = time.monotonic()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="replicate") as pool:
            copies, deletes = self._plan(pool)
            if not self.dry_run:
                for dest in self.dests:
                    if not dest.is_gcs:
                        remove_stale_temp_files(dest.path)
            total_bytes = sum(c.source.size for c in copies)
            with Progress(len(copies) + len(deletes), total_bytes,
                          enabled=False if self.dry_run else self.progress_enabled) as progress:
                futures: list[Future[None]] = [
                    pool.submit(self._copy, c, progress) for c in copies]
                try:
                    for f in futures:
                        f.result()
                    # Deletes run after every copy, so a destination never misses an object
                    # that exists at the source.
                    futures = [pool.submit(self._delete, d, progress) for d in deletes]
                    for f in futures:
                        f.result()
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
        for i in range(len(self.dests)):
            if self.reports[i].seconds == 0.0:
                self._finish(i)
        return ReplicationReport(source=str(self.source), destinations=self.reports,
                                 dry_run=self.dry_run)


def replicate(
    source: str,
    destinations: Sequence[str],
    *,
    storage: Storage | None = None,
    workers: int = 8,
    delete: bool = False,
    allow_empty_source: bool = False,
    dry_run: bool = False,
    progress: bool | None = None,
    copy_attempts: int = 3,
) -> ReplicationReport:
    """Replicates every object below `source` to each destination.

    Args:
        source: A `gs://bucket/prefix` or local directory.
        destinations: One or more prefixes or directories (any mix of local and `gs://`).
        storage: The storage facade (defaults follow `STORAGE_EMULATOR_HOST`).
        workers: Objects copied in parallel.
        delete: Remove destination objects the source does not have.
        allow_empty_source: Let `delete` run when the source lists nothing.
        dry_run: Print the plan; write nothing.
        progress: Draw a progress bar (True), log lines (False), or decide by TTY (None).
        copy_attempts: Tries per object when a copy fails transiently or does not verify.

    Returns:
        The report; `report.ok` is False when any object failed.

    Raises:
        ConfigError: Malformed URIs, a missing bucket or source directory, a destination
            inside the source, or an empty source with `delete`; nothing has been written.
    """
    return Replicator(
        source,
        destinations,
        storage=storage,
        workers=workers,
        delete=delete,
        allow_empty_source=allow_empty_source,
        dry_run=dry_run,
        progress=progress,
        copy_attempts=copy_attempts,
    ).run()
