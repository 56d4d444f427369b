"""Checkpoints of a `torch.distributed` job (DDP, FSDP2): written once, committed once.

Every rank calls `CheckpointManager.save` with the same step. Two kinds of state:

- Replicated state (plain tensors: a DDP model, its optimizer, counters) is identical on
  every rank, so rank 0 alone writes it, as in a single-process job. State that differs per
  rank must be a DTensor; rank 0's copy of anything else is what is saved.
- Sharded state (DTensor leaves, e.g. an FSDP2 `get_state_dict`) goes through
  `torch.distributed.checkpoint` into `<step>/dcp/`: every rank writes its own shards. DCP
  needs a filesystem every rank sees (a GCS FUSE mount `/gcs/...` on Vertex AI), not `gs://`.

The commit protocol, all of it over `CheckpointGroup` (a gloo group of its own):

    save() on each rank (caller's thread)   all_gather(step, sharded?)   every rank is here
    rank 0, writer thread                    writes the replicated files into the temp step
    B1  broadcast from rank 0                the temp step directory (or rank 0's error)
        every rank                           dcp.save of its shards; CRC32C of its share
    B2  all_gather                           each rank's error or file entries
    rank 0                                   manifest (all files) written: the commit
    B3  broadcast from rank 0                the committed manifest (or why not)

So a checkpoint commits only after every rank has reached the save and finished its part; a
failure on any rank is raised on every rank, and no rank believes in a checkpoint that did not
commit. The later collectives run in the background writer threads, concurrently with the
training loop's own collectives; collectives on one process group must be issued in the same
order on every rank, which two threads cannot promise. Hence a separate gloo group, created
once per manager (torchtitan does the same for async DCP). The manager waits for the previous
save before issuing the next collective, so the checkpoint group itself is always used by one
thread at a time, in the same order everywhere. Messages are JSON (no pickle, no numpy).

Restore: rank 0 lists the candidates (primary and replicas) and broadcasts them, so every rank
tries the same steps in the same order even while a replica is being written. Every rank
verifies the replicated files it loads and its share of the DCP files; the verdicts are
gathered, and all ranks move on to the next candidate together when any file is damaged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from vertex_patterns.checkpoint.io import write_step
from vertex_patterns.checkpoint.layout import FileEntry, Manifest, join
from vertex_patterns.checkpoint.serialization import tensor_bytes
from vertex_patterns.checkpoint.sharded import SHARDED_DIR, check_sharded_supported
from vertex_patterns.errors import ConfigError, StorageError
from vertex_patterns.storage import Storage
from vertex_patterns.storage.local_write import fsync_dir
from vertex_patterns.storage.uri import parse_uri

log = logging.getLogger("vertex_patterns.checkpoint")

def is_distributed() -> bool:
    """Whether torch.distributed is available and initialised in this process."""
    return bool(dist.is_available() and dist.is_initialized())


class CheckpointGroup:
    """This job's ranks, coordinating checkpoints over a gloo process group of their own.

    Creating one is collective: every rank must construct it, in the same order relative to
    other process groups.

    Args:
        timeout_s: How long one collective waits for the other ranks (default: torch's).
    """

    def __init__(self, timeout_s: float | None = None) -> None:
        if not is_distributed():
            raise ConfigError("torch.distributed is not initialised; call "
                              "torch.distributed.init_process_group() first")
        self.rank = int(dist.get_rank())
        self.world_size = int(dist.get_world_size())
        timeout = None if timeout_s is None else timedelta(seconds=timeout_s)
        self.group = dist.new_group(backend="gloo", timeout=timeout)

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's JSON-able `value`, in rank order."""
        data = torch.frombuffer(bytearray(json.dumps(value).encode()), dtype=torch.uint8)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world_size)]
        dist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.int64),
                        group=self.group)
        longest = max(int(s.item()) for s in sizes)
        padded = torch.zeros(longest, dtype=torch.uint8)
        padded[:data.numel()] = data
        out = [torch.empty(longest, dtype=torch.uint8) for _ in range(self.world_size)]
        dist.all_gather(out, padded, group=self.group)
        return [json.loads(bytes(tensor_bytes(t[:int(n.item())])))
                for t, n in zip(out, sizes, strict=True)]

    def broadcast(self, value: Any = None) -> Any:
        """Rank 0's JSON-able `value` on every rank (other ranks' `value` is ignored)."""
        raw = json.dumps(value).encode() if self.rank == 0 else b""
        size = torch.tensor([len(raw)], dtype=torch.int64)
        dist.broadcast(size, src=0, group=self.group)
        data = torch.zeros(int(size.item()), dtype=torch.uint8)
        if self.rank == 0:
            data = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        dist.broadcast(data, src=0, group=self.group)
        return json.loads(bytes(tensor_bytes(data)))

    def barrier(self) -> None:
        """Returns once every rank has called it."""
        dist.barrier(group=self.group)


class _RanksFailed(StorageError):
    """Some rank failed its part of a save; every rank knows and raises (no commit follows)."""


# -- saving ----------------------------------------------------------------------------------
def _checksum_share(store: Storage, work: str, rank: int, world_size: int
                    ) -> tuple[list[str], list[FileEntry]]:
    """Lists the DCP files and checksums every `world_size`-th one, starting at `rank`."""
    names = sorted(o.key for o in store.list(join(work, SHARDED_DIR)))
    entries = []
    for name in names[rank::world_size]:
        info = store.stat(join(work, SHARDED_DIR, name))
        if info is None or info.crc32c is None:
            raise StorageError(f"{SHARDED_DIR}/{name} vanished while checksumming", uri=work)
        entries.append(FileEntry(f"{SHARDED_DIR}/{name}", info.size, info.crc32c))
    return names, entries


def _write_shards_and_agree(group: CheckpointGroup, store: Storage, work: str,
                            sharded: Mapping[str, Any]) -> list[FileEntry]:
    """Every rank: DCP-saves its shards into `work`, then all ranks exchange their outcome.

    Returns:
        The entries of all DCP files (checksummed by all ranks together).

    Raises:
        _RanksFailed: Some rank failed; the same error is raised on every rank.
    """
    error: str | None = None
    names: list[str] = []
    entries: list[FileEntry] = []
    try:
        if sharded:
            import torch.distributed.checkpoint as dcp

            path = parse_uri(join(work, SHARDED_DIR)).path
            dcp.save(dict(sharded), storage_writer=dcp.FileSystemWriter(path),
                     process_group=group.group)
            names, entries = _checksum_share(store, work, group.rank, group.world_size)
            if not parse_uri(work).is_gcs:
                # Before the exchange: once every rank has reported, rank 0 commits (renames
                # `work`), so no rank may touch the directory after it.
                fsync_dir(path)
    except Exception as exc:  # reported to every rank below, then raised everywhere
        log.error("rank %d could not write its checkpoint shards: %s", group.rank, exc)
        error = f"rank {group.rank}: {type(exc).__name__}: {exc}"
    try:
        outcomes = group.all_gather({"error": error, "names": names,
                                     "files": [asdict(e) for e in entries]})
    except Exception as exc:  # the group is broken: no further message can be exchanged
        raise _RanksFailed(f"checkpoint process group failed: {exc}", uri=work) from exc
    errors = [o["error"] for o in outcomes if o["error"]]
    if errors:
        raise _RanksFailed("; ".join(errors), uri=work)
    gathered = [FileEntry(**f) for o in outcomes for f in o["files"]]
    if sorted(e.name for e in gathered) != [f"{SHARDED_DIR}/{n}" for n in names]:
        # Listings differed between ranks: a filesystem that is not consistent.
        raise _RanksFailed(f"ranks listed different shard files in {work}/{SHARDED_DIR}",
                           uri=work)
    return sorted(gathered, key=lambda e: e.name)


def write_step_as_leader(
    group: CheckpointGroup,
    store: Storage,
    directory: str,
    step: int,
    skeleton: Any,
    tensors: dict[str, torch.Tensor],
    sharded: Mapping[str, Any],
    *,
    metrics: dict[str, float],
    shard_bytes: int,
    should_stop: Callable[[], bool] | None = None,
) -> Manifest:
    """Rank 0's part of a save: replicated files, then shards with the others, then commit.

    Every other rank runs `follow_step` at the same time.

    Returns:
        The committed manifest.
    """
    def extra_files(work: str) -> list[FileEntry]:
        group.broadcast({"work": work})
        return _write_shards_and_agree(group, store, work, sharded)

    try:
        manifest = write_step(store, directory, step, skeleton, tensors, metrics=metrics,
                              world_size=group.world_size, shard_bytes=shard_bytes,
                              should_stop=should_stop, extra_files=extra_files)
    except _RanksFailed:
        raise  # every rank has raised the same error; no more messages for this step
    except BaseException as exc:
        # The others wait for B1 or, past B2, for B3: tell them this step is not committed.
        group.broadcast({"error": f"rank 0: {type(exc).__name__}: {exc}"})
        raise
    group.broadcast({"manifest": manifest.to_json().decode()})
    return manifest


def follow_step(group: CheckpointGroup, store: Storage, step: int,
                sharded: Mapping[str, Any]) -> Manifest:
    """A non-zero rank's part of a save (see `write_step_as_leader`).

    Returns:
        The manifest rank 0 committed.

    Raises:
        StorageError: Rank 0 or another rank failed; step `step` did not commit.
    """
    message = group.broadcast()
    if "error" in message:
        raise StorageError(f"checkpoint step {step} not saved: {message['error']}")
    _write_shards_and_agree(group, store, message["work"], sharded)
    message = group.broadcast()
    if "error" in message:
        raise StorageError(f"checkpoint step {step} not committed: {message['error']}")
    return Manifest.from_json(message["manifest"].encode())


# -- agreement -------------------------------------------------------------------------------
def agree_to_save(group: CheckpointGroup, step: int, has_sharded: bool, committed: bool,
                  directory: str, *, failure: Exception | None = None) -> bool:
    """All ranks: the synchronous barrier of a save, and its go/no-go (same on every rank).

    Args:
        group: The checkpoint group.
        step: This rank's step.
        has_sharded: Whether this rank's state holds DTensors.
        committed: Whether this rank sees `step` committed already (rank 0's view decides).
        directory: The checkpoint directory.
        failure: What went wrong preparing this rank's part (snapshot), if anything.

    Returns:
        False when rank 0 already has `step` committed: nobody writes it again.

    Raises:
        ConfigError: Ranks disagree on the step or on having sharded state, or sharded
            state cannot be saved here; raised on every rank alike.
        StorageError: Another rank failed to prepare its part (this rank's own `failure`
            is raised as it is).
    """
    views = group.all_gather({"step": step, "sharded": has_sharded, "committed": committed,
                              "error": None if failure is None
                              else f"{type(failure).__name__}: {failure}"})
    if failure is not None:
        raise failure
    failed = [f"rank {r}: {v['error']}" for r, v in enumerate(views) if v["error"]]
    if failed:
        raise StorageError(f"checkpoint step {step} not saved: " + "; ".join(failed))
    steps = sorted({int(v["step"]) for v in views})
    if len(steps) > 1:
        raise ConfigError(f"ranks are saving different steps {steps}; every rank must call "
                          "save() with the same step")
    if len({bool(v["sharded"]) for v in views}) > 1:
        raise ConfigError("the state of some ranks holds DTensors and of others does not; "
                          "every rank must save the same structure")
    if views[0]["committed"]:
        log.info("checkpoint step %d is already committed; not saving it again", step)
        return False
    if has_sharded:
        check_sharded_supported(directory)
    return True


def agree_on_candidate(group: CheckpointGroup | None, problem: str | None, corrupt: bool
                       ) -> tuple[str | None, bool]:
    """All ranks: combines each rank's verdict on one restore candidate.

    Returns:
        Every rank's problems joined (None when all ranks read their part intact), and
        whether any rank found a damaged file (not merely an unreadable one).
    """
    if group is None:
        return problem, corrupt
    verdicts = group.all_gather({"problem": problem, "corrupt": corrupt})
    problems = [f"rank {r}: {v['problem']}" for r, v in enumerate(verdicts) if v["problem"]]
    return ("; ".join(problems) or None), any(v["corrupt"] for v in verdicts)
