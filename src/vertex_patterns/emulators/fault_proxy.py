"""Fault-injecting loopback HTTP reverse proxy for exercising GCS client retry paths.

`FaultProxy` sits between a google-cloud-storage client and a local GCS emulator
(gcp-storage-emulator) and, driven by a seeded `random.Random`, answers a configurable
fraction of requests with an injected ``503``/``429`` or closes the connection without any
response. Half of the dropped connections are closed *before* the request reaches the
upstream and half *after* the upstream has fully processed it, so callers see the
ambiguous "did my write happen?" failure that real networks produce.

Every other request is forwarded verbatim (method, path, query, body, end-to-end headers)
over a fresh upstream connection, and the upstream response is streamed back. Absolute
upstream URLs in ``Location`` headers (resumable-upload session URIs) and in JSON bodies
(``mediaLink``) are rewritten to the proxy's own base URL so that follow-up requests keep
flowing through the proxy.

Faults are assigned in request *arrival* order, so positions are reproducible only for
sequential traffic. Note that google-cloud-storage >= 3.x issues a background
``GET /storage/v1/b/{bucket}`` (bucket metadata for OpenTelemetry) on a client's first
object operation per bucket, which races with the foreground request for a draw; set
``DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA=true`` when exact positions matter.

Typical use in a test::

    config = FaultConfig(seed=7, rate_503=0.2, rate_drop=0.05)
    with FaultProxy("http://127.0.0.1:9023", config) as proxy:
        client = storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": proxy.url},
        )
        ...
        assert proxy.stats["503"] > 0

Or from a shell (prints the ``export STORAGE_EMULATOR_HOST=...`` line first)::

    python -m vertex_patterns.emulators.fault_proxy --upstream http://127.0.0.1:9023 \\
        --port 9024 --seed 1 --rate-503 0.1 --rate-429 0.05 --rate-drop 0.02
"""

from __future__ import annotations

import argparse
import enum
import http.client
import json
import logging
import random
import signal
import sys
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

__all__ = ["STAT_KEYS", "FaultConfig", "FaultProxy", "main"]

log = logging.getLogger(__name__)

#: Keys of the dictionary returned by `FaultProxy.stats`.
STAT_KEYS: tuple[str, ...] = (
    "requests", "forwarded", "503", "429", "drop_before", "drop_after", "corrupt",
)

_COPY_CHUNK = 1024 * 1024
"""Block size used when streaming request and response bodies."""

_HISTORY_LEN = 10_000
"""How many recent requests `FaultProxy.history` remembers."""

_MAX_JSON_REWRITE = 8 * 1024 * 1024
"""JSON response bodies up to this size are buffered to rewrite upstream URLs in them."""

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "trailers",
        "upgrade",
    }
)
"""Hop-by-hop headers (RFC 9110 section 7.6.1); ``Proxy-*`` headers are dropped as well."""

_RECOMPUTED_REQUEST_HEADERS = frozenset({"host", "content-length", "expect"})
"""Request headers the proxy sets itself instead of copying."""

_DISCONNECT_ERRORS: tuple[type[BaseException], ...] = (
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)


class _ClientGoneError(Exception):
    """The downstream client closed its connection while the proxy was reading from it."""


class _Action(enum.Enum):
    """What the proxy does with one request."""

    FORWARD = "forwarded"
    FAIL_503 = "503"
    FAIL_429 = "429"
    DROP_BEFORE = "drop_before"
    DROP_AFTER = "drop_after"
    CORRUPT = "corrupt"


@dataclass(kw_only=True, frozen=True)
class FaultConfig:
    """Fault mix injected by a `FaultProxy`.

    Each request draws one uniform number ``u`` from ``random.Random(seed)``; the rates
    partition ``[0, 1)`` in the order 503, 429, drop-before, drop-after (the drop rate is
    split evenly between the last two), and the remainder is forwarded. Because every
    request consumes exactly one draw, two proxies with the same seed fed the same sequence
    of requests inject faults at the same positions.
    """

    seed: int = 0
    """Seed of the proxy's private `random.Random`; fixes the fault positions."""

    rate_503: float = 0.0
    """Probability in [0, 1] of answering ``503 Service Unavailable`` without forwarding."""

    rate_429: float = 0.0
    """Probability in [0, 1] of answering ``429 Too Many Requests`` (``Retry-After: 0``)
    without forwarding."""

    rate_drop: float = 0.0
    """Probability in [0, 1] of closing the connection with no response at all. Half of the
    drops happen before the request is forwarded; the other half after the upstream has
    processed it and its response has been discarded, so the client cannot tell whether
    its request took effect."""

    rate_corrupt: float = 0.0
    """Probability in [0, 1] of forwarding a request but flipping the first byte of a media
    download's body (``alt=media``), as a damaged transfer would; other requests drawn for
    corruption are forwarded untouched. Tests checksum verification end to end."""

    max_consecutive_faults: int | None = None
    """If set, after this many faults in a row the next request is forwarded regardless of
    the draw (the draw is still consumed, so positions stay reproducible). ``None`` means
    no cap; ``0`` disables faults entirely."""

    def __post_init__(self) -> None:
        """Validate the rates and the cap.

        Raises:
            ValueError: If a rate is not a number in [0, 1], the rates sum to more than 1,
                or ``max_consecutive_faults`` is negative.
        """
        rates = {"rate_503": self.rate_503, "rate_429": self.rate_429,
                 "rate_drop": self.rate_drop, "rate_corrupt": self.rate_corrupt}
        for name, value in rates.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(
                    f"FaultConfig.{name} must be a float in [0, 1], got {value!r} "
                    f"({type(value).__name__})"
                )
            if not 0.0 <= value <= 1.0:  # also rejects NaN
                raise ValueError(
                    f"FaultConfig.{name} must be a probability in [0, 1], got {value!r}; "
                    f"use e.g. {name}=0.1 for 10% of requests"
                )
        total = sum(rates.values())
        if total > 1.0 + 1e-9:
            detail = " + ".join(f"{name}={value}" for name, value in rates.items())
            raise ValueError(
                f"FaultConfig rates must sum to at most 1, got {detail} = {total:g}; "
                "lower one of them so that at most every request is faulted"
            )
        cap = self.max_consecutive_faults
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
            raise ValueError(
                f"FaultConfig.max_consecutive_faults must be None or an int >= 0, got {cap!r}"
            )

    @property
    def fault_rate(self) -> float:
        """Total probability that a request (before the consecutive cap) is faulted."""
        return self.rate_503 + self.rate_429 + self.rate_drop + self.rate_corrupt

    def _action_for(self, u: float) -> _Action:
        """Map one uniform draw ``u`` in [0, 1) to an action (ignoring the cap)."""
        edge = self.rate_503
        if u < edge:
            return _Action.FAIL_503
        edge += self.rate_429
        if u < edge:
            return _Action.FAIL_429
        edge += self.rate_drop / 2.0
        if u < edge:
            return _Action.DROP_BEFORE
        edge += self.rate_drop / 2.0
        if u < edge:
            return _Action.DROP_AFTER
        edge += self.rate_corrupt
        if u < edge:
            return _Action.CORRUPT
        return _Action.FORWARD


class _ProxyHTTPServer(ThreadingHTTPServer):
    """Threading server that knows its `FaultProxy` and logs instead of printing errors."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(address, _ProxyHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log an exception that escaped a handler (default prints a traceback to stderr).

        Args:
            request: The client socket.
            client_address: The client's address.
        """
        exc = sys.exc_info()[1]
        if isinstance(exc, _DISCONNECT_ERRORS):
            log.debug("client %s disconnected: %r", client_address, exc)
        else:
            log.error("fault proxy: error while serving %s", client_address, exc_info=True)


class _ProxyHandler(BaseHTTPRequestHandler):
    """Per-connection handler: decide a fault, then inject it or forward the request."""

    protocol_version = "HTTP/1.0"  # one request per connection, like the emulator
    server_version = "vertex-patterns-fault-proxy/1.0"

    def do_GET(self) -> None:
        """Handle GET."""
        self._handle()

    def do_HEAD(self) -> None:
        """Handle HEAD."""
        self._handle()

    def do_POST(self) -> None:
        """Handle POST."""
        self._handle()

    def do_PUT(self) -> None:
        """Handle PUT."""
        self._handle()

    def do_PATCH(self) -> None:
        """Handle PATCH."""
        self._handle()

    def do_DELETE(self) -> None:
        """Handle DELETE."""
        self._handle()

    def do_OPTIONS(self) -> None:
        """Handle OPTIONS."""
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        """Route the base class's access/error log to the module logger at debug level.

        Args:
            format: printf-style format string.
            *args: Format arguments.
        """
        log.debug("%s - %s", self.address_string(), format % args)

    # -- request flow -----------------------------------------------------------------

    @property
    def _proxy(self) -> FaultProxy:
        return cast(_ProxyHTTPServer, self.server).proxy

    def _handle(self) -> None:
        self.close_connection = True
        proxy = self._proxy
        action = proxy._decide(self.command, self.path)
        log.debug("%s %s -> %s", self.command, self.path, action.value)
        try:
            if action is _Action.FORWARD:
                self._forward(relay=True)
            elif action is _Action.CORRUPT:
                self._forward(relay=True, corrupt="alt=media" in self.path)
            elif action is _Action.DROP_AFTER:
                self._forward(relay=False)
            else:
                self._drain_request_body()
                if action is _Action.FAIL_503:
                    self._send_error_json(503, "Service Unavailable", "backendError")
                elif action is _Action.FAIL_429:
                    self._send_error_json(
                        429, "Too Many Requests", "rateLimitExceeded", {"Retry-After": "0"}
                    )
                # DROP_BEFORE: return without writing; the server closes the socket.
        except _ClientGoneError as exc:
            log.debug("client went away while sending %s %s: %s", self.command, self.path, exc)
        except _DISCONNECT_ERRORS as exc:
            log.debug("client went away during %s %s: %r", self.command, self.path, exc)

    def _forward(self, *, relay: bool, corrupt: bool = False) -> None:
        """Send the request upstream; relay the response, or discard it when not ``relay``."""
        proxy = self._proxy
        body: bytes | None = None
        length: int | None = None
        if self._is_chunked():
            body = self._read_chunked_body()
            length = len(body)
        else:
            length = self._content_length()

        conn = http.client.HTTPConnection(
            proxy._upstream_host, proxy._upstream_port, timeout=proxy._upstream_timeout
        )
        try:
            try:
                self._send_upstream_request(conn, body, length)
                response = conn.getresponse()
            except _ClientGoneError:
                raise
            except (OSError, http.client.HTTPException) as exc:
                log.warning("fault proxy: upstream %s failed: %r", proxy.upstream, exc)
                if relay:
                    self._send_error_json(502, "Bad Gateway", "upstreamError", message=str(exc))
                return
            if relay:
                self._relay(response, corrupt=corrupt)
            else:
                while response.read(_COPY_CHUNK):  # let the upstream finish, then drop
                    pass
        finally:
            conn.close()

    def _send_upstream_request(
        self, conn: http.client.HTTPConnection, body: bytes | None, length: int | None
    ) -> None:
        proxy = self._proxy
        conn.putrequest(
            self.command,
            proxy._upstream_path(self.path),
            skip_host=True,
            skip_accept_encoding=True,
        )
        conn.putheader("Host", proxy._upstream_netloc)
        for name, value in _end_to_end_headers(self.headers.items(), self.headers):
            if name.lower() not in _RECOMPUTED_REQUEST_HEADERS:
                conn.putheader(name, value)
        if length is not None:
            conn.putheader("Content-Length", str(length))
        conn.endheaders()
        if body is not None:
            conn.send(body)
        elif length:
            remaining = length
            while remaining > 0:
                block = self.rfile.read(min(_COPY_CHUNK, remaining))
                if not block:
                    raise _ClientGoneError(f"request body ended {remaining} bytes early")
                conn.send(block)
                remaining -= len(block)

    def _relay(self, response: http.client.HTTPResponse, *, corrupt: bool = False) -> None:
        proxy = self._proxy
        upstream_base = proxy._upstream_base
        client_base = self._client_base()
        headers = [
            (name, value)
            for name, value in _end_to_end_headers(response.getheaders(), response.msg)
            if name.lower() != "content-length"
        ]
        headers = [
            (name, _rewrite_url(value, upstream_base, client_base))
            if name.lower() in ("location", "content-location")
            else (name, value)
            for name, value in headers
        ]
        content_length = response.getheader("Content-Length")
        has_body = self.command != "HEAD" and response.status not in (204, 304)
        buffered: bytes | None = None
        if has_body and self._should_rewrite_body(response, content_length):
            buffered = response.read().replace(upstream_base.encode(), client_base.encode())
            content_length = str(len(buffered))

        self.log_request(response.status)
        self.send_response_only(response.status, response.reason)
        for name, value in headers:
            self.send_header(name, value)
        if content_length is not None:
            self.send_header("Content-Length", content_length)
        self.send_header("Connection", "close")
        self.end_headers()
        if not has_body:
            return
        if buffered is not None:
            self.wfile.write(buffered)
            return
        while True:
            block = response.read(_COPY_CHUNK)
            if not block:
                break
            if corrupt:
                block = bytes([block[0] ^ 0xFF]) + block[1:]
                corrupt = False
            self.wfile.write(block)

    def _should_rewrite_body(
        self, response: http.client.HTTPResponse, content_length: str | None
    ) -> bool:
        ctype = (response.getheader("Content-Type") or "").lower()
        if not ctype.startswith("application/json") or response.getheader("Content-Encoding"):
            return False
        try:
            return content_length is not None and int(content_length) <= _MAX_JSON_REWRITE
        except ValueError:
            return False

    def _send_error_json(
        self,
        code: int,
        reason: str,
        gcs_reason: str,
        extra_headers: dict[str, str] | None = None,
        *,
        message: str = "injected fault",
    ) -> None:
        payload = {
            "error": {
                "code": code,
                "message": message,
                "errors": [{"message": message, "domain": "global", "reason": gcs_reason}],
            }
        }
        data = json.dumps(payload).encode()
        self.log_request(code)
        self.send_response_only(code, reason)
        self.send_header("Server", self.version_string())
        self.send_header("Date", self.date_time_string())
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    # -- request body helpers ---------------------------------------------------------

    def _is_chunked(self) -> bool:
        codings = self.headers.get("Transfer-Encoding", "")
        return "chunked" in [c.strip().lower() for c in codings.split(",")]

    def _content_length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        if raw is None:
            return None
        try:
            length = int(raw)
        except ValueError:
            raise _ClientGoneError(f"invalid Content-Length {raw!r}") from None
        if length < 0:
            raise _ClientGoneError(f"invalid Content-Length {raw!r}")
        return length

    def _read_chunked_body(self) -> bytes:
        """De-chunk a ``Transfer-Encoding: chunked`` request body (trailers are discarded)."""
        parts: list[bytes] = []
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise _ClientGoneError("chunked request body ended early")
            size_field = line.split(b";", 1)[0].strip()
            try:
                size = int(size_field, 16)
            except ValueError:
                raise _ClientGoneError(f"bad chunk size line {line!r}") from None
            if size == 0:
                break
            chunk = self.rfile.read(size)
            if len(chunk) != size:
                raise _ClientGoneError("chunked request body ended inside a chunk")
            parts.append(chunk)
            self.rfile.readline(65537)  # CRLF after the chunk data
        while True:  # trailer section, terminated by an empty line
            line = self.rfile.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
        return b"".join(parts)

    def _drain_request_body(self) -> None:
        """Consume the request body so that closing the socket does not reset it early."""
        if self._is_chunked():
            self._read_chunked_body()
            return
        remaining = self._content_length() or 0
        while remaining > 0:
            block = self.rfile.read(min(_COPY_CHUNK, remaining))
            if not block:
                raise _ClientGoneError(f"request body ended {remaining} bytes early")
            remaining -= len(block)

    def _client_base(self) -> str:
        """Base URL the client used to reach the proxy (its Host header, else `FaultProxy.url`)."""
        host = self.headers.get("Host")
        return f"http://{host}" if host else self._proxy.url


def _end_to_end_headers(
    items: Sequence[tuple[str, str]] | Any, message: Any
) -> list[tuple[str, str]]:
    """Drop hop-by-hop headers, ``Proxy-*`` headers and those named in ``Connection``.

    Args:
        items: ``(name, value)`` pairs, duplicates preserved.
        message: The header container, used to read every ``Connection`` header.

    Returns:
        The remaining pairs, in order.
    """
    listed: set[str] = set()
    for value in message.get_all("Connection") or []:
        listed.update(token.strip().lower() for token in value.split(",") if token.strip())
    kept: list[tuple[str, str]] = []
    for name, value in items:
        lname = name.lower()
        if lname in _HOP_BY_HOP or lname.startswith("proxy-") or lname in listed:
            continue
        kept.append((name, value))
    return kept


def _rewrite_url(value: str, upstream_base: str, client_base: str) -> str:
    """Point an absolute URL at the upstream base to the proxy's base instead.

    Args:
        value: Header value, e.g. ``http://127.0.0.1:9023/upload/storage/v1/b/x/o?...``.
        upstream_base: ``scheme://host:port`` of the upstream.
        client_base: ``scheme://host:port`` the client used to reach the proxy.

    Returns:
        The rewritten URL, or ``value`` unchanged when it points elsewhere.
    """
    if value.lower().startswith(upstream_base.lower()):
        rest = value[len(upstream_base) :]
        if not rest or rest[0] in "/?#":
            return client_base + rest
    return value


@dataclass
class _PlannedFault:
    """A fault `FaultProxy.inject` planned for requests that match."""

    action: _Action
    method: str | None
    path_contains: str
    times: int
    after: int

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or method == self.method) and self.path_contains in path


class FaultProxy:
    """Loopback reverse proxy that injects 503s, 429s and dropped connections.

    Faults are decided per request, in arrival order, from ``random.Random(config.seed)``
    under a lock; forwarded requests go to the upstream over a fresh
    `http.client.HTTPConnection` each (the GCS emulator closes after every response).

    Args:
        upstream: Base URL of the upstream server, e.g. ``http://127.0.0.1:9023``. Only
            ``http`` is supported; a path prefix, if any, is prepended to every request.
        config: The fault mix.
        host: Interface to listen on.
        port: Port to listen on; ``0`` picks a free one (see `url` after `start`).
        upstream_timeout: Socket timeout in seconds for upstream connections.

    Raises:
        ValueError: If ``upstream`` is not an ``http://host[:port]`` URL.
    """

    def __init__(
        self,
        upstream: str,
        config: FaultConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        upstream_timeout: float = 60.0,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(
                f"upstream must be an http://host:port URL (e.g. http://127.0.0.1:9023), "
                f"got {upstream!r}"
            )
        self._upstream = upstream.rstrip("/")
        self._upstream_host: str = parts.hostname
        self._upstream_port: int = parts.port or 80
        self._upstream_netloc: str = parts.netloc
        self._upstream_base: str = f"{parts.scheme}://{parts.netloc}"
        self._upstream_prefix: str = parts.path.rstrip("/")
        self._upstream_timeout = upstream_timeout
        self._config = config
        self._host = host
        self._port = port
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._consecutive_faults = 0
        self._stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self._history: deque[tuple[str, str, str]] = deque(maxlen=_HISTORY_LEN)
        self._planned: list[_PlannedFault] = []
        self._server: _ProxyHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Bind the listening socket and serve in a daemon thread.

        Returns:
            ``self``, so ``proxy = FaultProxy(...).start()`` works.

        Raises:
            RuntimeError: If the proxy is already running.
            OSError: If the address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("FaultProxy is already running; call stop() first")
        server = _ProxyHTTPServer((self._host, self._port), self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fault-proxy-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        log.debug("fault proxy %s -> %s (%s)", self.url, self._upstream, self._config)
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket; a no-op when not running.

        In-flight requests run on daemon threads and are not waited for.
        """
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        """Start the proxy.

        Returns:
            The started proxy.
        """
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the proxy.

        Args:
            exc_type: Exception type, if any.
            exc: Exception, if any.
            tb: Traceback, if any.
        """
        self.stop()

    # -- introspection ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the proxy is currently serving."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port.

        Raises:
            RuntimeError: If the proxy has not been started.
        """
        if self._server is None:
            raise RuntimeError("FaultProxy is not running; call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL clients should use, e.g. ``http://127.0.0.1:40123``.

        Raises:
            RuntimeError: If the proxy has not been started.
        """
        host = self._host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def upstream(self) -> str:
        """The upstream base URL requests are forwarded to."""
        return self._upstream

    @property
    def config(self) -> FaultConfig:
        """The fault configuration."""
        return self._config

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the per-outcome request counters.

        Keys are `STAT_KEYS`: ``requests`` (all requests seen), ``forwarded`` (passed
        through and relayed back), ``503``, ``429``, ``drop_before`` and ``drop_after``
        (forwarded, upstream response discarded). Counters are updated when the decision is
        made, i.e. before the client receives anything for that request.
        """
        with self._lock:
            return dict(self._stats)

    @property
    def history(self) -> list[tuple[str, str, str]]:
        """The most recent requests (up to 10,000) in arrival order.

        Each entry is ``(method, path_and_query, outcome)`` where ``outcome`` is one of the
        `STAT_KEYS` other than ``requests``.
        """
        with self._lock:
            return list(self._history)

    def reset_stats(self) -> None:
        """Zero all counters, clear `history` and the consecutive-fault streak.

        The RNG is not reseeded, so fault positions continue the same sequence.
        """
        with self._lock:
            self._stats = dict.fromkeys(STAT_KEYS, 0)
            self._history.clear()
            self._consecutive_faults = 0

    def inject(
        self, fault: str, *, method: str | None = None, path_contains: str = "",
        times: int = 1, after: int = 0,
    ) -> None:
        """Plans a fault for the next `times` requests that match, ahead of the random mix.

        For tests that need one exact failure, e.g. the response of the first upload lost
        after the upstream stored it: ``proxy.inject("drop_after", method="POST",
        path_contains="/upload/")``. A planned fault still consumes the request's random
        draw, so the positions of random faults do not move.

        Args:
            fault: One of ``503``, ``429``, ``drop_before``, ``drop_after``, ``corrupt``.
            method: Only requests with this HTTP method (any when None).
            path_contains: Only requests whose path and query contain this text.
            times: How many matching requests get the fault.
            after: Let this many matching requests through first.

        Raises:
            ValueError: An unknown fault or a non-positive `times`.
        """
        actions = {a.value: a for a in _Action if a is not _Action.FORWARD}
        if fault not in actions:
            raise ValueError(f"unknown fault {fault!r}: use one of {', '.join(actions)}")
        if times < 1 or after < 0:
            raise ValueError(f"times must be >= 1 and after >= 0, got {times}, {after}")
        with self._lock:
            self._planned.append(_PlannedFault(actions[fault], method, path_contains, times,
                                               after))

    # -- internals used by the handler ------------------------------------------------

    def _decide(self, method: str, path: str) -> _Action:
        """Draw the action for the next request, count it and record it in `history`."""
        with self._lock:
            action = self._config._action_for(self._rng.random())
            cap = self._config.max_consecutive_faults
            streak = self._consecutive_faults
            if action is not _Action.FORWARD and cap is not None and streak >= cap:
                action = _Action.FORWARD
            for plan in self._planned:
                if plan.times > 0 and plan.matches(method, path):
                    if plan.after > 0:
                        plan.after -= 1
                        continue
                    plan.times -= 1
                    action = plan.action
                    break
            self._consecutive_faults = 0 if action is _Action.FORWARD else streak + 1
            self._stats["requests"] += 1
            self._stats[action.value] += 1
            self._history.append((method, path, action.value))
            return action

    def _upstream_path(self, path: str) -> str:
        """Turn the request target into the upstream request target (path + query)."""
        if "://" in path.split("?", 1)[0]:  # absolute-form request target
            parts = urlsplit(path)
            path = parts.path or "/"
            if parts.query:
                path = f"{path}?{parts.query}"
        if not path.startswith("/"):
            path = "/" + path
        return self._upstream_prefix + path


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vertex_patterns.emulators.fault_proxy",
        description="Fault-injecting reverse proxy in front of a local GCS emulator.",
    )
    parser.add_argument(
        "--upstream", required=True, help="upstream base URL, e.g. http://127.0.0.1:9023"
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="listen port (default: a free one)")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed (default 0)")
    parser.add_argument("--rate-503", type=float, default=0.0, help="fraction answered 503")
    parser.add_argument("--rate-429", type=float, default=0.0, help="fraction answered 429")
    parser.add_argument(
        "--rate-drop", type=float, default=0.0, help="fraction closed with no response"
    )
    parser.add_argument(
        "--rate-corrupt", type=float, default=0.0,
        help="fraction of media downloads whose first byte is flipped",
    )
    parser.add_argument(
        "--max-consecutive-faults",
        type=int,
        default=None,
        help="forward after this many faults in a row (default: no cap)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging to stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the proxy in the foreground until SIGINT or SIGTERM.

    Prints ``export STORAGE_EMULATOR_HOST=http://HOST:PORT`` on stdout (flushed) once the
    socket is bound, and a stats summary on stderr at exit.

    Args:
        argv: Command-line arguments (default ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        config = FaultConfig(
            seed=args.seed,
            rate_503=args.rate_503,
            rate_429=args.rate_429,
            rate_drop=args.rate_drop,
            rate_corrupt=args.rate_corrupt,
            max_consecutive_faults=args.max_consecutive_faults,
        )
        proxy = FaultProxy(args.upstream, config, host=args.host, port=args.port)
    except ValueError as exc:
        parser.error(str(exc))

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            proxy.start()
        except OSError as exc:
            print(f"fault_proxy: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
            return 1
        print(f"export STORAGE_EMULATOR_HOST={proxy.url}", flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        proxy.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"fault_proxy: stopped; stats {json.dumps(proxy.stats)}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
