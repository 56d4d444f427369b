"""Progress output: a tqdm bar on a terminal, periodic log lines elsewhere."""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import TracebackType

from tqdm import tqdm

from vertex_patterns.formatting import human_bytes

log = logging.getLogger("vertex_patterns.replication")


class Progress:
    """Counts objects and bytes done out of a known total.

    Args:
        total_objects: Objects to process (copies, skips and deletes).
        total_bytes: Bytes to copy.
        enabled: Draw a bar (True), log lines (False), or pick by whether stderr is a TTY.
        log_every_s: Interval of the log lines when no bar is drawn.
    """

    def __init__(
        self,
        total_objects: int,
        total_bytes: int,
        *,
        enabled: bool | None = None,
        log_every_s: float = 10.0,
    ) -> None:
        self.total_objects = total_objects
        self.total_bytes = total_bytes
        self.objects = 0
        self.bytes = 0
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last_log = self._start
        self._log_every = log_every_s
        use_bar = sys.stderr.isatty() if enabled is None else enabled
        self._bar: tqdm | None = None
        if use_bar:
            self._bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                             desc="replicate", file=sys.stderr, dynamic_ncols=True)
            self._bar.set_postfix_str(f"0/{total_objects} objects")

    def advance(self, objects: int, nbytes: int) -> None:
        """Records `objects` finished objects and `nbytes` bytes copied."""
        with self._lock:
            self.objects += objects
            self.bytes += nbytes
            if self._bar is not None:
                self._bar.update(nbytes)
                self._bar.set_postfix_str(f"{self.objects}/{self.total_objects} objects",
                                          refresh=False)
                return
            now = time.monotonic()
            if now - self._last_log >= self._log_every:
                self._last_log = now
                log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """`replicate: 120/500 objects, 12.0 MiB/50.0 MiB, 3.4 MiB/s, ETA 11s`."""
        elapsed = max((now or time.monotonic()) - self._start, 1e-9)
        rate = self.bytes / elapsed
        remaining = self.total_bytes - self.bytes
        eta = f"{remaining / rate:.0f}s" if rate > 0 else "?"
        return (f"replicate: {self.objects}/{self.total_objects} objects, "
                f"{human_bytes(self.bytes)}/{human_bytes(self.total_bytes)}, "
                f"{human_bytes(rate)}/s, ETA {eta}")

    def close(self) -> None:
        """Closes the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
