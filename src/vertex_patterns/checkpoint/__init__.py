"""Checkpointing: atomic, verified, async, retained, and fanned out to backup regions."""

from __future__ import annotations

from vertex_patterns.checkpoint.fanout import FanOutResult, ReplicaLag, fan_out
from vertex_patterns.checkpoint.io import CorruptCheckpointError
from vertex_patterns.checkpoint.layout import Manifest, ManifestError
from vertex_patterns.checkpoint.manager import (
    CheckpointDeadlineError,
    CheckpointManager,
    Restored,
)
from vertex_patterns.checkpoint.retention import KeepBest, KeepEvery, KeepLast
from vertex_patterns.checkpoint.serialization import StateError

__all__ = [
    "CheckpointDeadlineError",
    "CheckpointManager",
    "CorruptCheckpointError",
    "FanOutResult",
    "KeepBest",
    "KeepEvery",
    "KeepLast",
    "Manifest",
    "ManifestError",
    "ReplicaLag",
    "Restored",
    "StateError",
    "fan_out",
]
