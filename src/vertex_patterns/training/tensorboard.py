"""TensorBoard scalars for the metrics the trainer streams, on local disk or GCS.

`torch.utils.tensorboard.SummaryWriter` writes event files to a local directory. For a
`gs://` log dir (Vertex AI's `AIP_TENSORBOARD_LOG_DIR`) it writes to a local temporary
directory, and `flush()` / `close()` upload each event file that changed since the last
upload: event files are append-only and small for scalars, so a whole-file re-upload is cheap
and a reader always sees a complete prefix of the events.

With `flush_every_s`, a daemon thread flushes (and uploads) on that interval, so a `gs://` log
dir shows progress during the run and a hard kill loses at most one interval. Its failures
are logged and retried at the next interval; uploads run outside the lock that `scalars()`
takes, so a slow upload never stalls the training loop.

    with TensorBoardWriter(run_dir + "/logs") as tb:
        tb.scalars(step, {"loss": 2.3, "lr": 1e-3})
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from vertex_patterns.errors import StorageError
from vertex_patterns.storage import Storage
from vertex_patterns.storage.uri import parse_uri

log = logging.getLogger("vertex_patterns.training")


class TensorBoardWriter:
    """Scalar summaries into `log_dir_uri`.

    Args:
        log_dir_uri: The TensorBoard log directory (`gs://...` or a local path).
        storage: The storage facade for `gs://` log dirs (a default one when None).
        prefix: Prepended to every tag (e.g. `"train/"`).
        flush_every_s: Flush and upload in the background this often (None: only on
            `flush()` and `close()`).

    Raises:
        ImportError: The `tensorboard` package is not installed.
        OSError: A local log directory cannot be created.
    """

    def __init__(
        self, log_dir_uri: str, *, storage: Storage | None = None, prefix: str = "",
        flush_every_s: float | None = None,
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if flush_every_s is not None and flush_every_s <= 0:
            raise ValueError("flush_every_s must be positive")

        self.uri = log_dir_uri.rstrip("/")
        self.prefix = prefix
        location = parse_uri(self.uri)
        self._remote = location.is_gcs
        self._storage = storage or (Storage() if self._remote else None)
        if self._remote:
            self._local_dir = tempfile.mkdtemp(prefix="tensorboard-")
        else:
            self._local_dir = location.path
            os.makedirs(self._local_dir, exist_ok=True)
        self._writer = SummaryWriter(log_dir=self._local_dir,
                                     flush_secs=max(1, round(flush_every_s or 120)))
        self._uploaded: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns)
        self._lock = threading.Lock()  # the SummaryWriter
        self._upload_lock = threading.Lock()  # one upload pass at a time, in order
        self._closed = False
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if flush_every_s is not None:
            self._flusher = threading.Thread(target=self._flush_periodically,
                                             args=(flush_every_s,), name="tensorboard-flush",
                                             daemon=True)
            self._flusher.start()

    @property
    def local_dir(self) -> str:
        """Where the event files are written before any upload."""
        return self._local_dir

    def scalars(self, step: int, values: Mapping[str, Any]) -> None:
        """Adds one scalar per numeric entry of `values` at `step`; other entries are skipped.

        Raises:
            ValueError: The writer is closed.
        """
        with self._lock:
            if self._closed:
                raise ValueError("TensorBoard writer is closed")
            for tag, value in values.items():
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    continue
                number = float(value)
                if math.isnan(number):
                    continue
                self._writer.add_scalar(f"{self.prefix}{tag}", number, global_step=step)

    def flush(self) -> None:
        """Writes pending events to disk and, for `gs://`, uploads changed event files.

        Raises:
            StorageError: An upload failed (after the storage layer's retries).
        """
        with self._upload_lock:
            with self._lock:
                if not self._closed:
                    self._writer.flush()
            self._upload_changed()

    def close(self) -> None:
        """Flushes, closes the event file and removes the temporary directory (gs:// only).

        Raises:
            StorageError: The final upload failed; the local copy is kept and its path logged.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._writer.close()
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        with self._upload_lock:
            try:
                self._upload_changed()
            except StorageError:
                log.warning("TensorBoard upload to %s failed; event files kept in %s",
                            self.uri, self._local_dir)
                raise
        if self._remote:
            shutil.rmtree(self._local_dir, ignore_errors=True)

    def __enter__(self) -> TensorBoardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _flush_periodically(self, every_s: float) -> None:
        failing = False
        while not self._stop.wait(every_s):
            try:
                self.flush()
            except (StorageError, OSError) as exc:
                # Telemetry is never fatal: the next interval uploads what this one missed.
                if not failing:
                    log.warning("TensorBoard flush to %s failed (retrying every %.0fs): %s",
                                self.uri, every_s, exc)
                failing = True
            else:
                failing = False

    def _upload_changed(self) -> None:
        """Uploads every event file that changed since its last upload (upload lock held)."""
        if not self._remote:
            return
        assert self._storage is not None
        for dirpath, _, files in os.walk(self._local_dir):
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, self._local_dir).replace(os.sep, "/")
                # Read under the writer's lock: the writer is idle while we hold it, so the
                # bytes are a complete prefix of the event stream. Sent outside it.
                with self._lock:
                    st = os.stat(path)
                    signature = (st.st_size, st.st_mtime_ns)
                    if self._uploaded.get(rel) == signature:
                        continue
                    with open(path, "rb") as f:
                        data = f.read()
                self._storage.write_bytes(f"{self.uri}/{rel}", data)
                self._uploaded[rel] = signature
