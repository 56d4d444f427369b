"""Replicating training data across regional buckets: incremental, verified, parallel."""

from __future__ import annotations

from vertex_patterns.replication.engine import replicate
from vertex_patterns.replication.report import DestinationReport, ReplicationReport

__all__ = ["DestinationReport", "ReplicationReport", "replicate"]
