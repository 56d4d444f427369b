"""What the GCS emulators leave out, added in front of them: preconditions, split rewrites,
batches, `fields` in listings.

Neither emulator a test can run here answers like GCS where the retry-safety code of the
storage layer depends on it (each seen against them, 2026-12-01):

- `fake-gcs-server` (v1.54.0) honours `ifGenerationMatch` on uploads only: copies, rewrites,
  composes and deletes with a wrong or zero generation succeed; a download with a wrong
  `ifGenerationMatch` answers 404, not 412; it has no batch endpoint; every rewrite finishes
  in one call and `maxBytesRewrittenPerCall` is ignored.
- `gcp-storage-emulator` honours no precondition at all and also finishes rewrites at once.

`GcsFront` is a loopback HTTP server that forwards every request to such an emulator and
adds what GCS does:

- **Preconditions** (`ifGenerationMatch`, `ifGenerationNotMatch`, `ifSourceGenerationMatch`,
  and compose's per-source `objectPreconditions.ifGenerationMatch`) on uploads, copies,
  rewrites, composes, deletes, metadata updates and reads: 412 when one does not hold. The
  check and the forwarded write run under one lock per destination object, so two writers
  racing through the front see what they would see on GCS: one wins, the other gets 412.
- **Rewrites in several calls**: a rewrite of an object larger than `rewrite_chunk` (or the
  request's `maxBytesRewrittenPerCall`) answers `done: false` with a `rewriteToken` until
  the caller has come back once per chunk; the last call copies. So a client that does not
  loop on the token leaves no object behind, as on GCS across locations.
- **Batch requests** (`/batch/storage/v1`, multipart/mixed): each part is handled as a
  request of its own, through the same checks.
- **`fields`** of the form `items(a,b),nextPageToken` on listings (what real GCS sends back).

The front speaks HTTP/1.1 with keep-alive to clients and keeps one upstream connection per
thread; request and response bodies are held in memory (test-sized objects).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

REWRITE_CHUNK = 1024 * 1024
"""Bytes one rewrite call copies when the request names no `maxBytesRewrittenPerCall`."""

_OBJ = r"/storage/v1/b/(?P<b>[^/?]+)/o/(?P<o>[^/?]+)"
_COPY = re.compile(rf"^{_OBJ}/(?P<op>copyTo|rewriteTo)/b/(?P<db>[^/?]+)/o/(?P<do>[^/?]+)$")
_COMPOSE = re.compile(r"^/storage/v1/b/(?P<db>[^/?]+)/o/(?P<do>[^/?]+)/compose$")
_OBJECT = re.compile(rf"^{_OBJ}$")
_DOWNLOAD = re.compile(r"^/download/storage/v1/b/(?P<b>[^/?]+)/o/(?P<o>[^/?]+)$")
_UPLOAD = re.compile(r"^/upload/storage/v1/b/(?P<b>[^/?]+)/o$")
_LIST = re.compile(r"^/storage/v1/b/(?P<b>[^/?]+)/o$")
_BATCH = "/batch/storage/v1"
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer",
                         "upgrade", "host", "content-length", "expect"})


@dataclass
class Reply:
    """One HTTP answer, whole."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def _error(status: int, message: str, reason: str) -> Reply:
    body = json.dumps({"error": {"code": status, "message": message,
                                 "errors": [{"message": message, "domain": "global",
                                             "reason": reason}]}}).encode()
    return Reply(status, [("Content-Type", "application/json; charset=UTF-8")], body)


def _precondition_failed(what: str) -> Reply:
    return _error(412, f"At least one of the pre-conditions you specified did not hold "
                       f"({what}).", "conditionNotMet")


def holds(current: int | None, match: str | None, not_match: str | None) -> bool:
    """Whether generation preconditions hold for an object whose generation is `current`
    (None: absent), as GCS reads them (`0` means "does not exist")."""
    if match is not None:
        want = int(match)
        if (want == 0 and current is not None) or (want != 0 and current != want):
            return False
    if not_match is not None:
        avoid = int(not_match)
        if (avoid == 0 and current is None) or (avoid != 0 and current == avoid):
            return False
    return True


def _token(fields: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(fields, sort_keys=True).encode()).decode()


def _untoken(token: str) -> dict[str, Any] | None:
    try:
        fields = json.loads(base64.urlsafe_b64decode(token.encode()))
    except ValueError:
        return None
    return fields if isinstance(fields, dict) else None


class GcsFront:
    """A loopback server in front of a GCS emulator that answers as GCS would (see module).

    Args:
        upstream: The emulator's base URL, `http://127.0.0.1:N`.
        host: Interface to listen on (loopback).
        port: Port; 0 picks a free one (`url` tells which).
        rewrite_chunk: Bytes a rewrite call copies by default (GCS-like token loop above).
        upstream_checks_uploads: The upstream honours the preconditions of one-request
            uploads itself (fake-gcs-server does; not those of resumable uploads, seen
            2026-12-01): those are then forwarded unchecked, saving a metadata request each.
    """

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0,
                 rewrite_chunk: int = REWRITE_CHUNK,
                 upstream_checks_uploads: bool = False) -> None:
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self._up_host = parts.hostname
        self._up_port = parts.port or 80
        self.rewrite_chunk = rewrite_chunk
        self.upstream_checks_uploads = upstream_checks_uploads
        self._host, self._port = host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> GcsFront:
        """Binds and serves in a daemon thread."""
        front = self

        class Handler(_Handler):
            pass

        Handler.front = front
        server = _Server((self._host, self._port), Handler)
        server.daemon_threads = True
        server.request_queue_size = 128
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True,
                                        name="gcs-front")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving (in-flight requests are not waited for)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    @property
    def url(self) -> str:
        """What `STORAGE_EMULATOR_HOST` should hold."""
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> GcsFront:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- upstream ----------------------------------------------------------------------
    def send(self, method: str, target: str, headers: list[tuple[str, str]],
             body: bytes) -> Reply:
        """Forwards one request upstream on this thread's kept-alive connection."""
        for attempt in (0, 1):
            conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
            if conn is None:
                conn = http.client.HTTPConnection(self._up_host, self._up_port, timeout=120)
                self._local.conn = conn
            try:
                conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                conn.putheader("Host", f"{self._up_host}:{self._up_port}")
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP:
                        conn.putheader(name, value)
                conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
                response = conn.getresponse()
                data = response.read()
                kept = [(k, v) for k, v in response.getheaders()
                        if k.lower() not in _HOP_BY_HOP]
                if response.will_close:
                    conn.close()
                    self._local.conn = None
                return Reply(response.status, kept, data)
            except (OSError, http.client.HTTPException):
                conn.close()
                self._local.conn = None
                if attempt:  # a kept-alive connection the upstream had closed: once more
                    raise
        raise AssertionError("unreachable")

    def generation(self, bucket: str, name: str) -> tuple[int | None, dict[str, Any]]:
        """The object's generation (None: absent) and resource; names as in the path."""
        reply = self.send("GET", f"/storage/v1/b/{bucket}/o/{name}", [], b"")
        if reply.status == 404:
            return None, {}
        if reply.status != 200:
            raise _Upstream(reply)
        resource = json.loads(reply.body)
        return int(resource["generation"]), resource

    @contextmanager
    def locked(self, bucket: str, name: str) -> Iterator[None]:
        """Holds the lock of one object (check and write as one step)."""
        key = (urllib.parse.unquote(bucket), urllib.parse.unquote(name))
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield

    # -- request handling ------------------------------------------------------------
    def handle(self, method: str, target: str, headers: list[tuple[str, str]],
               body: bytes) -> Reply:
        """Answers one request (or one part of a batch) as GCS would."""
        try:
            return self._route(method, target, headers, body)
        except _Upstream as exc:
            return exc.reply

    def _route(self, method: str, target: str, headers: list[tuple[str, str]],
               body: bytes) -> Reply:
        split = urllib.parse.urlsplit(target)
        path = split.path
        query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        if method == "POST" and path == _BATCH:
            return self._batch(headers, body)
        forward = (method, target, headers, body)
        if method == "POST" and (m := _COPY.match(path)):
            if m["op"] == "rewriteTo":
                return self._rewrite(m, query, forward)
            return self._write(m["db"], m["do"], query, forward, source=(m["b"], m["o"]))
        if method == "POST" and (m := _COMPOSE.match(path)):
            problem = self._compose_sources(m["db"], body)
            return problem or self._write(m["db"], m["do"], query, forward)
        if method == "POST" and (m := _UPLOAD.match(path)):
            damaged = _damaged_upload(query, headers, body)
            if damaged is not None:
                return damaged
            name = query.get("name") or _upload_name(body)
            one_request = query.get("uploadType") in ("media", "multipart")
            if name is None or (one_request and self.upstream_checks_uploads):
                return self.send(*forward)
            return self._write(m["b"], urllib.parse.quote(name, safe=""), query, forward)
        if (m := _OBJECT.match(path) or _DOWNLOAD.match(path)) is not None:
            if method in ("DELETE", "PATCH", "PUT"):
                return self._write(m["b"], m["o"], query, forward)
            return self._read(m["b"], m["o"], query, forward)
        if method == "GET" and _LIST.match(path) and query.get("fields"):
            return self._list(query["fields"], forward)
        return self.send(*forward)

    def _check(self, bucket: str, name: str, query: dict[str, str],
               source: tuple[str, str] | None) -> Reply | None:
        match, avoid = query.get("ifGenerationMatch"), query.get("ifGenerationNotMatch")
        if match is not None or avoid is not None:
            current, _ = self.generation(bucket, name)
            if not holds(current, match, avoid):
                return _precondition_failed(f"ifGenerationMatch={match} "
                                            f"ifGenerationNotMatch={avoid}")
        src_match = query.get("ifSourceGenerationMatch")
        if source is not None and src_match is not None:
            current, _ = self.generation(*source)
            if current is not None and not holds(current, src_match, None):
                return _precondition_failed(f"ifSourceGenerationMatch={src_match}")
        return None

    def _write(self, bucket: str, name: str, query: dict[str, str],
               forward: tuple[str, str, list[tuple[str, str]], bytes],
               *, source: tuple[str, str] | None = None) -> Reply:
        with self.locked(bucket, name):
            return self._check(bucket, name, query, source) or self.send(*forward)

    def _read(self, bucket: str, name: str, query: dict[str, str],
              forward: tuple[str, str, list[tuple[str, str]], bytes]) -> Reply:
        return self._check(bucket, name, query, None) or self.send(*forward)

    def _compose_sources(self, bucket: str, body: bytes) -> Reply | None:
        try:
            sources = json.loads(body or b"{}").get("sourceObjects", [])
        except ValueError:
            return None
        for src in sources:
            want = (src.get("objectPreconditions") or {}).get("ifGenerationMatch")
            if want is not None:
                current, _ = self.generation(bucket, urllib.parse.quote(src["name"], safe=""))
                if not holds(current, str(want), None):
                    return _precondition_failed(f"source {src['name']} ifGenerationMatch")
        return None

    def _rewrite(self, m: re.Match[str], query: dict[str, str],
                 forward: tuple[str, str, list[tuple[str, str]], bytes]) -> Reply:
        method, target, headers, body = forward
        src, dst = (m["b"], m["o"]), (m["db"], m["do"])
        with self.locked(*dst):
            problem = self._check(*dst, query, src)
            if problem is not None:
                return problem
            generation, resource = self.generation(*src)
            if generation is None:
                return self.send(*forward)  # the upstream's 404
            size = int(resource.get("size") or 0)
            per_call = int(query.get("maxBytesRewrittenPerCall") or self.rewrite_chunk)
            done = 0
            token = query.get("rewriteToken")
            if token:
                state = _untoken(token)
                if state is None or state.get("src") != list(src) \
                        or state.get("dst") != list(dst):
                    return _error(400, "Invalid rewrite token.", "invalid")
                if state.get("generation") != generation:
                    return _precondition_failed("the source changed during the rewrite")
                done = int(state["done"])
            if done + per_call < size:
                done += per_call
                answer = {"kind": "storage#rewriteResponse", "totalBytesRewritten": str(done),
                          "objectSize": str(size), "done": False,
                          "rewriteToken": _token({"src": list(src), "dst": list(dst),
                                                  "generation": generation, "done": done})}
                return Reply(200, [("Content-Type", "application/json; charset=UTF-8")],
                             json.dumps(answer).encode())
            # The last call: the upstream copies (in one call, as it always does).
            kept = {k: v for k, v in query.items()
                    if k not in ("rewriteToken", "maxBytesRewrittenPerCall")}
            path = urllib.parse.urlsplit(target).path
            return self.send(method, f"{path}?{urllib.parse.urlencode(kept)}", headers, body)

    def _list(self, spec: str, forward: tuple[str, str, list[tuple[str, str]], bytes]
              ) -> Reply:
        from vertex_patterns.emulators.gcs import parse_fields, select_fields

        reply = self.send(*forward)
        selected = parse_fields(spec)
        if reply.status != 200 or selected is None:
            return reply
        body = json.dumps(select_fields(json.loads(reply.body), selected)).encode()
        return Reply(200, [(k, v) for k, v in reply.headers if k.lower() != "etag"], body)

    def _batch(self, headers: list[tuple[str, str]], body: bytes) -> Reply:
        ctype = next((v for k, v in headers if k.lower() == "content-type"), "")
        boundary = re.search(r'boundary="?([^";]+)"?', ctype)
        if boundary is None:
            return _error(400, "batch request without a multipart boundary", "invalid")
        parts = []
        for raw in body.split(b"--" + boundary[1].encode())[1:]:
            if raw.startswith(b"--"):
                break
            parts.append(raw.strip(b"\r\n"))
        blank = re.compile(rb"\r?\n\r?\n")
        out_boundary = "batch_vp_front"
        answer = bytearray()
        for i, part in enumerate(parts):
            # The library writes MIME headers with LF and the HTTP part with CRLF.
            mime_head, http_part = ([*blank.split(part, 1), b""])[:2]
            content_id = re.search(rb"(?im)^content-id:\s*<?([^>\r\n]+)>?", mime_head)
            head, sub_body = ([*blank.split(http_part, 1), b""])[:2]
            lines = head.decode("latin-1").splitlines()
            method, url, _version = lines[0].split(" ", 2)
            sub_headers = [(k.strip(), v.strip()) for k, _, v in
                           (line.partition(":") for line in lines[1:] if ":" in line)]
            split = urllib.parse.urlsplit(url)
            target = split.path + (f"?{split.query}" if split.query else "")
            reply = self.handle(method, target, sub_headers, sub_body)
            cid = content_id[1].decode() if content_id else str(i + 1)
            reason = http.client.responses.get(reply.status, "")
            answer += (f"--{out_boundary}\r\nContent-Type: application/http\r\n"
                       f"Content-ID: <response-{cid}>\r\n\r\n"
                       f"HTTP/1.1 {reply.status} {reason}\r\n").encode()
            for k, v in reply.headers:
                if k.lower() in ("content-type", "etag"):
                    answer += f"{k}: {v}\r\n".encode()
            answer += f"Content-Length: {len(reply.body)}\r\n\r\n".encode()
            answer += reply.body + b"\r\n"
        answer += f"--{out_boundary}--\r\n".encode()
        return Reply(200, [("Content-Type", f"multipart/mixed; boundary={out_boundary}")],
                     bytes(answer))


class _Upstream(Exception):
    """The upstream answered a side request (a metadata GET) with an error: relayed."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def _damaged_upload(query: dict[str, str], headers: list[tuple[str, str]], body: bytes
                    ) -> Reply | None:
    """400 for a one-request upload whose bytes do not have the CRC32C it declares in
    `X-Goog-Hash`, as GCS answers before the object exists (media uploads only: the body
    is the object)."""
    if query.get("uploadType") != "media":
        return None
    declared = next((v for k, v in headers if k.lower() == "x-goog-hash"), "")
    wanted = re.search(r"crc32c=([A-Za-z0-9+/=]+)", declared)
    if wanted is None:
        return None
    from vertex_patterns.storage.checksum import crc32c_bytes

    got = crc32c_bytes(body)
    if got != wanted[1]:
        return _error(400, f"Provided CRC32C \"{wanted[1]}\" doesn't match calculated CRC32C "
                           f"\"{got}\".", "invalid")
    return None


def _upload_name(body: bytes) -> str | None:
    """The object name in an upload's JSON metadata (multipart's first part, or a
    resumable upload's whole initiating body)."""
    text = body.lstrip()
    if not text.startswith(b"{"):
        head, _, rest = body.partition(b"\r\n\r\n")
        if not head.startswith(b"--"):
            return None
        text = rest.split(b"\r\n--", 1)[0]
    try:
        name = json.loads(text).get("name")
    except (ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


class _Server(ThreadingHTTPServer):
    """Logs a connection a client dropped (the fault proxy does so on purpose) instead of
    printing its traceback."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("gcs front: request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vertex-patterns-gcs-front/1.0"
    front: GcsFront

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        body = self._body()
        front = self.front
        try:
            reply = front.handle(self.command, self.path, list(self.headers.items()), body)
        except (OSError, http.client.HTTPException) as exc:
            reply = _error(502, f"upstream emulator failed: {exc}", "backendError")
        client_base = f"http://{self.headers.get('Host') or front.url[7:]}"
        up = front.upstream.encode()
        data = reply.body
        if up in data:  # mediaLink and selfLink: keep the client talking to the front
            data = data.replace(up, client_base.encode())
        self.send_response_only(reply.status)
        for name, value in reply.headers:
            if name.lower() in ("location", "content-location"):
                value = value.replace(front.upstream, client_base)
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve
