"""Tests for the fault-injecting proxy against a real in-process GCS emulator."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import google.auth.credentials
import pytest
import requests
from gcp_storage_emulator.server import create_server
from google.api_core import exceptions as gexc
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from vertex_patterns.emulators import fault_proxy
from vertex_patterns.emulators.fault_proxy import STAT_KEYS, FaultConfig, FaultProxy

BUCKET = "fault-proxy-test"
MiB = 1024 * 1024

MakeProxy = Callable[..., FaultProxy]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _client(endpoint: str) -> storage.Client:
    return storage.Client(
        project="test",
        credentials=google.auth.credentials.AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
    )


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def direct_client(emulator_url: str) -> storage.Client:
    """Client talking to the emulator directly (bypassing the proxy), for setup/checks."""
    client = _client(emulator_url)
    client.create_bucket(BUCKET)
    return client


@pytest.fixture(autouse=True)
def _client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # client_options["api_endpoint"] wins over STORAGE_EMULATOR_HOST anyway; unset it so a
    # developer's shell cannot matter.
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    # google-cloud-storage >= 3.x fires a *background* `GET /storage/v1/b/{bucket}` (bucket
    # metadata for OpenTelemetry attributes) on a client's first object operation on a
    # bucket. It races with the foreground request for fault draws, which would make request
    # counts and fault positions non-deterministic. Tests here switch it off.
    monkeypatch.setenv("DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA", "true")


@pytest.fixture
def make_proxy(emulator_url: str, direct_client: storage.Client) -> Iterator[MakeProxy]:
    proxies: list[FaultProxy] = []

    def _make(**config: object) -> FaultProxy:
        proxy = FaultProxy(emulator_url, FaultConfig(**config))  # type: ignore[arg-type]
        proxies.append(proxy.start())
        return proxy

    yield _make
    for proxy in proxies:
        proxy.stop()


# -- pass-through fidelity ----------------------------------------------------------------


def test_small_object_round_trip(make_proxy: MakeProxy, direct_client: storage.Client) -> None:
    proxy = make_proxy()
    bucket = _client(proxy.url).bucket(BUCKET)
    payload = os.urandom(64 * 1024)
    bucket.blob("small.bin").upload_from_string(payload, retry=None)
    assert proxy.stats["requests"] == 1

    assert bucket.blob("small.bin").download_as_bytes(retry=None) == payload
    assert direct_client.bucket(BUCKET).blob("small.bin").download_as_bytes() == payload
    stats = proxy.stats
    assert stats["requests"] == stats["forwarded"] == 2
    assert set(stats) == set(STAT_KEYS)
    assert sum(stats[k] for k in STAT_KEYS if k != "requests") == stats["requests"]


def test_large_resumable_upload_stays_on_proxy(
    make_proxy: MakeProxy, direct_client: storage.Client, tmp_path: Path
) -> None:
    proxy = make_proxy()
    bucket = _client(proxy.url).bucket(BUCKET)
    payload = os.urandom(20 * MiB)
    src = tmp_path / "big.bin"
    src.write_bytes(payload)

    # > 8 MiB forces a resumable upload; 8 MiB chunks -> 1 initiate POST + 3 PUTs. If the
    # emulator's absolute Location (session URI) were not rewritten, the PUTs would bypass
    # the proxy and only the POST would be counted.
    blob = bucket.blob("big.bin", chunk_size=8 * MiB)
    blob.upload_from_filename(str(src), retry=None)
    calls = [
        (method, path.split("?")[0], "upload_id=" in path) for method, path, _ in proxy.history
    ]
    upload_path = f"/upload/storage/v1/b/{BUCKET}/o"
    assert calls == [("POST", upload_path, False)] + [("PUT", upload_path, True)] * 3
    assert blob.size == len(payload)

    # `blob` now carries the emulator's absolute mediaLink; the proxy rewrites upstream URLs
    # in JSON bodies, so this (ranged, 8 MiB-chunked) download goes through the proxy too.
    download_path = f"/download/storage/v1/b/{BUCKET}/o/big.bin"
    proxy.reset_stats()
    assert blob.download_as_bytes(retry=None) == payload
    assert [(m, p.split("?")[0]) for m, p, _ in proxy.history] == [("GET", download_path)] * 3

    # A fresh blob (URL built from api_endpoint), streamed to a file in one response.
    proxy.reset_stats()
    dst = tmp_path / "back.bin"
    bucket.blob("big.bin").download_to_filename(str(dst), retry=None)
    assert dst.read_bytes() == payload
    assert [(m, p.split("?")[0]) for m, p, _ in proxy.history] == [("GET", download_path)]
    assert proxy.stats["forwarded"] == 1
    assert direct_client.bucket(BUCKET).get_blob("big.bin").size == len(payload)


def test_chunked_request_body_is_dechunked(
    make_proxy: MakeProxy, direct_client: storage.Client
) -> None:
    proxy = make_proxy()
    body = json.dumps({"name": "chunked-bucket"}).encode()

    def gen() -> Iterator[bytes]:  # a generator body makes requests use chunked encoding
        for i in range(0, len(body), 5):
            yield body[i : i + 5]

    resp = requests.post(
        f"{proxy.url}/storage/v1/b?project=test",
        data=gen(),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == "chunked-bucket"
    assert direct_client.lookup_bucket("chunked-bucket") is not None


def test_delete_and_patch_are_forwarded(
    make_proxy: MakeProxy, direct_client: storage.Client
) -> None:
    direct_client.bucket(BUCKET).blob("to-delete.txt").upload_from_string(b"x")
    proxy = make_proxy()
    blob = _client(proxy.url).bucket(BUCKET).blob("to-delete.txt")
    blob.metadata = {"k": "v"}
    blob.patch(retry=None)
    assert direct_client.bucket(BUCKET).get_blob("to-delete.txt").metadata == {"k": "v"}
    blob.delete(retry=None)
    assert direct_client.bucket(BUCKET).get_blob("to-delete.txt") is None
    assert proxy.stats["forwarded"] == 2


class _EchoHandler(BaseHTTPRequestHandler):
    """Upstream that echoes what it received; ``/chunked`` answers with a chunked body."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _respond(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            for part in (b"a" * 70_000, b"b" * 5):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        echo = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode(),
        }
        data = json.dumps(echo).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        host = self.headers["Host"]
        self.send_header("Location", f"http://{host}/session?id=1")
        self.send_header("X-Hop", "secret")
        self.send_header("Connection", "close, X-Hop")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _respond


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_headers_body_and_location_are_rewritten(echo_url: str, method: str) -> None:
    with FaultProxy(echo_url, FaultConfig()) as proxy:
        proxy_url = proxy.url
        resp = requests.request(
            method,
            f"{proxy.url}/some/path?x=1&y=%2F",
            data=b"hello body",
            headers={
                "X-Custom": "kept",
                "Proxy-Authorization": "dropped",
                "Keep-Alive": "timeout=5",
                "X-Listed": "dropped",
                "Connection": "keep-alive, X-Listed",
            },
            allow_redirects=False,
            timeout=10,
        )
    assert resp.status_code == 201
    echo = resp.json()
    assert echo["method"] == method
    assert echo["path"] == "/some/path?x=1&y=%2F"
    assert echo["body"] == "hello body"
    sent = echo["headers"]
    assert sent["host"] == echo_url.removeprefix("http://")
    assert sent["x-custom"] == "kept"
    assert sent["content-length"] == "10"
    for hop in ("proxy-authorization", "keep-alive", "x-listed"):
        assert hop not in sent
    # Response side: Location points back at the proxy, hop-by-hop headers are gone.
    assert resp.headers["Location"] == f"{proxy_url}/session?id=1"
    assert "X-Hop" not in resp.headers


def test_head_and_unsized_streamed_response(echo_url: str) -> None:
    with FaultProxy(echo_url, FaultConfig()) as proxy:
        head = requests.head(f"{proxy.url}/x", timeout=10)
        streamed = requests.get(f"{proxy.url}/chunked", timeout=10)
    assert head.status_code == 201
    assert head.content == b""
    assert int(head.headers["Content-Length"]) > 0
    assert streamed.status_code == 200
    assert streamed.content == b"a" * 70_000 + b"b" * 5
    assert "Transfer-Encoding" not in streamed.headers  # relayed until close (HTTP/1.0)


# -- injected faults ----------------------------------------------------------------------


def test_injected_503(make_proxy: MakeProxy) -> None:
    proxy = make_proxy(rate_503=1.0)
    client = _client(proxy.url)
    with pytest.raises(gexc.ServiceUnavailable, match="injected fault"):
        client.get_bucket(BUCKET, retry=None)
    with pytest.raises(gexc.ServiceUnavailable):
        client.bucket(BUCKET).blob("never.txt").upload_from_string(b"data", retry=None)
    assert proxy.stats == {**dict.fromkeys(STAT_KEYS, 0), "requests": 2, "503": 2}


def test_injected_429(make_proxy: MakeProxy) -> None:
    proxy = make_proxy(rate_429=1.0)
    with pytest.raises(gexc.TooManyRequests, match="injected fault"):
        _client(proxy.url).get_bucket(BUCKET, retry=None)

    resp = requests.get(f"{proxy.url}/storage/v1/b/{BUCKET}", timeout=10)
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "0"
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json()["error"]["code"] == 429
    assert resp.json()["error"]["message"] == "injected fault"
    assert proxy.stats["429"] == 2


def test_dropped_connections_are_ambiguous(
    make_proxy: MakeProxy, direct_client: storage.Client
) -> None:
    proxy = make_proxy(seed=5, rate_drop=1.0)
    client = _client(proxy.url)
    with pytest.raises(requests.exceptions.ConnectionError):
        client.get_bucket(BUCKET, retry=None)

    processed: dict[str, bool] = {}
    for i in range(12):
        name = f"dropped-{i}.txt"
        before = proxy.stats["drop_after"]
        with pytest.raises(requests.exceptions.ConnectionError):
            client.bucket(BUCKET).blob(name).upload_from_string(b"payload", retry=None)
        processed[name] = proxy.stats["drop_after"] == before + 1

    stats = proxy.stats
    assert stats["forwarded"] == 0
    assert stats["drop_before"] + stats["drop_after"] == stats["requests"] == 13
    assert 0 < sum(processed.values()) < len(processed)  # both kinds occurred
    bucket = direct_client.bucket(BUCKET)
    for name, upstream_saw_it in processed.items():
        assert (bucket.get_blob(name) is not None) == upstream_saw_it, name


def test_fault_positions_are_seeded_and_binomial(make_proxy: MakeProxy) -> None:
    n, p, seed = 200, 0.3, 1234

    def pattern(proxy: FaultProxy) -> list[bool]:
        out = []
        with requests.Session() as session:
            for _ in range(n):
                resp = session.get(f"{proxy.url}/storage/v1/b/{BUCKET}", timeout=10)
                assert resp.status_code in (200, 503)
                out.append(resp.status_code == 503)
        return out

    first = pattern(make_proxy(seed=seed, rate_503=p))
    second = pattern(make_proxy(seed=seed, rate_503=p))
    other = pattern(make_proxy(seed=seed + 1, rate_503=p))

    faults = sum(first)
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    assert abs(faults - mean) <= 4 * sd, faults
    assert first == second
    assert first != other
    # One uniform draw per request, in arrival order (documented contract).
    rng = random.Random(seed)
    assert first == [rng.random() < p for _ in range(n)]


def test_max_consecutive_faults_cap(make_proxy: MakeProxy) -> None:
    proxy = make_proxy(rate_503=1.0, max_consecutive_faults=2)
    codes = [
        requests.get(f"{proxy.url}/storage/v1/b/{BUCKET}", timeout=10).status_code for _ in range(6)
    ]
    assert codes == [503, 503, 200, 503, 503, 200]

    proxy.reset_stats()
    assert proxy.stats == dict.fromkeys(STAT_KEYS, 0)
    # The client's own retry gets through once the cap forces a pass-through.
    fast_retry = DEFAULT_RETRY.with_delay(initial=0.01, maximum=0.02)
    assert _client(proxy.url).get_bucket(BUCKET, retry=fast_retry).name == BUCKET
    assert proxy.stats == {**dict.fromkeys(STAT_KEYS, 0), "requests": 3, "503": 2, "forwarded": 1}


def test_upstream_down_gives_502() -> None:
    with FaultProxy(f"http://127.0.0.1:{_free_port()}", FaultConfig()) as proxy:
        resp = requests.get(f"{proxy.url}/storage/v1/b/x", timeout=10)
    assert resp.status_code == 502
    assert resp.json()["error"]["code"] == 502


# -- configuration and lifecycle ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate_503": -0.1}, "rate_503"),
        ({"rate_429": 1.5}, "rate_429"),
        ({"rate_drop": math.nan}, "rate_drop"),
        ({"rate_503": "0.5"}, "rate_503"),
        ({"rate_503": 0.6, "rate_429": 0.3, "rate_drop": 0.2}, "sum to at most 1"),
        ({"max_consecutive_faults": -1}, "max_consecutive_faults"),
    ],
)
def test_fault_config_rejects_bad_values(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FaultConfig(**kwargs)  # type: ignore[arg-type]


def test_fault_config_accepts_edges() -> None:
    config = FaultConfig(rate_503=0.5, rate_429=0.25, rate_drop=0.25)
    assert config.fault_rate == 1.0
    with pytest.raises(TypeError):
        FaultConfig(0, 0.1)  # type: ignore[call-arg]  # keyword-only
    with pytest.raises(AttributeError):
        config.rate_503 = 0.0  # type: ignore[misc]  # frozen


def test_proxy_lifecycle_and_bad_upstream(emulator_url: str) -> None:
    with pytest.raises(ValueError, match="http://host:port"):
        FaultProxy("https://example.com", FaultConfig())
    proxy = FaultProxy(emulator_url, FaultConfig())
    with pytest.raises(RuntimeError):
        _ = proxy.url
    with proxy:
        assert proxy.running
        assert proxy.url == f"http://127.0.0.1:{proxy.port}"
        with pytest.raises(RuntimeError):
            proxy.start()
    assert not proxy.running
    proxy.stop()  # idempotent


def test_cli_prints_export_line_and_stops_on_sigterm(emulator_url: str) -> None:
    src_dir = Path(fault_proxy.__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src_dir), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "vertex_patterns.emulators.fault_proxy",
        "--upstream",
        emulator_url,
        "--port",
        "0",
        "--seed",
        "3",
        "--rate-503",
        "1.0",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        prefix = "export STORAGE_EMULATOR_HOST="
        assert line.startswith(prefix + "http://127.0.0.1:"), line
        url = line[len(prefix) :]
        assert requests.get(f"{url}/storage/v1/b/{BUCKET}", timeout=10).status_code == 503
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert '"503": 1' in err
