"""Fan-out from outside the training job: copy committed checkpoints to backup regions, once
or following a running job until a marker object appears.

Backs `vertex-patterns checkpoints fan-out` and the `fan_out_checkpoints` component.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from vertex_patterns.checkpoint.fanout import FanOutResult, ReplicaLag, fan_out, replica_lag
from vertex_patterns.checkpoint.inspect import checkpoint_dir, replica_dirs, require_bucket
from vertex_patterns.checkpoint.io import list_committed
from vertex_patterns.errors import ConfigError, StorageError
from vertex_patterns.formatting import format_table, human_bytes
from vertex_patterns.storage import Storage

log = logging.getLogger("vertex_patterns.checkpoint")

# What one fan-out pass may raise and a later pass may get past (as in the manager).
_PASS_ERRORS = (StorageError, OSError, ValueError)


@dataclass
class FanOutSummary:
    """What `follow_fan_out` did, summed over its passes.

    Attributes:
        source: The primary checkpoint directory.
        replicas: Per replica, in the order given: steps, files and bytes copied.
        lag: Per replica, after the last pass: its newest step and how far it trails.
        errors: Replica -> what failed in the last pass (earlier failures were retried).
        passes: Fan-out passes made.
        timed_out: Follow mode gave up at `timeout_seconds` before the marker appeared.
    """

    source: str
    replicas: list[FanOutResult]
    lag: list[ReplicaLag] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    passes: int = 0
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """True when the last pass reached every replica and follow mode did not time out."""
        return not self.errors and not self.timed_out

    @property
    def checkpoints_copied(self) -> int:
        """Checkpoints copied, over all replicas."""
        return sum(len(r.steps_copied) for r in self.replicas)

    @property
    def files_copied(self) -> int:
        """Files copied, over all replicas."""
        return sum(r.files_copied for r in self.replicas)

    @property
    def bytes_copied(self) -> int:
        """Bytes copied, over all replicas."""
        return sum(r.bytes_copied for r in self.replicas)

    @property
    def bytes_through_client(self) -> int:
        """Bytes that passed through this process (0 when every copy was gs→gs)."""
        return sum(r.bytes_through_client for r in self.replicas)

    def metrics(self) -> dict[str, float]:
        """Totals and `lag_steps_<i>` / `lag_seconds_<i>` per replica, for `dsl.Metrics`."""
        out = {"checkpoints_copied": float(self.checkpoints_copied),
               "files_copied": float(self.files_copied),
               "bytes_copied": float(self.bytes_copied),
               "bytes_through_client": float(self.bytes_through_client)}
        for i, lag in enumerate(self.lag):
            out[f"lag_steps_{i}"] = float(lag.steps_behind)
            out[f"lag_seconds_{i}"] = round(lag.seconds_behind, 3)
        return out

    def to_table(self) -> str:
        """A fixed-width table per replica, the totals, then any error."""
        lags = {lag.replica: lag for lag in self.lag}
        rows = []
        for r in self.replicas:
            lag = lags.get(r.replica)
            rows.append([r.replica, str(len(r.steps_copied)), str(r.files_copied),
                         human_bytes(r.bytes_copied), human_bytes(r.bytes_through_client),
                         "?" if lag is None else str(lag.steps_behind),
                         "?" if lag is None else f"{lag.seconds_behind:.1f}"])
        lines = [f"source: {self.source} ({self.passes} pass(es))"]
        lines += format_table(["replica", "checkpoints", "files", "bytes", "via client",
                                "lag steps", "lag s"], rows, left={0})
        lines.append(f"copied {self.checkpoints_copied} checkpoint(s), {self.files_copied} "
                     f"file(s), {human_bytes(self.bytes_copied)} "
                     f"({human_bytes(self.bytes_through_client)} through this machine)")
        if self.timed_out:
            lines.append("timed out before the marker appeared")
        lines += [f"error: {replica}: {error}" for replica, error in self.errors.items()]
        lines.append("result: " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines) + "\n"


def follow_fan_out(
    source: str,
    replicas: Sequence[str],
    *,
    until_marker: str | None = None,
    poll_seconds: float = 30,
    timeout_seconds: float | None = None,
    storage: Storage | None = None,
) -> FanOutSummary:
    """Copies committed checkpoints to each replica, once or until training ends.

    Without `until_marker`, one pass. With it (follow mode), a pass every `poll_seconds`
    until the marker object exists, then one final pass, so every checkpoint committed
    before the marker was written is copied. A failing pass is logged and retried at the
    next one; only the final pass's failures are reported in `errors`.

    Args:
        source: The primary checkpoint directory.
        replicas: Backup directories (other regions' buckets).
        until_marker: URI of an object whose existence ends follow mode (for example
            written by the training job when it finishes).
        poll_seconds: Seconds between passes in follow mode.
        timeout_seconds: Give up following after this long (after one last pass); None
            waits for the marker indefinitely.
        storage: Storage facade (defaults follow `STORAGE_EMULATOR_HOST`).

    Returns:
        Totals over all passes and the final lag per replica.

    Raises:
        ConfigError: A malformed URI, a missing bucket or source directory, an overlapping
            or repeated replica, or a non-positive interval.
    """
    if not replicas:
        raise ConfigError("no replica given: name at least one DST")
    if poll_seconds <= 0:
        raise ConfigError(f"--poll-seconds must be > 0, got {poll_seconds}")
    if timeout_seconds is not None and timeout_seconds <= 0:
        raise ConfigError(f"--timeout-seconds must be > 0, got {timeout_seconds}")
    store = storage or Storage()
    root = checkpoint_dir(store, source, "source")
    targets = replica_dirs(store, root, replicas)
    marker = None if until_marker is None else require_bucket(store, until_marker, "marker")
    summary = FanOutSummary(source=root,
                            replicas=[FanOutResult(replica=r, steps_copied=[]) for r in targets])
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    while True:
        # Look for the marker before the pass, so the pass that follows it sees every
        # checkpoint committed before the marker was written.
        last = marker is None or _exists(store, marker)
        summary.errors = _fan_out_pass(store, root, summary.replicas)
        summary.passes += 1
        if last:
            break
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            summary.timed_out = True
            log.warning("fan-out: %s did not appear within %ss; stopping", marker,
                        timeout_seconds)
            break
        wait = poll_seconds if deadline is None else min(poll_seconds, deadline - now)
        log.info("fan-out: waiting for %s; next pass in %.0fs", marker, wait)
        time.sleep(wait)
    summary.lag = _final_lag(store, root, targets, summary.errors)
    return summary


def _exists(store: Storage, uri: str) -> bool:
    try:
        return store.exists(uri)
    except StorageError as exc:  # looked for again before the next pass
        log.warning("fan-out: cannot check for %s: %s", uri, exc)
        return False


def _fan_out_pass(store: Storage, source: str, totals: list[FanOutResult]) -> dict[str, str]:
    """`fanout.fan_out` to each replica into its running total, so what a pass copied
    before failing is still counted. A damaged source step counts as an error of the pass."""
    errors: dict[str, str] = {}
    for total in totals:
        try:
            fan_out(store, source, total.replica, result=total)
        except _PASS_ERRORS as exc:
            log.warning("fan-out to %s failed (retried at the next pass): %s", total.replica,
                        exc)
            errors[total.replica] = str(exc)
            continue
        if total.damaged:
            errors[total.replica] = "; ".join(
                f"step {step} not copied: {why}" for step, why in sorted(total.damaged.items()))
            log.warning("fan-out to %s left damaged source steps %s (retried at the next "
                        "pass)", total.replica, sorted(total.damaged))
    return errors


def _final_lag(
    store: Storage, source: str, replicas: list[str], errors: dict[str, str]
) -> list[ReplicaLag]:
    try:
        primary = list_committed(store, source)
    except _PASS_ERRORS as exc:
        log.warning("cannot list %s for the lag: %s", source, exc)
        primary = {}
    out = []
    for r in replicas:
        try:
            have = list_committed(store, r)
        except _PASS_ERRORS as exc:  # counted as holding nothing: the largest lag
            errors.setdefault(r, f"cannot list: {exc}")
            have = {}
        out.append(replica_lag(primary, r, have))
    return out
