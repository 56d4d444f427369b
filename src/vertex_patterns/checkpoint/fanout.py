"""Copying committed checkpoints to backup regions, through the replica's commit protocol.

The one fan-out loop (`fan_out`), used by the manager after each save and by
`vertex-patterns checkpoints fan-out` (`follow.py`). Per step:

1. The source step is verified against its manifest first: every file present with the
   manifest's size and CRC32C (GCS reports the CRC32C of the bytes it stores; a local file is
   read). A damaged source step is not copied at all: it is reported in
   `FanOutResult.damaged` and the replica keeps what it had.
2. The files go into the replica's work location (`CommitProtocol.begin`: a fresh temporary
   directory on local disk; on GCS the step, uncommitted first by deleting its manifest),
   each copy verified against the manifest's CRC32C, so the check runs end to end, source
   to destination. On GCS a file already there with the right size and CRC32C is skipped,
   so an interrupted pass resumes without recopying.
3. `CommitProtocol.commit` makes every file durable and commits with the manifest (local:
   fsync, rename; a replica step being redone is moved aside whole, never overwritten in
   place). A replica never lists a step whose content its manifest does not describe.

gs→gs copies are server-side rewrites.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from vertex_patterns.checkpoint.commit import commit_protocol, with_crc32c
from vertex_patterns.checkpoint.io import list_committed, read_manifest
from vertex_patterns.checkpoint.layout import Manifest, join, step_dir_name
from vertex_patterns.errors import IntegrityError, StorageError
from vertex_patterns.storage import ObjectInfo, Storage

log = logging.getLogger("vertex_patterns.checkpoint")


@dataclass
class FanOutResult:
    """What fan-out passes copied to one replica (a running total over passes).

    Attributes:
        replica: The replica directory.
        steps_copied: Steps committed on the replica.
        files_copied: Files copied (not counting those found already right).
        files_skipped: Files already on the replica with the right size and CRC32C.
        bytes_copied: Bytes of the files copied.
        bytes_through_client: Object bytes this process sent or received (measured).
        damaged: Source steps not fanned out because they do not match their manifest,
            step -> what is wrong (the latest finding).
    """

    replica: str
    steps_copied: list[int]
    files_copied: int = 0
    files_skipped: int = 0
    bytes_copied: int = 0
    bytes_through_client: int = 0
    damaged: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplicaLag:
    """How far a replica is behind the primary."""

    replica: str
    latest_step: int | None
    steps_behind: int
    seconds_behind: float


class DamagedSourceError(StorageError):
    """A source step's files do not match its manifest: it is not fanned out."""


def verified_sources(store: Storage, step_uri: str, manifest: Manifest) -> list[ObjectInfo]:
    """Each file of a source step as listed, checked against the manifest (size, CRC32C),
    carrying the manifest's CRC32C so that its copy is verified against it.

    Raises:
        DamagedSourceError: Naming every missing or mismatching file.
    """
    problems: list[str] = []
    sources: list[ObjectInfo] = []
    for entry in manifest.files:
        info = store.stat(join(step_uri, entry.name))
        if info is None:
            problems.append(f"{entry.name}: missing at the source")
        elif info.size != entry.size:
            problems.append(f"{entry.name}: {info.size} bytes, manifest says {entry.size}")
        elif info.crc32c != entry.crc32c:
            problems.append(f"{entry.name}: CRC32C {info.crc32c}, manifest says "
                            f"{entry.crc32c}")
        else:
            sources.append(with_crc32c(info, entry.crc32c))
    if problems:
        raise DamagedSourceError(f"{step_uri}: does not match its manifest: "
                                 + "; ".join(problems), uri=step_uri)
    return sources


def fan_out_step(
    store: Storage, source_dir: str, replica_dir: str, step: int, result: FanOutResult
) -> None:
    """Copies one committed step to a replica and commits it there (see module).

    Raises:
        DamagedSourceError: The source step does not match its manifest (nothing written).
        IntegrityError: A copy did not match the manifest (the replica's step stays
            uncommitted, or on local disk untouched).
        StorageError: A copy failed.
    """
    src_step = join(source_dir, step_dir_name(step))
    manifest = read_manifest(store, src_step)
    sources = verified_sources(store, src_step, manifest)
    replica = commit_protocol(store, replica_dir)
    work = replica.begin(step, keep_matching=True)
    files = replica.files(work)
    try:
        for entry, source in zip(manifest.files, sources, strict=True):
            copied = files.copy_in(source, entry.name)
            if copied is None:
                result.files_skipped += 1
                continue
            result.files_copied += 1
            result.bytes_copied += entry.size
            result.bytes_through_client += copied.bytes_through_client
        replica.commit(work, step, manifest, files)
    except BaseException:
        replica.abort(work)
        raise
    finally:
        files.close()
    result.steps_copied.append(step)


def fan_out(
    store: Storage,
    source_dir: str,
    replica_dir: str,
    *,
    steps: Iterable[int] | None = None,
    result: FanOutResult | None = None,
) -> FanOutResult:
    """Copies every committed step of `source_dir` that `replica_dir` lacks or holds with
    other content, oldest first. A damaged source step is skipped and recorded in
    `damaged`; any other failure stops the pass (a later pass resumes).

    Args:
        store: Storage facade.
        source_dir: The primary checkpoint directory.
        replica_dir: A backup directory (another region's bucket).
        steps: Only these steps (default: all committed at the source).
        result: A running total to add to (follow mode); a new one by default.

    Returns:
        `result`, with this pass added.
    """
    result = result or FanOutResult(replica=replica_dir, steps_copied=[])
    source = list_committed(store, source_dir)
    have = list_committed(store, replica_dir)
    wanted = sorted(source) if steps is None else sorted(set(steps) & set(source))
    for gone in set(result.damaged) - set(source):  # no longer at the source: not pending
        del result.damaged[gone]
    for step in wanted:
        if step in have and same_checkpoint(have[step], source[step]):
            continue
        try:
            fan_out_step(store, source_dir, replica_dir, step, result)
        except (DamagedSourceError, IntegrityError) as exc:
            result.damaged[step] = str(exc)
            log.error("checkpoint step %d not fanned out to %s: %s", step, replica_dir, exc)
            continue
        result.damaged.pop(step, None)
        log.info("checkpoint step %d replicated to %s", step, replica_dir)
    return result


def same_checkpoint(a: Manifest, b: Manifest) -> bool:
    return a.step == b.step and a.files == b.files


def replica_lag(
    primary: dict[int, Manifest], replica_dir: str, replica: dict[int, Manifest]
) -> ReplicaLag:
    """Steps and seconds by which `replica` trails `primary` (0 when caught up)."""
    p_latest = max(primary) if primary else None
    r_latest = max(replica) if replica else None
    if p_latest is None:
        return ReplicaLag(replica_dir, r_latest, 0, 0.0)
    if r_latest is None:  # nothing replicated yet: behind by everything since the first commit
        first = primary[min(primary)]
        return ReplicaLag(replica_dir, None, p_latest, max(0.0, time.time() - first.wall_time))
    if r_latest >= p_latest:
        return ReplicaLag(replica_dir, r_latest, 0, 0.0)
    seconds = max(0.0, primary[p_latest].wall_time - replica[r_latest].wall_time)
    return ReplicaLag(replica_dir, r_latest, p_latest - r_latest, seconds)
