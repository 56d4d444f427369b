"""The metrics stream: one JSON object per step, appended in chunks under `<run-dir>/metrics/`.

GCS objects cannot be appended to, so each flush writes a new object
`<uri>/<attempt>-<seq>.jsonl` (seq zero-padded to 6 digits) through `Storage.write_bytes`:
atomic on local disk, all-or-nothing on GCS. A reader lists the chunks and concatenates them
in (attempt, seq) order; a process killed between flushes loses only its unflushed records.

    with MetricsStream("gs://bucket/run/metrics", attempt=attempt_id) as metrics:
        metrics.write({"step": 1, "loss": 2.3, "lr": 1e-3, **accelerator_stats()})
    records = read_metrics("gs://bucket/run/metrics")

Writes happen on one background thread, so `write` only appends to a list; `flush()` and
`close()` wait for everything handed over so far.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

from vertex_patterns.errors import StorageError
from vertex_patterns.storage import Storage
from vertex_patterns.training.logs import to_json_line

log = logging.getLogger("vertex_patterns.training")

_CHUNK = re.compile(r"^(?P<attempt>[A-Za-z0-9._-]+)-(?P<seq>\d{6,})\.jsonl$")
_ATTEMPT = re.compile(r"^[A-Za-z0-9._-]+$")


def chunk_name(attempt: str, seq: int) -> str:
    """`attempt-000042.jsonl`."""
    return f"{attempt}-{seq:06d}.jsonl"


def new_attempt_id(now: float | None = None) -> str:
    """A fresh attempt id that sorts in start order: `20261128T101500Z-3fa2`."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(2)}"


def validate_attempt(attempt: str) -> str:
    """Returns `attempt`, or raises ValueError when it is not a safe object-name part."""
    if not _ATTEMPT.match(attempt) or attempt in {".", ".."}:
        raise ValueError(f"attempt id {attempt!r} must be letters, digits, '.', '_' or '-'")
    return attempt


class MetricsStream:
    """Buffers metric records and writes them as numbered chunk objects.

    Args:
        uri: The metrics directory (`gs://bucket/run/metrics` or a local path).
        attempt: This attempt's id; chunks of different attempts never collide.
        storage: The storage facade (a default one when None).
        flush_every_s: Hand the buffer to the writer thread when the oldest unflushed record
            is this old (checked on `write`).
        flush_every_records: ... or when this many records are buffered.

    Raises:
        ValueError: A bad attempt id or a non-positive interval.
    """

    def __init__(
        self,
        uri: str,
        *,
        attempt: str,
        storage: Storage | None = None,
        flush_every_s: float = 10.0,
        flush_every_records: int = 100,
    ) -> None:
        if flush_every_s <= 0 or flush_every_records <= 0:
            raise ValueError("flush_every_s and flush_every_records must be positive")
        self.uri = uri.rstrip("/")
        self.attempt = validate_attempt(attempt)
        self.storage = storage or Storage()
        self.flush_every_s = flush_every_s
        self.flush_every_records = flush_every_records
        self._lock = threading.Lock()
        self._buffer: list[str] = []
        self._oldest: float | None = None
        # Lines whose chunk failed to write; they lead the next chunk, keeping the order.
        self._unwritten: list[str] = []
        self._next_seq: int | None = None  # found on the writer thread, by listing once
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics")
        self._pending: Future[None] | None = None
        self._closed = False

    def write(self, record: Mapping[str, Any]) -> None:
        """Buffers one record, adding `time` (unix seconds) unless it has one.

        Raises:
            ValueError: The stream is closed.
        """
        line = to_json_line({**record, "time": record.get("time", time.time())})
        with self._lock:
            if self._closed:
                raise ValueError("metrics stream is closed")
            self._buffer.append(line)
            if self._oldest is None:
                self._oldest = time.monotonic()
            due = (len(self._buffer) >= self.flush_every_records
                   or time.monotonic() - self._oldest >= self.flush_every_s)
            if due:
                self._hand_off()

    def flush(self) -> None:
        """Writes everything buffered so far and waits for it.

        Raises:
            StorageError: A chunk could not be written (after the storage layer's retries);
                its records stay buffered and are tried again by the next flush.
        """
        with self._lock:
            future = self._hand_off()
        if future is not None:
            future.result()
        with self._lock:
            failed = bool(self._unwritten)
        if failed:
            raise StorageError(f"{self.uri}: metrics chunk not written; records kept for retry",
                               uri=self.uri)

    def close(self) -> None:
        """Flushes and stops the writer thread; later `write` calls raise ValueError.

        Raises:
            StorageError: The final chunk could not be written.
        """
        if self._closed:
            return
        try:
            self.flush()
        finally:
            with self._lock:
                self._closed = True
            self._executor.shutdown(wait=True)

    def __enter__(self) -> MetricsStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _hand_off(self) -> Future[None] | None:
        """Queues the buffer (or, with nothing new, a retry of failed lines); lock held."""
        if not self._buffer and not self._unwritten:
            return self._pending
        lines, self._buffer, self._oldest = self._buffer, [], None
        self._pending = self._executor.submit(self._write_chunk, lines)
        return self._pending

    def _write_chunk(self, lines: list[str]) -> None:
        with self._lock:
            lines, self._unwritten = self._unwritten + lines, []
        if not lines:
            return
        try:
            if self._next_seq is None:
                self._next_seq = _next_seq(self.storage, self.uri, self.attempt)
            name = chunk_name(self.attempt, self._next_seq)
            self.storage.write_bytes(f"{self.uri}/{name}", ("\n".join(lines) + "\n").encode())
            self._next_seq += 1
        except (StorageError, OSError) as exc:
            # Telemetry must not stop training: keep the lines for the next flush.
            log.warning("metrics chunk for %s not written (%s); will retry", self.uri, exc)
            with self._lock:
                self._unwritten = lines + self._unwritten


def _next_seq(storage: Storage, uri: str, attempt: str) -> int:
    """One past the highest chunk this attempt id already has (0 for a new attempt)."""
    highest = -1
    for info in storage.list(uri):
        match = _CHUNK.match(info.key)
        if match and match["attempt"] == attempt:
            highest = max(highest, int(match["seq"]))
    return highest + 1


def list_chunks(uri: str, storage: Storage | None = None) -> list[tuple[str, int, str]]:
    """(attempt, seq, uri) of every chunk directly under `uri`, in (attempt, seq) order."""
    storage = storage or Storage()
    chunks = []
    for info in storage.list(uri):
        match = _CHUNK.match(info.key)
        if match:
            chunks.append((match["attempt"], int(match["seq"]), info.uri))
    return sorted(chunks)


def read_metrics(uri: str, storage: Storage | None = None) -> list[dict[str, Any]]:
    """Every record under `uri`, chunk by chunk in (attempt, seq) order.

    Attempt ids from `new_attempt_id` sort in start order. A line that is not a JSON object
    (a foreign file's) is skipped with a warning. A missing directory reads as no records.

    Args:
        uri: The metrics directory.
        storage: The storage facade (a default one when None).

    Returns:
        The records, oldest first.
    """
    storage = storage or Storage()
    records: list[dict[str, Any]] = []
    for _, _, chunk_uri in list_chunks(uri, storage):
        for number, line in enumerate(storage.read_bytes(chunk_uri).decode().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict):
                log.warning("%s line %d is not a JSON object; skipped", chunk_uri, number)
                continue
            records.append(record)
    return records


def accelerator_stats() -> dict[str, float]:
    """GPU memory and utilisation for the metrics stream; {} without a GPU. Never raises.

    Keys: `accelerator_memory_allocated_bytes`, `accelerator_memory_max_allocated_bytes`,
    `accelerator_memory_reserved_bytes`, `accelerator_memory_total_bytes`, and
    `accelerator_utilization_pct` when NVML answers (`torch.cuda.utilization`, which needs
    the `nvidia-ml-py` package).
    """
    stats: dict[str, float] = {}
    try:
        import torch

        if not torch.cuda.is_available():
            return stats
        device = torch.cuda.current_device()
        stats["accelerator_memory_allocated_bytes"] = float(torch.cuda.memory_allocated(device))
        stats["accelerator_memory_max_allocated_bytes"] = float(
            torch.cuda.max_memory_allocated(device))
        stats["accelerator_memory_reserved_bytes"] = float(torch.cuda.memory_reserved(device))
        stats["accelerator_memory_total_bytes"] = float(
            torch.cuda.get_device_properties(device).total_memory)
    except Exception as exc:  # a broken driver must not stop training
        log.debug("accelerator memory stats unavailable: %s", exc)
        return stats
    try:
        stats["accelerator_utilization_pct"] = float(torch.cuda.utilization(device))
    except Exception as exc:  # NVML missing (no nvidia-ml-py) or not answering
        log.debug("accelerator utilisation unavailable: %s", exc)
    return stats
