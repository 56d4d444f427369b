"""The GCS JSON API on loopback, from the PyPI package gcp-storage-emulator.

`start_gcs_server` runs it in this process (what `vertex-patterns emulators up` does);
`GcsEmulator` runs that command as a child process, so the emulator's request handling never
competes with the caller's threads for the GIL (tests and benchmarks use it).

The server is single-threaded and answers HTTP/1.0 (a connection per request). Two of its
defaults are changed here because they make the emulator, not the client, the bottleneck of
any parallel workload, without changing what it answers:

- the listen backlog is raised from socketserver's 5 to 128: with more than ~6 clients
  connecting at once, the kernel drops SYNs and each dropped one costs the client a 1 s TCP
  retransmit;
- in memory, the per-write dump of all metadata to its in-memory `.meta` blob is skipped:
  that blob is only read back when a server starts on a data directory, and the dump makes
  every write cost time in proportion to the objects already stored.

One gap in what it answers is filled, as GCS does it: object listings honour a `fields`
selector of the form `items(name,size,...),nextPageToken` (the package ignores `fields` and
always sends every key of every object, three times what the storage layer asks for).

`stock=True` serves the package exactly as published (for benchmarks that want to show it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import Any

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
READY_PREFIX = f"export {EMULATOR_ENV}="


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


LISTEN_BACKLOG = 128


# One term of a listing's `fields`: a key, optionally with its items' keys, then `,` or the end.
_FIELDS_TERM = re.compile(
    r"\s*(?:(?P<key>[A-Za-z_]\w*)\s*(?:\((?P<sub>[^()]*)\))?\s*)?(?:,|$)")


def parse_fields(spec: str) -> dict[str, frozenset[str] | None] | None:
    """A `fields` partial-response selector of the form the GCS JSON API takes for listings,
    `items(name,size),nextPageToken`: top-level keys, each with an optional list of its
    items' keys. Returns {key: item keys or None (all)}, or None for any other form (then
    the whole answer is sent, as the emulator always did)."""
    selected: dict[str, frozenset[str] | None] = {}
    at = 0
    while at < len(spec):
        term = _FIELDS_TERM.match(spec, at)
        if term is None or term.end() == at:
            return None
        at = term.end()
        if term["key"] is None:
            continue  # an empty term between commas
        sub = None
        if term["sub"] is not None:
            sub = frozenset(p.strip() for p in term["sub"].split(","))
            if not all(p.isidentifier() for p in sub):
                return None
        selected[term["key"]] = sub
    return selected or None


def _select(answer: Any, selected: dict[str, frozenset[str] | None]) -> Any:
    if not isinstance(answer, dict):
        return answer
    out: dict[str, Any] = {}
    for key, sub in selected.items():
        if key not in answer:
            continue
        value = answer[key]
        if sub is not None and isinstance(value, list):
            value = [{k: v for k, v in item.items() if k in sub} if isinstance(item, dict)
                     else item for item in value]
        out[key] = value
    return out


def _listing_with_fields(ls: Any) -> Any:
    """Wraps the emulator's objects.list handler to honour `fields` as GCS does."""

    def handler(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
        spec = request.query.get("fields")
        selected = parse_fields(spec[0]) if spec else None
        if selected is not None:
            send = response.json
            response.json = lambda answer: send(_select(answer, selected))
        return ls(request, response, storage, *args, **kwargs)

    return handler


def _honour_fields_in_listings() -> None:
    from gcp_storage_emulator import server as emulator_server
    from gcp_storage_emulator.handlers import objects

    if getattr(objects, "_vp_fields_patched", False):
        return
    wrapped = _listing_with_fields(objects.ls)
    for _regex, methods in emulator_server.HANDLERS:
        for method, fn in list(methods.items()):
            if fn is objects.ls:
                methods[method] = wrapped
    objects._vp_fields_patched = True


def start_gcs_server(
    host: str, port: int, *, data_dir: str | None = None, stock: bool = False
) -> Any:
    """Starts gcp-storage-emulator in a thread of this process and returns its server.

    Args:
        host: The address to bind (loopback).
        port: The port (0 is not supported by the emulator: use `free_port`).
        data_dir: Keep objects on disk there; None keeps them in memory.
        stock: Keep the package's listen backlog of 5, its per-write metadata dump in
            memory and its listings without `fields` (see the module docstring); by default
            all three are changed (the last for the whole process, once a non-stock server
            has started in it).

    Raises:
        OSError: The port is taken.
    """
    from gcp_storage_emulator.server import create_server

    # The emulator binds inside its own thread and waits forever if that fails, so a taken
    # port is detected here first (same SO_REUSEADDR setting as its HTTPServer).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
    if not stock:
        _honour_fields_in_listings()
    server = create_server(host, port, in_memory=data_dir is None, data_dir=data_dir)
    if not stock and data_dir is None:
        # Nothing reads the in-memory dump back (it is read once, when a Storage is built).
        server._storage._write_config_to_file = lambda: None
    server.start()
    if not stock:
        # listen() on a listening socket sets its backlog anew (the server is already bound
        # and listening with socketserver's request_queue_size of 5 by now).
        server._api._httpd.socket.listen(LISTEN_BACKLOG)
    return server


class GcsEmulator:
    """A gcp-storage-emulator child process on a free loopback port.

    Use as a context manager; `url` is what `STORAGE_EMULATOR_HOST` should hold.

    Args:
        port: The port; a free one by default.
        startup_timeout_s: How long to wait for the emulator to answer.
    """

    def __init__(self, *, port: int | None = None, startup_timeout_s: float = 60.0) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._timeout = startup_timeout_s
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> GcsEmulator:
        """Starts the child and waits until it prints its export line."""
        env = dict(os.environ)
        env.pop(EMULATOR_ENV, None)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "vertex_patterns.cli", "emulators", "up",
             "--gcs-port", str(self.port), "--only", "gcs"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        stdout = self._proc.stdout
        assert stdout is not None

        def pump() -> None:
            for line in stdout:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"GCS emulator exited with code {self._proc.returncode}")
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line.startswith(READY_PREFIX):
                return self
        self.stop()
        raise RuntimeError(f"GCS emulator did not start within {self._timeout:.0f}s")

    def stop(self) -> None:
        """Stops the child (SIGTERM, then SIGKILL after 10 s)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            with contextlib.suppress(OSError):
                self._proc.stdout.close()
        self._proc = None

    def __enter__(self) -> GcsEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
