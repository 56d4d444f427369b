"""Preemption notices: SIGTERM/SIGINT and the GCE metadata server's `instance/preempted`.

A Spot VM gets SIGTERM (through the container runtime) about 30 s before SIGKILL. The handler
only records the notice; the training loop sees it after the current step and saves from its
own thread. Nothing is saved from inside a signal handler: a handler runs between two bytecodes
of whatever the main thread was doing, possibly inside the checkpoint code itself.

A second signal means "now": the handler exits at once with `EXIT_PREEMPTED_UNSAVED`. Saves are
atomic (temporary directory + rename, or manifest last), so whatever was committed before stays
intact and restorable.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from types import FrameType

from vertex_patterns.training.config import EXIT_PREEMPTED_UNSAVED

log = logging.getLogger("vertex_patterns.training")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionNotice:
    """A thread-safe flag raised by a signal or the metadata watcher, with when and why.

    Args:
        exit_on_second: Exit the process at once (`os._exit`) on a second signal.
    """

    def __init__(self, *, exit_on_second: bool = True) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.reason: str | None = None
        self.noticed_at: float | None = None
        """time.monotonic() of the first notice."""
        self.signals = 0
        self.exit_on_second = exit_on_second
        self._previous: dict[int, object] = {}

    def __bool__(self) -> bool:
        return self._event.is_set()

    def raise_notice(self, reason: str) -> None:
        """Records the first notice; later ones keep the first's time and reason."""
        with self._lock:
            if not self._event.is_set():
                self.reason = reason
                self.noticed_at = time.monotonic()
                self._event.set()

    def seconds_since(self) -> float:
        """Seconds since the first notice (0 when there was none)."""
        return 0.0 if self.noticed_at is None else time.monotonic() - self.noticed_at

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals > 1 and self.exit_on_second:
            # Async-signal-safe enough: write(2) and _exit(2), no locks, no Python logging.
            os.write(2, f"second signal {signal.Signals(signum).name}: exiting now; the last "
                        "committed checkpoint is intact\n".encode())
            os._exit(EXIT_PREEMPTED_UNSAVED)
        self.raise_notice(signal.Signals(signum).name)

    def install(self) -> PreemptionNotice:
        """Handles SIGTERM and SIGINT in this process (main thread only)."""
        for sig in HANDLED_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def uninstall(self) -> None:
        """Puts the previous handlers back."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._previous.clear()


class MetadataWatcher:
    """Polls `<base>/computeMetadata/v1/instance/preempted` and raises the notice on TRUE.

    The real server is http://metadata.google.internal (header `Metadata-Flavor: Google`);
    tests point `base_url` at a local HTTP server. Poll errors are logged once and retried.
    Uses `?wait_for_change=false` polling rather than hanging GETs so stopping is prompt.

    Args:
        base_url: Metadata server base URL.
        notice: The flag to raise.
        poll_seconds: Seconds between polls.
    """

    PATH = "/computeMetadata/v1/instance/preempted"

    def __init__(self, base_url: str, notice: PreemptionNotice, *, poll_seconds: float = 1.0
                 ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"metadata URL must start with http:// or https://: {base_url}")
        self.url = base_url.rstrip("/") + self.PATH
        self.notice = notice
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="preempt-watch", daemon=True)
        self._warned = False

    def start(self) -> MetadataWatcher:
        """Starts polling in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops polling and waits for the thread."""
        self._stop.set()
        self._thread.join(timeout=5)

    def poll_once(self) -> bool:
        """One poll; True when the VM is being preempted."""
        # The URL's scheme was checked in __init__ (http or https only).
        request = urllib.request.Request(  # noqa: S310
            self.url, headers={"Metadata-Flavor": "Google"})
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return bool(response.read().decode().strip().upper() == "TRUE")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.poll_once():
                    log.warning("metadata server reports this VM is being preempted")
                    self.notice.raise_notice("metadata:instance/preempted")
                    return
            except (OSError, urllib.error.URLError, ValueError) as exc:
                if not self._warned:
                    log.warning("cannot poll %s (retrying quietly): %s", self.url, exc)
                    self._warned = True
            self._stop.wait(self.poll_seconds)
