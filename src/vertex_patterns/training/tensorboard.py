"""TensorBoard scalars for the metrics the trainer streams, on local disk or GCS.

`torch.utils.tensorboard.SummaryWriter` writes event files to a local directory. For a
`gs://` log dir (Vertex AI's `AIP_TENSORBOARD_LOG_DIR`) it writes to a local temporary
directory, and `flush()` / `close()` upload each event file that changed since the last
upload: event files are append-only and small for scalars, so a whole-file re-upload is cheap
and a reader always sees a complete prefix of the events.

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

    Raises:
        ImportError: The `tensorboard` package is not installed.
    """

    def __init__(
        self, log_dir_uri: str, *, storage: Storage | None = None, prefix: str = ""
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

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
        self._writer = SummaryWriter(log_dir=self._local_dir)
        self._uploaded: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns)
        self._lock = threading.Lock()
        self._closed = False

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
        with self._lock:
            self._flush_locked()

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
            try:
                self._flush_locked()
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

    def _flush_locked(self) -> None:
        if not self._closed:
            self._writer.flush()
        if not self._remote:
            return
        assert self._storage is not None
        for dirpath, _, files in os.walk(self._local_dir):
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, self._local_dir).replace(os.sep, "/")
                st = os.stat(path)
                signature = (st.st_size, st.st_mtime_ns)
                if self._uploaded.get(rel) == signature:
                    continue
                # Read once, then write: the writer is idle while we hold the lock, so the
                # bytes are a complete prefix of the event stream.
                with open(path, "rb") as f:
                    data = f.read()
                self._storage.write_bytes(f"{self.uri}/{rel}", data)
                self._uploaded[rel] = signature
