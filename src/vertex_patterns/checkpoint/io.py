"""Writing, reading and verifying one checkpoint step, on any storage backend.

On local disk the bytes take the shortest path both ways. A save writes each tensor's memory
to its file past the page cache (`DirectFile`, O_DIRECT through reused aligned buffers, the
disk write overlapping the next copy; `WritebackFile` where a filesystem refuses O_DIRECT)
and fsyncs each file once at the end, just before the commit (a rename of the whole step
directory). A restore maps each file copy-on-write (`map_file`, the whole file read ahead at
once), maps and checks its CRC32C piece by piece on every core (`crc32c_parallel` with
`populate`) and returns tensors that are views into it: the page cache's pages are the
tensors' memory until a tensor is written to. On GCS files
are streamed up and read into one buffer each.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from vertex_patterns.checkpoint.layout import (
    MANIFEST,
    QUARANTINE,
    STATE_FILE,
    FileEntry,
    Manifest,
    ManifestError,
    join,
    parse_step_dir,
    step_dir_name,
)
from vertex_patterns.checkpoint.serialization import (
    Sink,
    iter_shards,
    parse_safetensors,
    unflatten_state,
    write_safetensors,
)
from vertex_patterns.errors import NotFoundError, StorageError
from vertex_patterns.storage import Storage
from vertex_patterns.storage.checksum import crc32c_bytes, encode_crc32c
from vertex_patterns.storage.diskio import (
    DirectFile,
    WritebackFile,
    map_file,
    open_for_checkpoint,
    populate,
)
from vertex_patterns.storage.local_write import fsync_dir
from vertex_patterns.storage.parallel_crc import crc32c_parallel
from vertex_patterns.storage.uri import parse_uri

log = logging.getLogger("vertex_patterns.checkpoint")

TMP_PREFIX = ".tmp-step-"
TRASH_PREFIX = ".deleting-"


class CorruptCheckpointError(StorageError):
    """A checkpoint's files do not match its manifest; `problems` names each."""

    def __init__(self, uri: str, problems: list[str]) -> None:
        super().__init__(f"{uri}: damaged: " + "; ".join(problems), uri=uri)
        self.problems = problems


@dataclass(frozen=True)
class StepData:
    """The bytes of one verified checkpoint, before unflattening."""

    manifest: Manifest
    skeleton: Any
    tensors: dict[str, torch.Tensor]


def write_step(
    store: Storage,
    directory: str,
    step: int,
    skeleton: Any,
    tensors: dict[str, torch.Tensor],
    *,
    metrics: dict[str, float] | None = None,
    world_size: int = 1,
    shard_bytes: int = 512 * 1024 * 1024,
    should_stop: Callable[[], bool] | None = None,
    extra_files: Callable[[str], list[FileEntry]] | None = None,
) -> Manifest:
    """Writes and commits one checkpoint: data files first, the manifest last.

    Local directories: everything goes into a hidden temporary directory, fsynced, then
    renamed to `step-…` in one atomic step. GCS: files are uploaded in place and the
    manifest, uploaded last, commits.

    Args:
        store: Storage facade.
        directory: The checkpoint root URI.
        step: The step.
        skeleton: JSON skeleton of the state.
        tensors: Contiguous CPU tensors (a snapshot).
        metrics: Metrics recorded in the manifest.
        world_size: Ranks that took part.
        shard_bytes: Target size of each tensor file.
        should_stop: Polled while writing; True aborts before the commit.
        extra_files: Called with the (temporary) step URI to write more files (distributed
            shards); returns their entries.

    Returns:
        The committed manifest.

    Raises:
        InterruptedError: `should_stop` said stop; nothing was committed.
    """
    location = parse_uri(directory)
    final = join(directory, step_dir_name(step))
    if location.is_gcs:
        work = final
        _remove_uncommitted_gcs(store, final)
    else:
        os.makedirs(location.path, exist_ok=True)
        work = os.path.join(location.path, f"{TMP_PREFIX}{step:012d}-{uuid.uuid4().hex[:8]}")
        os.makedirs(work)
    try:
        with _StepFiles(store, work, local=not location.is_gcs) as files:
            entries: list[FileEntry] = []
            for i, shard in enumerate(iter_shards(tensors, shard_bytes)):
                name = f"tensors-{i:05d}.safetensors"

                def produce(sink: Sink, shard: dict[str, torch.Tensor] = shard
                            ) -> tuple[int, str]:
                    return write_safetensors(sink, shard, should_stop=should_stop)

                size, crc = files.write(name, produce)
                entries.append(FileEntry(name, size, crc))
            state = json.dumps({"skeleton": skeleton}, allow_nan=True).encode()
            files.write(STATE_FILE, lambda f: f.write(state))
            entries.append(FileEntry(STATE_FILE, len(state), crc32c_bytes(state)))
            if extra_files is not None:
                entries.extend(extra_files(work))
            manifest = Manifest(step=step, files=tuple(entries), world_size=world_size,
                                metrics=dict(metrics or {}))
            if should_stop is not None and should_stop():
                raise InterruptedError("checkpoint write stopped before its commit (deadline)")
            files.write(MANIFEST, lambda f: f.write(manifest.to_json()))
            files.sync()
        if not location.is_gcs:
            fsync_dir(work)
            final_path = os.path.join(location.path, step_dir_name(step))
            if os.path.exists(final_path):  # an uncommitted leftover of the same step
                shutil.rmtree(final_path)
            os.rename(work, final_path)
            fsync_dir(location.path)
        return manifest
    except BaseException:
        if not location.is_gcs:
            shutil.rmtree(work, ignore_errors=True)
        raise


class _StepFiles:
    """The files of one step being written: uploads on GCS; on local disk, `DirectFile`s (or
    `WritebackFile`s) in the step's temporary directory (its rename is the atomic part),
    kept open so that `sync` fsyncs them all just before the commit."""

    def __init__(self, store: Storage, work: str, *, local: bool) -> None:
        self._store = store
        self._work = work
        self._local = local
        self._open: list[DirectFile | WritebackFile] = []

    def write(self, name: str, produce: Callable[[Sink], Any]) -> Any:
        """A new file `name` holding what `produce` writes; returns what `produce` returns."""
        if not self._local:
            return self._store.write_stream(join(self._work, name), produce)
        f = open_for_checkpoint(os.path.join(self._work, name))
        self._open.append(f)
        result = produce(f)
        f.finish()  # its staging buffers go back for the next file
        return result

    def sync(self) -> None:
        """Waits until every local file is on disk."""
        for f in self._open:
            f.sync()

    def __enter__(self) -> _StepFiles:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for f in self._open:
            f.close()


def _remove_uncommitted_gcs(store: Storage, step_uri: str) -> None:
    for obj in store.list(step_uri):
        store.delete(obj.uri)


def read_manifest(store: Storage, step_uri: str) -> Manifest:
    """Reads and validates a step's manifest.

    Raises:
        NotFoundError: No manifest (not committed).
        ManifestError: Malformed or unsafe manifest.
    """
    return Manifest.from_json(store.read_bytes(join(step_uri, MANIFEST)))


def list_committed(store: Storage, directory: str) -> dict[int, Manifest]:
    """Committed steps below `directory` (valid manifest present), step -> manifest."""
    out: dict[int, Manifest] = {}
    for step, uri in step_dirs(store, directory).items():
        try:
            out[step] = read_manifest(store, uri)
        except NotFoundError:
            continue
        except ManifestError as exc:
            log.warning("ignoring %s: %s", uri, exc)
    return out


def step_dirs(store: Storage, directory: str) -> dict[int, str]:
    location = parse_uri(directory)
    found: dict[int, str] = {}
    if location.is_gcs:
        for obj in store.list(directory):
            head = obj.key.split("/", 1)[0]
            step = parse_step_dir(head)
            if step is not None:
                found[step] = join(directory, head)
    elif os.path.isdir(location.path):
        for name in os.listdir(location.path):
            step = parse_step_dir(name)
            if step is not None and os.path.isdir(os.path.join(location.path, name)):
                found[step] = os.path.join(location.path, name)
    return found


def read_buffer(store: Storage, uri: str, *, mapped: bool = True) -> bytearray | mmap.mmap:
    """A whole file: a copy-on-write map of a local one (`map_file`) when `mapped`, else a
    new buffer holding its bytes.

    Raises:
        NotFoundError: No such file.
    """
    location = parse_uri(uri)
    if mapped and not location.is_gcs:
        return map_file(location.path)
    return store.read_into_buffer(uri)


def verify_step(store: Storage, step_uri: str, manifest: Manifest, *, mapped: bool = True
                ) -> dict[str, bytearray | mmap.mmap]:
    """Reads every file of a step and checks size and CRC32C against the manifest.

    Args:
        store: Storage facade.
        step_uri: The step directory.
        manifest: Its manifest.
        mapped: Map local files (`read_buffer`) rather than read them into new buffers.

    Returns:
        The verified file contents by name.

    Raises:
        CorruptCheckpointError: Naming each missing, truncated or damaged file.
    """
    problems: list[str] = []
    contents: dict[str, bytearray | mmap.mmap] = {}
    for entry in manifest.files:
        try:
            buf = read_buffer(store, join(step_uri, entry.name), mapped=mapped)
        except NotFoundError:
            problems.append(f"{entry.name}: missing")
            continue
        if len(buf) != entry.size:
            problems.append(f"{entry.name}: {len(buf)} bytes, manifest says {entry.size}")
            continue
        crc = encode_crc32c(crc32c_parallel(memoryview(buf), prepare=partial(populate, buf)))
        if crc != entry.crc32c:
            problems.append(f"{entry.name}: CRC32C {crc}, manifest says {entry.crc32c}")
            continue
        contents[entry.name] = buf
    if problems:
        raise CorruptCheckpointError(step_uri, problems)
    return contents


def load_step(store: Storage, step_uri: str, manifest: Manifest, *, mapped: bool = True
              ) -> StepData:
    """Reads, verifies and parses one checkpoint (tensors on CPU).

    Args:
        store: Storage facade.
        step_uri: The step directory.
        manifest: Its manifest.
        mapped: Local tensors are views into copy-on-write maps of the files (no copy; see
            `map_file`); False reads them into private memory.
    """
    contents = verify_step(store, step_uri, manifest, mapped=mapped)
    try:
        skeleton = json.loads(bytes(contents[STATE_FILE]))["skeleton"]
        tensors: dict[str, torch.Tensor] = {}
        for name, buf in contents.items():
            if name.endswith(".safetensors"):
                tensors.update(parse_safetensors(buf))
    except (KeyError, ValueError) as exc:
        raise CorruptCheckpointError(step_uri, [f"unreadable content: {exc}"]) from exc
    return StepData(manifest=manifest, skeleton=skeleton, tensors=tensors)


def materialize(data: StepData, device: torch.device | str | None = None) -> Any:
    """The nested state of a loaded step, tensors moved to `device` if given."""
    tensors = data.tensors
    if device is not None and torch.device(device).type != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return unflatten_state(data.skeleton, tensors)


def delete_step(store: Storage, directory: str, step: int) -> None:
    """Deletes a checkpoint: uncommits it first (manifest, or an atomic rename locally)."""
    location = parse_uri(directory)
    step_uri = join(directory, step_dir_name(step))
    if location.is_gcs:
        store.delete(join(step_uri, MANIFEST))
        for obj in store.list(step_uri):
            store.delete(obj.uri)
        return
    path = os.path.join(location.path, step_dir_name(step))
    trash = os.path.join(location.path,
                         f"{TRASH_PREFIX}{step_dir_name(step)}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def quarantine_step(store: Storage, directory: str, step: int) -> str:
    """Moves a damaged checkpoint aside (not deleted) so it is no longer listed.

    Returns:
        Where it now lies.
    """
    location = parse_uri(directory)
    name = f"{step_dir_name(step)}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:4]}"
    step_uri = join(directory, step_dir_name(step))
    target = join(directory, QUARANTINE, name)
    if location.is_gcs:
        objects = list(store.list(step_uri))
        for obj in objects:
            store.copy(obj, join(target, obj.key))
        manifest = [o for o in objects if o.key == MANIFEST]
        for obj in manifest + [o for o in objects if o.key != MANIFEST]:
            store.delete(obj.uri)
        return target
    os.makedirs(os.path.join(location.path, QUARANTINE), exist_ok=True)
    os.rename(os.path.join(location.path, step_dir_name(step)), target)
    return target


def remove_leftovers(store: Storage, directory: str) -> int:
    """Deletes what crashed saves and deletions left: uncommitted step directories.

    Call only where no other process is saving into `directory`.

    Returns:
        How many leftovers were removed.
    """
    location = parse_uri(directory)
    removed = 0
    if not location.is_gcs:
        if not os.path.isdir(location.path):
            return 0
        for name in os.listdir(location.path):
            path = os.path.join(location.path, name)
            if name.startswith((TMP_PREFIX, TRASH_PREFIX)) and os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
    for step, uri in step_dirs(store, directory).items():
        try:
            read_manifest(store, uri)
            continue
        except ManifestError as exc:
            where = quarantine_step(store, directory, step)
            log.warning("moved %s aside to %s: %s", uri, where, exc)
            continue
        except NotFoundError:
            pass
        if location.is_gcs:
            _remove_uncommitted_gcs(store, uri)
        else:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(uri)
        removed += 1
        log.info("removed uncommitted leftover %s", uri)
    return removed
