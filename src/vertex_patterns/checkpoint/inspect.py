"""Looking at checkpoint directories from outside the training job: list, verify, fan out.

These back the `vertex-patterns checkpoints` commands and the `fan_out_checkpoints` and
`verify_checkpoints` components
(fan-out itself is in `checkpoint.follow`). Listing and verifying only read: unlike
`CheckpointManager.restore`, a damaged checkpoint is reported, never moved aside.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from vertex_patterns.checkpoint.fanout import (
    ReplicaLag,
    replica_lag,
)
from vertex_patterns.checkpoint.io import (
    CorruptCheckpointError,
    list_committed,
    read_manifest,
    step_dirs,
    verify_step,
)
from vertex_patterns.checkpoint.layout import MANIFEST, Manifest, ManifestError, join
from vertex_patterns.errors import ConfigError, NotFoundError
from vertex_patterns.formatting import format_table, human_bytes, iso_utc
from vertex_patterns.storage import Storage
from vertex_patterns.storage.uri import parse_uri

log = logging.getLogger("vertex_patterns.checkpoint")

def checkpoint_dir(store: Storage, uri: str, what: str) -> str:
    """The normalised URI of a directory that must exist (bucket, or local directory)."""
    location = parse_uri(uri)
    if location.is_gcs:
        require_bucket(store, uri, what)
    elif not os.path.isdir(location.path):
        state = "is not a directory" if os.path.exists(location.path) else "does not exist"
        raise ConfigError(f"{what} {location} {state}: give a checkpoint directory")
    return str(location).rstrip("/")


def require_bucket(store: Storage, uri: str, what: str) -> str:
    """The normalised URI; for gs:// its bucket must exist (local paths may be created)."""
    location = parse_uri(uri)
    if location.is_gcs and not store.bucket_exists(uri):
        raise ConfigError(f"{what} bucket gs://{location.bucket} does not exist: fix the URI "
                          "or create the bucket")
    return str(location).rstrip("/")


def replica_dirs(store: Storage, primary: str, replicas: Sequence[str]) -> list[str]:
    out = [require_bucket(store, r, "replica") for r in replicas]
    for r in out:
        if parse_uri(r).contains(parse_uri(primary)) or parse_uri(primary).contains(parse_uri(r)):
            raise ConfigError(f"replica {r} overlaps the checkpoint directory {primary}: give a "
                              "separate location")
    if len(set(out)) != len(out):
        raise ConfigError("a replica is given twice")
    return out


# -- list ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointRow:
    """One committed checkpoint.

    Attributes:
        step: The training step.
        size_bytes: Bytes of its data files.
        committed_at: Commit time, ISO 8601 UTC (`2025-01-31T12:00:00Z`).
        files: Number of data files (the manifest not counted).
        metrics: The metrics saved with it.
        on_replicas: Replica URI -> whether the replica holds the same committed checkpoint.
    """

    step: int
    size_bytes: int
    committed_at: str
    files: int
    metrics: dict[str, float]
    on_replicas: dict[str, bool]


@dataclass(frozen=True)
class CheckpointListing:
    """What `list_checkpoints` found.

    Attributes:
        directory: The primary checkpoint directory.
        checkpoints: Committed checkpoints, oldest first.
        lag: Per replica, in the order given: its newest step and how far it trails.
    """

    directory: str
    checkpoints: list[CheckpointRow]
    lag: list[ReplicaLag]

    def to_dict(self) -> dict[str, Any]:
        """`{"directory", "checkpoints": [...], "replicas": [...]}`."""
        return {
            "directory": self.directory,
            "checkpoints": [asdict(row) for row in self.checkpoints],
            "replicas": [{"uri": lag.replica, "latest_step": lag.latest_step,
                          "steps_behind": lag.steps_behind,
                          "seconds_behind": round(lag.seconds_behind, 3)} for lag in self.lag],
        }

    def to_json(self) -> str:
        """The listing as indented JSON."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_table(self) -> str:
        """A fixed-width table; replica columns are `r0`, `r1`, ... as named below it."""
        lines = [f"{self.directory}: {len(self.checkpoints)} committed checkpoint(s)"]
        if self.checkpoints:
            headers = ["step", "size", "committed (UTC)", "files"]
            headers += [f"r{i}" for i in range(len(self.lag))] + ["metrics"]
            rows = []
            for c in self.checkpoints:
                rows.append([str(c.step), human_bytes(c.size_bytes), c.committed_at,
                             str(c.files), *("yes" if c.on_replicas[lag.replica] else "no"
                                             for lag in self.lag),
                             " ".join(f"{k}={v:g}" for k, v in sorted(c.metrics.items()))])
            lines += format_table(headers, rows, left={len(headers) - 1})
        for i, lag in enumerate(self.lag):
            latest = "-" if lag.latest_step is None else str(lag.latest_step)
            lines.append(f"r{i} {lag.replica}: latest step {latest}, {lag.steps_behind} "
                         f"step(s) and {lag.seconds_behind:.1f} s behind")
        return "\n".join(lines) + "\n"


def list_checkpoints(
    directory: str, replicas: Sequence[str] = (), *, storage: Storage | None = None
) -> CheckpointListing:
    """Lists the committed checkpoints of a directory and how far each replica trails it.

    Args:
        directory: The checkpoint directory (`gs://bucket/prefix` or a local directory).
        replicas: Backup directories to compare with (a local one may not exist yet).
        storage: Storage facade (defaults follow `STORAGE_EMULATOR_HOST`).

    Returns:
        One row per committed checkpoint, oldest first, and the lag of each replica.

    Raises:
        ConfigError: A malformed URI, a missing bucket or directory, or a replica that
            overlaps the directory.
    """
    store = storage or Storage()
    root = checkpoint_dir(store, directory, "checkpoint directory")
    replica_uris = replica_dirs(store, root, replicas)
    primary = list_committed(store, root)
    at_replica = {r: list_committed(store, r) for r in replica_uris}
    rows = [
        CheckpointRow(
            step=step,
            size_bytes=m.total_bytes,
            committed_at=iso_utc(m.wall_time),
            files=len(m.files),
            metrics=dict(m.metrics),
            on_replicas={r: step in have and have[step].files == m.files
                         for r, have in at_replica.items()},
        )
        for step, m in sorted(primary.items())
    ]
    lag = [replica_lag(primary, r, at_replica[r]) for r in replica_uris]
    return CheckpointListing(directory=root, checkpoints=rows, lag=lag)


# -- verify -------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepCheck:
    """The verification of one checkpoint.

    Attributes:
        step: The step.
        uri: Its step directory.
        damaged_files: Names (relative to `uri`) of missing, truncated or damaged files;
            `manifest.json` when the manifest itself cannot be trusted.
        problems: One line per damaged file saying what is wrong.
    """

    step: int
    uri: str
    damaged_files: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every file matches the manifest."""
        return not self.damaged_files


@dataclass(frozen=True)
class VerifyReport:
    """What `verify_checkpoints` found.

    Attributes:
        directory: The checkpoint directory.
        steps: One check per checkpoint, oldest first.
    """

    directory: str
    steps: list[StepCheck]

    @property
    def ok(self) -> bool:
        """True when every checked checkpoint verified."""
        return all(s.ok for s in self.steps)

    @property
    def damaged(self) -> list[StepCheck]:
        """The checks that failed."""
        return [s for s in self.steps if not s.ok]

    def metrics(self) -> dict[str, float]:
        """`checked` and `damaged` counts, for `dsl.Metrics`."""
        return {"checked": float(len(self.steps)), "damaged": float(len(self.damaged))}

    def to_table(self) -> str:
        """One line per checkpoint, then one line per damaged file (its full URI)."""
        lines = [f"step {s.step}: {'ok' if s.ok else 'DAMAGED'}" for s in self.steps]
        for s in self.damaged:
            lines += [f"damaged: {join(s.uri, p)}" for p in s.problems]
        lines.append(f"{self.directory}: {len(self.steps)} checkpoint(s) checked, "
                     f"{len(self.damaged)} damaged")
        return "\n".join(lines) + "\n"

    def to_markdown(self) -> str:
        """The report as Markdown (for `dsl.Markdown` outputs)."""
        verdict = "OK" if self.ok else "DAMAGED"
        lines = [f"### Checkpoints in `{self.directory}`: {verdict}", "",
                 f"{len(self.steps)} checked, {len(self.damaged)} damaged.", "",
                 "| step | result | damaged files |", "|---:|---|---|"]
        for s in self.steps:
            files = ", ".join(f"`{f}`" for f in s.damaged_files)
            lines.append(f"| {s.step} | {'ok' if s.ok else 'DAMAGED'} | {files} |")
        problems = [f"- `{join(s.uri, p)}`" for s in self.damaged for p in s.problems]
        if problems:
            lines += ["", "Problems:", "", *problems]
        return "\n".join(lines) + "\n"


def verify_checkpoints(
    directory: str, step: int | None = None, *, storage: Storage | None = None
) -> VerifyReport:
    """Reads every file of every committed checkpoint and checks it against its manifest.

    Read-only: damaged checkpoints are reported, not moved aside. A step directory whose
    manifest is malformed or unsafe counts as damaged; one without a manifest is an
    uncommitted save (in progress or crashed) and is not checked.

    Args:
        directory: The checkpoint directory (`gs://bucket/prefix` or a local directory).
        step: Only this step (it must be committed); None checks all.
        storage: Storage facade (defaults follow `STORAGE_EMULATOR_HOST`).

    Returns:
        One check per checkpoint, oldest first.

    Raises:
        ConfigError: A malformed URI, a missing bucket or directory, or `step` not committed.
        StorageError: A file could not be read (other than missing).
    """
    if step is not None and step < 0:
        raise ConfigError(f"--step must be >= 0, got {step}")
    store = storage or Storage()
    root = checkpoint_dir(store, directory, "checkpoint directory")
    dirs = step_dirs(store, root)
    if step is not None:
        if step not in dirs:
            raise ConfigError(f"step {step} is not committed in {root}")
        dirs = {step: dirs[step]}
    checks = []
    for s, uri in sorted(dirs.items()):
        try:
            manifest = read_manifest(store, uri)
        except NotFoundError as exc:
            if step is not None:
                raise ConfigError(f"step {step} is not committed in {root}") from exc
            continue
        except ManifestError as exc:
            checks.append(StepCheck(s, uri, (MANIFEST,), (f"{MANIFEST}: {exc}",)))
            continue
        checks.append(_check_step(store, s, uri, manifest))
    return VerifyReport(directory=root, steps=checks)


def _check_step(store: Storage, step: int, uri: str, manifest: Manifest) -> StepCheck:
    if manifest.step != step:
        return StepCheck(step, uri, (MANIFEST,),
                         (f"{MANIFEST}: records step {manifest.step}, not {step}",))
    damaged: list[str] = []
    problems: list[str] = []
    # One file at a time: verify_step returns the bytes it read, and a whole step of
    # 512 MiB shards would otherwise sit in memory at once.
    for entry in manifest.files:
        try:
            verify_step(store, uri, replace(manifest, files=(entry,)))
        except CorruptCheckpointError as exc:
            damaged.append(entry.name)
            problems.extend(exc.problems)
    return StepCheck(step, uri, tuple(damaged), tuple(problems))
