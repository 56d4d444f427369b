"""Copying committed checkpoints to backup regions: data files first, manifest last.

Idempotent and resumable: a file already present with the same size and CRC32C is skipped,
and a replica step becomes visible only when its manifest lands, after every data file.
gs→gs copies are server-side rewrites.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from vertex_patterns.checkpoint.io import list_committed, read_manifest
from vertex_patterns.checkpoint.layout import MANIFEST, Manifest, join, step_dir_name
from vertex_patterns.errors import NotFoundError
from vertex_patterns.storage import Storage

log = logging.getLogger("vertex_patterns.checkpoint")


@dataclass
class FanOutResult:
    """What one fan-out pass copied to one replica."""

    replica: str
    steps_copied: list[int]
    files_copied: int = 0
    files_skipped: int = 0
    bytes_copied: int = 0
    bytes_through_client: int = 0


@dataclass(frozen=True)
class ReplicaLag:
    """How far a replica is behind the primary."""

    replica: str
    latest_step: int | None
    steps_behind: int
    seconds_behind: float


def fan_out_step(
    store: Storage, source_dir: str, replica_dir: str, step: int, result: FanOutResult
) -> None:
    """Copies one committed step to a replica; the replica's manifest is written last."""
    src_step = join(source_dir, step_dir_name(step))
    dst_step = join(replica_dir, step_dir_name(step))
    manifest = read_manifest(store, src_step)
    for entry in manifest.files:
        dst = join(dst_step, entry.name)
        have = store.stat(dst)
        if have is not None and have.size == entry.size and have.crc32c == entry.crc32c:
            result.files_skipped += 1
            continue
        src = store.stat(join(src_step, entry.name))
        if src is None:
            raise NotFoundError(f"{src_step}/{entry.name}: missing at the source", uri=src_step)
        copied = store.copy(src, dst)
        result.files_copied += 1
        result.bytes_copied += entry.size
        result.bytes_through_client += copied.bytes_through_client
    store.write_bytes(join(dst_step, MANIFEST), manifest.to_json())
    result.steps_copied.append(step)


def fan_out(
    store: Storage,
    source_dir: str,
    replica_dir: str,
    *,
    steps: list[int] | None = None,
) -> FanOutResult:
    """Copies every committed step of `source_dir` missing from `replica_dir`.

    Args:
        store: Storage facade.
        source_dir: The primary checkpoint directory.
        replica_dir: A backup directory (another region's bucket).
        steps: Only these steps (default: all committed at the source).
    """
    result = FanOutResult(replica=replica_dir, steps_copied=[])
    source = list_committed(store, source_dir)
    have = list_committed(store, replica_dir)
    wanted = sorted(source) if steps is None else sorted(s for s in steps if s in source)
    for step in wanted:
        if step in have and same_checkpoint(have[step], source[step]):
            continue
        fan_out_step(store, source_dir, replica_dir, step, result)
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
