"""Preemption notices: SIGTERM/SIGINT and the GCE metadata server's `instance/preempted`.

A Spot VM gets SIGTERM (through the container runtime) about 30 s before SIGKILL, and the
notice can land at any instant of the process's life. What a signal does depends on how far
the attempt got, so that every one ends in a documented exit:

    starting   (imports, set-up, building the workload: no training state exists yet)
               -> exit 76 at once: there is nothing to save and nothing is half-written
    armed      (restore, steps, checkpoints, the final save and model export)
               -> the flag is raised; the loop sees it after the current step and saves
                  from its own thread (exit 75), or the final model is finished (exit 0)
    settled    (the attempt's exit code is decided: model written, or checkpoint committed)
               -> exit with that code at once (teardown has nothing left that matters)

Nothing is saved from inside a signal handler: a handler runs between two bytecodes of
whatever the main thread was doing, possibly inside the checkpoint code itself.

A second signal means "now": the handler exits at once, with 76 unless the attempt already
committed a checkpoint at its last step (75). Once armed, a watchdog also ends the process
when the grace period is nearly over (grace - margin / 2 after the notice), whatever the main
thread is blocked on: saves are atomic (temporary directory + rename, or manifest last) and
the model's `config.json` is written last, so whatever was committed before stays intact.
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


def exit_now(code: int, message: str) -> None:
    """Ends the process at once with `code`, after one line on stderr.

    Safe in a signal handler and from any thread: write(2) and _exit(2) only, no locks, no
    Python logging, no buffered streams (the main thread may hold their locks).
    """
    try:
        os.write(2, f"{message}\n".encode())
    finally:
        os._exit(code)


class PreemptionNotice:
    """A thread-safe flag raised by a signal or the metadata watcher, with when and why.

    Starts in the *starting* phase, where a signal exits 76 at once; `arm()` makes it raise
    the flag instead, `settle(code)` makes it exit with `code` at once (see the module
    docstring).

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
        self._armed = False
        self._settled: int | None = None
        self._fallback = EXIT_PREEMPTED_UNSAVED
        self._hard_deadline_s: float | None = None
        self._released = threading.Event()
        self._watchdog: threading.Thread | None = None

    def __bool__(self) -> bool:
        return self._event.is_set()

    @property
    def armed(self) -> bool:
        """Whether a signal raises the flag (rather than ending a process with nothing to
        save)."""
        return self._armed

    @property
    def fallback_code(self) -> int:
        """The exit code of a forced exit (second signal or watchdog) from now on."""
        return self._settled if self._settled is not None else self._fallback

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

    def arm(self, *, hard_deadline_s: float | None = None) -> None:
        """Training state exists from now on: a signal raises the flag for the loop to act on.

        Args:
            hard_deadline_s: Seconds after the first notice at which a watchdog ends the
                process with `fallback_code`, whatever the main thread is doing (None: no
                watchdog). Set it between the emergency save's deadline and SIGKILL.
        """
        self._armed = True
        if hard_deadline_s is not None and self._watchdog is None:
            self._hard_deadline_s = hard_deadline_s
            self._watchdog = threading.Thread(target=self._watch, name="preempt-deadline",
                                              daemon=True)
            self._watchdog.start()

    def fallback(self, code: int) -> None:
        """What a forced exit reports from now on (75 once a checkpoint at the attempt's
        last step is committed)."""
        self._fallback = code

    def settle(self, code: int) -> None:
        """The attempt's exit code is decided: from now on a signal (or the watchdog) ends
        the process with `code` at once."""
        self._settled = code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        if self._settled is not None:
            exit_now(self._settled, f"{name}: this attempt already ended with exit "
                                    f"{self._settled}; exiting now")
        if not self._armed:
            exit_now(EXIT_PREEMPTED_UNSAVED, f"{name} before any training state exists: "
                                             "nothing to save; exiting now")
        if self.signals > 1 and self.exit_on_second:
            exit_now(self.fallback_code, f"second signal {name}: exiting now; the last "
                                         "committed checkpoint is intact")
        self.raise_notice(name)

    def _watch(self) -> None:
        while not self._event.wait(1.0):
            if self._released.is_set():
                return
        assert self._hard_deadline_s is not None
        remaining = self._hard_deadline_s - self.seconds_since()
        if self._released.wait(max(0.0, remaining)):
            return
        exit_now(self.fallback_code, f"preemption notice {self._hard_deadline_s:.1f}s ago: the "
                                     "grace period is nearly over; exiting now (the last "
                                     "committed checkpoint is intact)")

    def install(self) -> PreemptionNotice:
        """Handles SIGTERM and SIGINT in this process (main thread only)."""
        for sig in HANDLED_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def uninstall(self) -> None:
        """Puts the previous handlers back and stops the watchdog (for in-process use; a
        trainer process keeps its handlers to the end)."""
        self._released.set()
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
