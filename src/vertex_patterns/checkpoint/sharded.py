"""Sharded (DTensor) state in a checkpoint: taken out of the state, written and read by
torch.distributed.checkpoint (DCP) under `<step>/dcp/`, listed in the manifest like any file.

    <dir>/step-000000001200/state.json        the skeleton; a DTensor leaf is {"__dcp__": key}
    <dir>/step-000000001200/dcp/.metadata     DCP's index
    <dir>/step-000000001200/dcp/__0_0.distcp  rank 0's shards, ...

DCP restores into DTensors the caller already holds (their mesh and placements say which
shard each rank loads), so `restore(into=...)` takes them. Which ranks coordinate, and when,
is `checkpoint.distributed`'s business.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist

from vertex_patterns.checkpoint.io import verify_step
from vertex_patterns.checkpoint.layout import FileEntry, Manifest, join
from vertex_patterns.checkpoint.serialization import StateError
from vertex_patterns.errors import ConfigError
from vertex_patterns.storage import Storage
from vertex_patterns.storage.uri import parse_uri

SHARDED_DIR = "dcp"
"""Subdirectory of a step that holds the torch.distributed.checkpoint files."""
SHARDED_TAG = "__dcp__"
"""Skeleton leaf `{"__dcp__": key}`: a DTensor saved under `key` in `dcp/`."""

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # torch built without distributed, or older than 2.5
    try:
        from torch.distributed._tensor import DTensor
    except ImportError:
        DTensor = None  # type: ignore[assignment,misc]


def _is_dtensor(value: Any) -> bool:
    return DTensor is not None and isinstance(value, DTensor)


def split_sharded(state: Any) -> tuple[Any, dict[str, Any]]:
    """Takes the DTensor leaves out of `state`.

    Returns:
        The state with each DTensor replaced by `{"__dcp__": key}`, and `{key: DTensor}`
        (`key` is the leaf's path joined by '/').

    Raises:
        StateError: The state holds a dict with the reserved key `__dcp__`.
    """
    sharded: dict[str, Any] = {}

    def walk(value: Any, path: tuple[str, ...]) -> Any:
        if _is_dtensor(value):
            key = "/".join(path) or "_"
            sharded[key] = value
            return {SHARDED_TAG: key}
        if isinstance(value, Mapping):
            if SHARDED_TAG in value:
                raise StateError(f"{'/'.join(path) or 'state'}: the key {SHARDED_TAG!r} is "
                                 "reserved for sharded tensors")
            return {k: walk(v, (*path, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, str(i))) for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return tuple(walk(v, (*path, str(i))) for i, v in enumerate(value))
        return value

    return walk(state, ()), sharded


def merge_sharded(state: Any, sharded: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Puts sharded tensors back where `split_sharded` left markers.

    Returns:
        The merged state and the sharded tensors it used, by key.

    Raises:
        ConfigError: A marker names a key that `sharded` lacks.
    """
    missing: list[str] = []
    used: dict[str, Any] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {SHARDED_TAG}:
                key = str(value[SHARDED_TAG])
                if key not in sharded:
                    missing.append(key)
                    return None
                used[key] = sharded[key]
                return sharded[key]
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, tuple):
            return tuple(walk(v) for v in value)
        return value

    out = walk(state)
    if missing:
        raise ConfigError(f"the checkpoint holds sharded tensors that `into` lacks: "
                          f"{', '.join(sorted(missing)[:5])}; pass restore(into=...) a state "
                          "with a DTensor at each of these paths")
    return out, used


class ShardBuffers:
    """Host copies of this rank's DTensor shards, reused across saves (see `HostBuffers`)."""

    def __init__(self) -> None:
        self._buffers: dict[str, Any] = {}

    def snapshot(self, sharded: Mapping[str, Any]) -> dict[str, Any]:
        """Copies each DTensor's local shard into a CPU DTensor of the same layout."""
        out: dict[str, Any] = {}
        cuda = False
        for key, t in sharded.items():
            buf = self._buffers.get(key)
            if buf is None or buf.shape != t.shape or buf.dtype != t.dtype \
                    or buf.placements != t.placements \
                    or buf.to_local().shape != t.to_local().shape:
                # A CPU DTensor of the same mesh and placements, as torch's async staging.
                buf = t.detach().to("cpu") if t.device.type != "cpu" else t.detach().clone()
                self._buffers[key] = buf
            else:
                buf.to_local().copy_(t.detach().to_local(), non_blocking=t.is_cuda)
            cuda = cuda or t.is_cuda
            out[key] = buf
        if cuda:
            torch.cuda.synchronize()
        for key in set(self._buffers) - set(sharded):
            del self._buffers[key]
        return out


def _require_numpy() -> None:
    if importlib.util.find_spec("numpy") is None:
        # torch.distributed.checkpoint exchanges its plans with torch's object collectives,
        # which decode through numpy; without it dcp.save/load fail on every rank.
        raise ConfigError("sharded (DTensor) state goes through torch.distributed."
                          "checkpoint, which needs numpy: pip install numpy")


def check_sharded_supported(directory: str) -> None:
    """Raises ConfigError unless sharded state can be written below `directory`."""
    if parse_uri(directory).is_gcs:
        raise ConfigError(
            f"sharded (DTensor) state is saved with torch.distributed.checkpoint, which "
            f"needs a filesystem path every rank can write; {directory} is a gs:// URI. Use "
            "the GCS FUSE mount of the bucket (on Vertex AI: /gcs/<bucket>/<prefix>)")
    _require_numpy()


def sharded_files(manifest: Manifest) -> list[FileEntry]:
    """The manifest's DCP files."""
    return [f for f in manifest.files if f.name.startswith(f"{SHARDED_DIR}/")]


def check_world_size(manifest: Manifest, world_size: int) -> None:
    """Raises ConfigError when a sharded checkpoint was written by another number of ranks."""
    if sharded_files(manifest) and manifest.world_size != world_size:
        raise ConfigError(
            f"checkpoint step {manifest.step} holds sharded state written by "
            f"{manifest.world_size} ranks; this job has {world_size}. Restore it with "
            f"{manifest.world_size} ranks")



def verify_share(store: Storage, step_uri: str, manifest: Manifest, rank: int,
                 world_size: int) -> None:
    """Verifies this rank's share of the DCP files (every `world_size`-th, from `rank`).

    Raises:
        CorruptCheckpointError: A file of the share is missing or damaged.
    """
    share = tuple(sharded_files(manifest)[rank::world_size])
    if share:
        verify_step(store, step_uri, replace(manifest, files=share))


def replicated_manifest(manifest: Manifest) -> Manifest:
    """The manifest without its DCP files (what `load_step` should read and parse)."""
    shards = set(sharded_files(manifest))
    return replace(manifest, files=tuple(f for f in manifest.files if f not in shards))


def load_sharded(step_uri: str, into: Mapping[str, Any],
                 process_group: dist.ProcessGroup | None) -> None:
    """DCP-loads a step's shards into the DTensors of `into` (in place; collective).

    Raises:
        ConfigError: The step lies on gs:// (DCP reads files only).
    """
    import torch.distributed.checkpoint as dcp

    _require_numpy()
    location = parse_uri(step_uri)
    if location.is_gcs:
        raise ConfigError(f"{step_uri} holds sharded state, which torch.distributed."
                          "checkpoint reads from a filesystem path only; restore from the "
                          "bucket's GCS FUSE mount (/gcs/<bucket>/<prefix>)")
    dcp.load(dict(into), storage_reader=dcp.FileSystemReader(join(location.path, SHARDED_DIR)),
             process_group=process_group)
