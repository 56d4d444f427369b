"""How a checkpoint step becomes visible and stops being visible: one protocol, two kinds.

Chosen once per checkpoint directory (`commit_protocol`), as orbax chooses between
`AtomicRenameTemporaryPath` and `CommitFileTemporaryPath`:

- `LocalCommit` (local disk): a step is written into a hidden temporary directory, every
  file and the directory fsynced, then renamed to `step-…` in one atomic step. A step being
  replaced (a replica redone with other bytes) is first renamed into a trash area, so at no
  instant does `step-…` hold files that its manifest does not describe. Deleting is a rename
  into the trash, then removal. A `step-…` that is a symbolic link is moved aside as a link:
  no write ever goes through it.
- `ObjectStoreCommit` (GCS): no renames, so the manifest alone commits. Data files first,
  the manifest last; deleting or replacing a step deletes its manifest first.

Writes (`write_step`), fan-out copies, deletes, quarantines and leftover cleanup all go
through these; nothing else in the checkpoint package branches on the backend.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from vertex_patterns.checkpoint.layout import (
    MANIFEST,
    QUARANTINE,
    Manifest,
    join,
    parse_step_dir,
    step_dir_name,
)
from vertex_patterns.checkpoint.serialization import Sink
from vertex_patterns.storage import CopyResult, ObjectInfo, Storage
from vertex_patterns.storage.diskio import (
    DirectFile,
    WritebackFile,
    map_file,
    open_for_checkpoint,
)
from vertex_patterns.storage.local_write import fsync_dir
from vertex_patterns.storage.uri import parse_uri

TMP_PREFIX = ".tmp-step-"
TRASH_PREFIX = ".deleting-"


class StepFiles(Protocol):
    """The files of one step being written into a work location (see `CommitProtocol`)."""

    def write(self, name: str, produce: Callable[[Sink], Any]) -> Any:
        """A new file `name` holding what `produce` writes; returns what `produce` returns."""
        ...

    def copy_in(self, source: ObjectInfo, name: str) -> CopyResult | None:
        """Copies `source` to file `name`, verified against `source.crc32c`; None when an
        identical file (same size and CRC32C) was already there."""
        ...

    def close(self) -> None:
        """Releases open files (after `CommitProtocol.commit` or on failure)."""
        ...


class CommitProtocol(Protocol):
    """Makes steps of one checkpoint directory visible (commit) and invisible (delete)."""

    directory: str

    def begin(self, step: int, *, keep_matching: bool = False) -> str:
        """A work location for the files of `step` (nothing there is listed as committed).

        Args:
            step: The step.
            keep_matching: Keep uncommitted data files of an earlier try where the kind
                allows it, so `StepFiles.copy_in` can skip those already right.
        """
        ...

    def files(self, work: str) -> StepFiles:
        """A writer of files into `work`."""
        ...

    def commit(self, work: str, step: int, manifest: Manifest, files: StepFiles) -> None:
        """Makes every file durable, writes the manifest and makes the step visible."""
        ...

    def abort(self, work: str) -> None:
        """Drops what an unfinished `begin` wrote (best effort)."""
        ...

    def delete(self, step: int) -> None:
        """Removes a step; it stops being listed first."""
        ...

    def quarantine(self, step: int) -> str:
        """Moves a damaged step aside (kept, no longer listed); returns where it lies."""
        ...

    def remove_leftovers(self) -> tuple[list[str], list[int]]:
        """Removes what crashed saves and deletes left; returns (removed, malformed steps)."""
        ...

    def step_dirs(self) -> dict[int, str]:
        """Step -> step directory URI, committed or not."""
        ...

    def read(self, uri: str, *, mapped: bool) -> bytearray | mmap.mmap:
        """A whole file of a step (a copy-on-write map where the kind allows it)."""
        ...


def commit_protocol(store: Storage, directory: str) -> CommitProtocol:
    """The commit protocol for `directory`, chosen once by where it lies."""
    if parse_uri(directory).is_gcs:
        return ObjectStoreCommit(store, directory)
    return LocalCommit(store, directory)


def _quarantine_name(step: int) -> str:
    return f"{step_dir_name(step)}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:4]}"


# -- local disk --------------------------------------------------------------------------
class _LocalFiles:
    """`DirectFile`s (or `WritebackFile`s) and verified copies in a temporary directory,
    kept track of so that `sync` makes every one durable just before the commit."""

    def __init__(self, store: Storage, work: str) -> None:
        self._store = store
        self._work = work
        self._open: list[DirectFile | WritebackFile] = []
        self._copied: list[str] = []

    def write(self, name: str, produce: Callable[[Sink], Any]) -> Any:
        f = open_for_checkpoint(os.path.join(self._work, name))
        self._open.append(f)
        result = produce(f)
        f.finish()  # its staging buffers go back for the next file
        return result

    def copy_in(self, source: ObjectInfo, name: str) -> CopyResult | None:
        path = os.path.join(self._work, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        result = self._store.copy(source, path)
        self._copied.append(path)
        return result

    def sync(self) -> None:
        for f in self._open:
            f.sync()
        for path in self._copied:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def close(self) -> None:
        for f in self._open:
            f.close()


class LocalCommit:
    """Temporary directory, fsync, rename; delete by rename into the trash (see module)."""

    def __init__(self, store: Storage, directory: str) -> None:
        self.directory = directory
        self._store = store
        self._root = parse_uri(directory).path

    def _final(self, step: int) -> str:
        return os.path.join(self._root, step_dir_name(step))

    def begin(self, step: int, *, keep_matching: bool = False) -> str:
        del keep_matching  # a fresh directory each time: nothing half-written is reused
        os.makedirs(self._root, exist_ok=True)
        work = os.path.join(self._root, f"{TMP_PREFIX}{step:012d}-{uuid.uuid4().hex[:8]}")
        os.mkdir(work)
        return work

    def files(self, work: str) -> StepFiles:
        return _LocalFiles(self._store, work)

    def commit(self, work: str, step: int, manifest: Manifest, files: StepFiles) -> None:
        assert isinstance(files, _LocalFiles)
        files.sync()
        with open(os.path.join(work, MANIFEST), "wb") as f:
            f.write(manifest.to_json())
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(work)
        final = self._final(step)
        # Whatever holds the name (an uncommitted leftover, the replica's older copy of the
        # step, a symbolic link) is moved aside whole, never written into.
        trash = self._to_trash(final)
        os.rename(work, final)
        fsync_dir(self._root)
        if trash is not None:
            _remove(trash)

    def _to_trash(self, path: str) -> str | None:
        trash = os.path.join(self._root,
                             f"{TRASH_PREFIX}{os.path.basename(path)}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return None
        return trash

    def abort(self, work: str) -> None:
        shutil.rmtree(work, ignore_errors=True)

    def delete(self, step: int) -> None:
        trash = self._to_trash(self._final(step))
        if trash is not None:
            _remove(trash)

    def quarantine(self, step: int) -> str:
        os.makedirs(os.path.join(self._root, QUARANTINE), exist_ok=True)
        target = os.path.join(self._root, QUARANTINE, _quarantine_name(step))
        os.rename(self._final(step), target)
        return target

    def remove_leftovers(self) -> tuple[list[str], list[int]]:
        removed: list[str] = []
        if not os.path.isdir(self._root):
            return removed, []
        for name in os.listdir(self._root):
            path = os.path.join(self._root, name)
            if name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                _remove(path)
                removed.append(path)
        malformed: list[int] = []
        for step, path in self.step_dirs().items():
            if os.path.islink(path):
                continue  # not ours to clean: listed only if it holds a valid manifest
            manifest = os.path.join(path, MANIFEST)
            if os.path.exists(manifest):
                malformed += [step] if not _parses(manifest) else []
                continue
            self.delete(step)
            removed.append(path)
        return removed, malformed

    def step_dirs(self) -> dict[int, str]:
        found: dict[int, str] = {}
        if os.path.isdir(self._root):
            for name in os.listdir(self._root):
                step = parse_step_dir(name)
                path = os.path.join(self._root, name)
                if step is not None and os.path.isdir(path):
                    found[step] = path
        return found

    def read(self, uri: str, *, mapped: bool) -> bytearray | mmap.mmap:
        if mapped:
            return map_file(parse_uri(uri).path)
        return self._store.read_into_buffer(uri)


def _parses(manifest_path: str) -> bool:
    from vertex_patterns.checkpoint.layout import ManifestError

    try:
        with open(manifest_path, "rb") as f:
            Manifest.from_json(f.read())
    except ManifestError:
        return False
    return True


def _remove(path: str) -> None:
    """Removes a file, a symbolic link (never what it points to) or a directory tree."""
    if os.path.islink(path) or not os.path.isdir(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


# -- object storage ----------------------------------------------------------------------
class _ObjectFiles:
    """Uploads and server-side copies straight to their final names (uncommitted until the
    manifest lands)."""

    def __init__(self, store: Storage, work: str) -> None:
        self._store = store
        self._work = work

    def write(self, name: str, produce: Callable[[Sink], Any]) -> Any:
        return self._store.write_stream(join(self._work, name), produce)

    def copy_in(self, source: ObjectInfo, name: str) -> CopyResult | None:
        target = join(self._work, name)
        have = self._store.stat(target)
        if have is not None and have.size == source.size and have.crc32c == source.crc32c:
            return None
        return self._store.copy(source, target,
                                expected_generation=have.generation if have else 0)

    def close(self) -> None:
        return None


class ObjectStoreCommit:
    """Data first, manifest last; the manifest is deleted first (see module)."""

    def __init__(self, store: Storage, directory: str) -> None:
        self.directory = directory
        self._store = store

    def _final(self, step: int) -> str:
        return join(self.directory, step_dir_name(step))

    def begin(self, step: int, *, keep_matching: bool = False) -> str:
        final = self._final(step)
        # Uncommit first: from here the step is not listed until its new manifest lands.
        self._store.delete(join(final, MANIFEST))
        if not keep_matching:
            for obj in self._store.list(final):
                self._store.delete(obj.uri)
        return final

    def files(self, work: str) -> StepFiles:
        return _ObjectFiles(self._store, work)

    def commit(self, work: str, step: int, manifest: Manifest, files: StepFiles) -> None:
        del step, files  # uploads are durable when their call returns
        body = manifest.to_json()
        self._store.write_stream(join(work, MANIFEST), lambda f: f.write(body))

    def abort(self, work: str) -> None:
        del work  # uncommitted files are removed by the next `begin` or `remove_leftovers`

    def delete(self, step: int) -> None:
        final = self._final(step)
        self._store.delete(join(final, MANIFEST))
        for obj in self._store.list(final):
            self._store.delete(obj.uri)

    def quarantine(self, step: int) -> str:
        final = self._final(step)
        target = join(self.directory, QUARANTINE, _quarantine_name(step))
        objects = list(self._store.list(final))
        for obj in objects:
            self._store.copy(obj, join(target, obj.key))
        manifest = [o for o in objects if o.key == MANIFEST]
        for obj in manifest + [o for o in objects if o.key != MANIFEST]:
            self._store.delete(obj.uri)
        return target

    def remove_leftovers(self) -> tuple[list[str], list[int]]:
        from vertex_patterns.checkpoint.layout import ManifestError
        from vertex_patterns.errors import NotFoundError

        removed: list[str] = []
        malformed: list[int] = []
        for step, uri in self.step_dirs().items():
            try:
                Manifest.from_json(self._store.read_bytes(join(uri, MANIFEST)))
                continue
            except ManifestError:
                malformed.append(step)
                continue
            except NotFoundError:
                pass
            self.delete(step)
            removed.append(uri)
        return removed, malformed

    def step_dirs(self) -> dict[int, str]:
        found: dict[int, str] = {}
        for obj in self._store.list(self.directory):
            head = obj.key.split("/", 1)[0]
            step = parse_step_dir(head)
            if step is not None:
                found[step] = join(self.directory, head)
        return found

    def read(self, uri: str, *, mapped: bool) -> bytearray | mmap.mmap:
        del mapped
        return self._store.read_into_buffer(uri)


def with_crc32c(source: ObjectInfo, crc32c: str) -> ObjectInfo:
    """`source` carrying the CRC32C its copy must have (the manifest's)."""
    return replace(source, crc32c=crc32c)
