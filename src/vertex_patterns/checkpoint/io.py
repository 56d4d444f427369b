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

How a step becomes visible, and stops being visible, is the directory's `CommitProtocol`
(`checkpoint/commit.py`): nothing here branches on the backend.
"""

from __future__ import annotations

import json
import logging
import mmap
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

# TMP_PREFIX and TRASH_PREFIX are re-exported: where crash tests look for leftovers.
from vertex_patterns.checkpoint.commit import (  # noqa: F401
    TMP_PREFIX,
    TRASH_PREFIX,
    commit_protocol,
)
from vertex_patterns.checkpoint.layout import (
    MANIFEST,
    STATE_FILE,
    FileEntry,
    Manifest,
    ManifestError,
    join,
)
from vertex_patterns.checkpoint.serialization import (
    Sink,
    iter_shards,
    parse_safetensors,
    unflatten_state,
    write_safetensors,
)
from vertex_patterns.errors import NotFoundError, StoppedError, StorageError
from vertex_patterns.storage import Storage
from vertex_patterns.storage.checksum import crc32c_bytes, encode_crc32c
from vertex_patterns.storage.diskio import populate
from vertex_patterns.storage.parallel_crc import crc32c_parallel

log = logging.getLogger("vertex_patterns.checkpoint")


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
    """Writes and commits one checkpoint: data files first, the manifest last, through the
    directory's `CommitProtocol` (local: a temporary directory, fsynced, renamed into place;
    GCS: uploads, then the manifest, which commits).

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
        StoppedError: `should_stop` said stop; nothing was committed.
    """
    protocol = commit_protocol(store, directory)
    work = protocol.begin(step)
    files = protocol.files(work)
    try:
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
            raise StoppedError("checkpoint write stopped before its commit (deadline)")
        protocol.commit(work, step, manifest, files)
        return manifest
    except BaseException:
        protocol.abort(work)
        raise
    finally:
        files.close()


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
    """Step -> step directory URI below `directory`, committed or not."""
    return commit_protocol(store, directory).step_dirs()


def read_buffer(store: Storage, uri: str, *, mapped: bool = True) -> bytearray | mmap.mmap:
    """A whole file: a copy-on-write map of a local one (`map_file`) when `mapped`, else a
    new buffer holding its bytes.

    Raises:
        NotFoundError: No such file.
    """
    return commit_protocol(store, uri).read(uri, mapped=mapped)


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
    """Deletes a checkpoint; it stops being listed first (see `CommitProtocol.delete`)."""
    commit_protocol(store, directory).delete(step)


def quarantine_step(store: Storage, directory: str, step: int) -> str:
    """Moves a damaged checkpoint aside (not deleted) so it is no longer listed.

    Returns:
        Where it now lies.
    """
    return commit_protocol(store, directory).quarantine(step)


def remove_leftovers(store: Storage, directory: str) -> int:
    """Deletes what crashed saves and deletions left (uncommitted step directories) and
    moves steps with a malformed manifest aside.

    Call only where no other process is saving into `directory`.

    Returns:
        How many leftovers were removed.
    """
    protocol = commit_protocol(store, directory)
    removed, malformed = protocol.remove_leftovers()
    for uri in removed:
        log.info("removed uncommitted leftover %s", uri)
    for step in malformed:
        where = protocol.quarantine(step)
        log.warning("moved step %d aside to %s: its manifest is malformed", step, where)
    return len(removed)
