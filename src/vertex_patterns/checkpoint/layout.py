"""Checkpoint directory layout and the manifest that commits a checkpoint.

    <dir>/step-000000001200/manifest.json          written last: the commit marker
    <dir>/step-000000001200/state.json             the JSON skeleton of the state
    <dir>/step-000000001200/tensors-00000.safetensors ...
    <dir>/quarantine/step-000000001100-<time>/     damaged checkpoints, moved aside

A step directory without a valid manifest is never listed or restored. On local disk the
whole directory is renamed into place after its manifest is written (atomic); on GCS, where
there are no renames, the manifest alone commits (orbax's CommitFileTemporaryPath).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from vertex_patterns import __version__
from vertex_patterns.errors import ConfigError, VertexPatternsError
from vertex_patterns.storage.uri import validate_object_key

FORMAT = "vertex-patterns.checkpoint/1"
MANIFEST = "manifest.json"
STATE_FILE = "state.json"
QUARANTINE = "quarantine"
STEP_RE = re.compile(r"^step-(\d{12})$")


def step_dir_name(step: int) -> str:
    """`step-000000001200`."""
    if step < 0:
        raise ValueError(f"checkpoint step must be >= 0, got {step}")
    return f"step-{step:012d}"


def parse_step_dir(name: str) -> int | None:
    """The step of a directory name, or None when it is not a step directory."""
    m = STEP_RE.match(name.rstrip("/"))
    return int(m.group(1)) if m else None


def join(base: str, *parts: str) -> str:
    """Joins URI parts with '/' (never pathlib: it would collapse gs://)."""
    out = base.rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


class ManifestError(VertexPatternsError, ValueError):
    """A manifest that cannot be trusted: malformed, or naming files outside its directory."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a checkpoint."""

    name: str
    size: int
    crc32c: str


@dataclass(frozen=True)
class Manifest:
    """The commit record of one checkpoint.

    Attributes:
        step: The training step.
        files: Every data file with its size and CRC32C.
        wall_time: Unix time of the commit.
        world_size: Ranks that wrote the checkpoint.
        metrics: User metrics at this step (for keep-best retention).
        library_version: vertex-patterns version that wrote it.
        torch_version: torch version that wrote it.
        extra: Free-form metadata.
    """

    step: int
    files: tuple[FileEntry, ...]
    wall_time: float = field(default_factory=time.time)
    world_size: int = 1
    metrics: dict[str, float] = field(default_factory=dict)
    library_version: str = __version__
    torch_version: str = torch.__version__
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        """Bytes of all data files."""
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        """The manifest file's bytes."""
        body = asdict(self)
        body["format"] = FORMAT
        body["files"] = [asdict(f) for f in self.files]
        return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parses and validates a manifest.

        Raises:
            ManifestError: Malformed, of another format, or naming a file outside its
                step directory.
        """
        try:
            body = json.loads(data)
            if body.get("format") != FORMAT:
                raise ManifestError(f"unknown checkpoint format {body.get('format')!r}")
            files = []
            for f in body["files"]:
                name = str(f["name"])
                try:
                    validate_object_key(name)
                except ConfigError as exc:
                    raise ManifestError(f"manifest names a file outside its step: {exc}") \
                        from exc
                if name == MANIFEST:
                    raise ManifestError("manifest lists itself")
                files.append(FileEntry(name=name, size=int(f["size"]), crc32c=str(f["crc32c"])))
            return cls(
                step=int(body["step"]),
                files=tuple(files),
                wall_time=float(body["wall_time"]),
                world_size=int(body.get("world_size", 1)),
                metrics={str(k): float(v) for k, v in body.get("metrics", {}).items()},
                library_version=str(body.get("library_version", "")),
                torch_version=str(body.get("torch_version", "")),
                extra=dict(body.get("extra", {})),
            )
        except ManifestError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"malformed manifest: {exc}") from exc
