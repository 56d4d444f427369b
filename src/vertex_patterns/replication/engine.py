"""Incremental, verified, parallel replication of a prefix to one or more destinations.

An object is skipped when the destination holds the same size and CRC32C (never mtime
alone), so re-running over unchanged data copies nothing and an interrupted run resumes where
it stopped. Each copy is verified by CRC32C; local destinations are written under a temporary
name and renamed only once verified; gs→gs copies are server-side: small objects in batch
requests of up to 100 copies (`GcsBackend.copy_batch`), the rest, and any that a batch did not
copy, as rewrites one by one.

Local files' CRC32C comes from the checksum remembered beside them (`storage.crc_cache`)
where it is still valid, and is otherwise computed only when a skip decision needs it (the
destination holds an object of the same size) or, for a copy, from the bytes as they are
copied. Skip decisions that need no file read are made while planning, without a worker.
"""

from __future__ import annotations

import itertools
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
from vertex_patterns.replication.local_targets import LocalTargets
from vertex_patterns.replication.progress import Progress
from vertex_patterns.replication.report import DestinationReport, ReplicationReport
from vertex_patterns.storage import ObjectInfo, Storage
from vertex_patterns.storage.crc_cache import crc32c_file_cached
from vertex_patterns.storage.gcs import BATCH_COPY_MAX_BYTES, BATCH_MAX_CALLS
from vertex_patterns.storage.local import remove_stale_temp_files
from vertex_patterns.storage.uri import StorageUri, parse_uri

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


def _check_local(source: StorageUri, dests: list[StorageUri]) -> None:
    # Buckets are checked by listing them (see Replicator._list), which planning does for
    # every location before anything is written.
    if not source.is_gcs and not os.path.isdir(source.path):
        what = "is not a directory" if os.path.exists(source.path) else "does not exist"
        raise ConfigError(f"source {source} {what}: give a directory or gs:// prefix")
    for d in dests:
        if not d.is_gcs and os.path.exists(d.path) and not os.path.isdir(d.path):
            raise ConfigError(f"destination {d} exists and is not a directory")


def _is_dir_marker(info: ObjectInfo) -> bool:
    return info.key.endswith("/") and info.size == 0


def _spread_over_directories(copies: list[_Copy]) -> list[_Copy]:
    """Orders copies to local directories round-robin over those directories.

    Creating a file holds its directory's lock; where creating is slow (an ext4 scanning
    past many recently freed inodes takes ~0.5 ms), workers that all write into one
    directory at a time, as the listing order would have them, queue and spin on that lock.
    Spread over directories they create in parallel. The order within a directory, and of
    gs:// targets, is kept.
    """
    lanes: dict[str, list[_Copy]] = {}
    for c in copies:
        directory = "" if c.target.startswith("gs://") else os.path.dirname(c.target)
        lanes.setdefault(directory, []).append(c)
    if len(lanes) < 2:
        return copies
    return [c for row in itertools.zip_longest(*lanes.values()) for c in row if c is not None]


def _batches(copies: list[_Copy], workers: int) -> tuple[list[list[_Copy]], list[_Copy]]:
    """Splits gs→gs copies of small objects into batches (see `GcsBackend.copy_batch`).

    Returns the batches (each of one destination, sized to keep every worker busy: at most
    `BATCH_MAX_CALLS`, at least 10 copies) and the copies that go one by one.
    """
    lanes: dict[int, list[_Copy]] = {}
    single: list[_Copy] = []
    for c in copies:
        if (c.source.uri.startswith("gs://") and c.target.startswith("gs://")
                and c.source.size <= BATCH_COPY_MAX_BYTES and c.source.generation is not None
                and c.source.crc32c is not None):
            lanes.setdefault(c.dest, []).append(c)
        else:
            single.append(c)
    batches: list[list[_Copy]] = []
    for lane in lanes.values():
        if len(lane) < 2:
            single.extend(lane)
            continue
        size = min(BATCH_MAX_CALLS, max(10, -(-len(lane) // workers)))
        batches.extend(lane[i:i + size] for i in range(0, len(lane), size))
    return batches, single


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
        # CRC32C of local source files, by URI, once known (shared by all destinations).
        self._source_crc: dict[str, str] = {}

    # -- planning -----------------------------------------------------------------------
    def _list(self, location: StorageUri) -> list[ObjectInfo]:
        """Lists a location; a missing bucket is a ConfigError.

        Local listings carry only remembered checksums: reading files is left to the
        workers, and only where a decision or a copy needs it.
        """
        try:
            return list(self.store.list(str(location), cached_crc32c_only=True))
        except NotFoundError as exc:
            if location is self.source:
                raise ConfigError(f"source bucket gs://{location.bucket} does not exist: "
                                  "fix the URI") from exc
            raise ConfigError(
                f"destination bucket gs://{location.bucket} does not exist: create it first "
                f"(gcloud storage buckets create gs://{location.bucket} --location=REGION)"
            ) from exc

    def _plan(self, pool: ThreadPoolExecutor) -> tuple[list[_Copy], list[_Delete]]:
        _check_local(self.source, self.dests)
        # Buckets are listed at once in workers (that is mostly waiting), local directories
        # meanwhile here (that is CPU, which threads would only contend for); all before
        # anything is written, so a missing bucket stops the run with nothing copied.
        locations = [self.source, *self.dests]
        pending = {i: pool.submit(self._list, loc)
                   for i, loc in enumerate(locations) if loc.is_gcs}
        try:
            listed = [pending[i].result() if i in pending else self._list(loc)
                      for i, loc in enumerate(locations)]
        except BaseException:
            for f in pending.values():
                f.cancel()
            raise
        sources, *listings = listed
        if not self.source.is_gcs:
            self._source_crc = {o.uri: o.crc32c for o in sources if o.crc32c is not None}
        if not sources and self.delete and not self.allow_empty_source:
            raise ConfigError(
                f"source {self.source} lists no objects and --delete would empty every "
                "destination: pass --allow-empty-source if that is intended"
            )
        copies: list[_Copy] = []
        deletes: list[_Delete] = []
        source_keys = {o.key for o in sources}
        for i, dest in enumerate(self.dests):
            existing = {o.key: o for o in listings[i]}
            local = None if dest.is_gcs else LocalTargets(dest.path)
            report = self.reports[i]
            for obj in sources:
                if local is not None and _is_dir_marker(obj):
                    report.skipped += 1  # a GCS "folder" placeholder: nothing to write
                    continue
                have = existing.get(obj.key)
                if (have is not None and have.size == obj.size and have.crc32c is not None
                        and have.crc32c == obj.crc32c):
                    # Both checksums known and equal: nothing is written, so no worker (and
                    # no target path, whose escape check matters only for writes) is needed.
                    report.skipped += 1
                    continue
                try:
                    target = str(dest.join(obj.key)) if local is None else local.path(obj.key)
                except ConfigError as exc:
                    self._fail(i, str(exc))
                    continue
                copies.append(_Copy(i, obj, target, have))
            if self.delete:
                deletes.extend(_Delete(i, o) for k, o in sorted(existing.items())
                               if k not in source_keys)
        return _spread_over_directories(copies), deletes

    # -- execution ----------------------------------------------------------------------
    def _fail(self, dest: int, message: str) -> None:
        log.error("%s", message)
        with self._lock:
            self.reports[dest].failed += 1
            self.reports[dest].errors.append(message)

    def _finish(self, dest: int) -> None:
        with self._lock:
            self.reports[dest].seconds = time.monotonic() - self._start

    def _source_crc32c(self, source: ObjectInfo) -> str:
        if source.crc32c is not None:
            return source.crc32c
        crc = self._source_crc.get(source.uri)
        if crc is None:
            crc = crc32c_file_cached(source.uri)
            self._source_crc[source.uri] = crc
        return crc

    def _same(self, task: _Copy) -> bool:
        have = task.existing
        if have is None or have.size != task.source.size:
            return False
        crc = have.crc32c
        if crc is None:
            # A local destination file, checksummed only now that the sizes match; never
            # remembered through a symbolic link, which may point outside the destination.
            crc = crc32c_file_cached(have.uri, remember=not os.path.islink(have.uri))
        return crc == self._source_crc32c(task.source)

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
        source = task.source
        if source.crc32c is None:
            # Known from another destination or a skip check; else computed while copying.
            source = replace(source, crc32c=self._source_crc.get(source.uri))
        error: StorageError | None = None
        for attempt in range(1, self.copy_attempts + 1):
            try:
                result = self.store.copy(source, task.target, expected_generation=generation)
            except (PermanentError, ConfigError) as exc:
                error = exc if isinstance(exc, StorageError) else StorageError(str(exc))
                break
            except StorageError as exc:  # transient, exhausted retries, integrity mismatch
                error = exc
                log.warning("copy of %s to %s failed (attempt %d/%d): %s", task.source.uri,
                            task.target, attempt, self.copy_attempts, exc)
                generation = None  # the destination may have changed: look again
                if not self.source.is_gcs:
                    # The local file may have changed since its CRC32C was taken: take it
                    # again from the bytes the next attempt reads.
                    source = replace(source, crc32c=None)
                continue
            if not self.source.is_gcs and result.destination.crc32c is not None:
                self._source_crc.setdefault(source.uri, result.destination.crc32c)
            self._copied(task, result.bytes_through_client, progress)
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

    def _copied(self, task: _Copy, through_client: int, progress: Progress) -> None:
        report = self.reports[task.dest]
        with self._lock:
            report.copied += 1
            report.bytes_copied += task.source.size
            report.bytes_through_client += through_client
        progress.advance(1, task.source.size)
        self._finish(task.dest)

    def _copy_batch(self, tasks: list[_Copy], progress: Progress) -> None:
        """Copies small gs→gs objects in one batch request; any it did not copy, or whose
        copy does not verify, goes through `_copy` (rewrite, retries, error reporting)."""
        items = [(t.source, t.target, (t.existing.generation or 0) if t.existing else 0)
                 for t in tasks]
        # Object bytes the batch moved through this process, measured (none for copies
        # the server makes); counted once, with the first copy it made.
        before = self.store.gcs.data_bytes()
        results = self.store.gcs.copy_batch(items)
        moved = self.store.gcs.data_bytes() - before
        # copy_batch reports a failed batch as None per item: those go one by one below.
        for task, info in zip(tasks, results, strict=True):
            if info is not None and info.size == task.source.size \
                    and info.crc32c == task.source.crc32c:
                self._copied(task, moved, progress)
                moved = 0
                continue
            if info is not None:
                # Written but not verified: the one-by-one path overwrites that generation.
                log.warning("batch copy of %s to %s does not verify (CRC32C %s, source %s); "
                            "copying it again", task.source.uri, task.target, info.crc32c,
                            task.source.crc32c)
                task = replace(task, existing=info)
            self._copy(task, progress)

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
                batches, single = (([], copies) if self.dry_run
                                   else _batches(copies, self.workers))
                futures: list[Future[None]] = [
                    pool.submit(self._copy_batch, b, progress) for b in batches]
                futures += [pool.submit(self._copy, c, progress) for c in single]
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
