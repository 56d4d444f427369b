"""The direct (urllib3) GCS path: paginated listings, and when it steps aside for the library."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vertex_patterns.storage import GcsBackend, RetryPolicy, parse_uri
from vertex_patterns.storage.gcs_direct import DirectHttp

PAGES = {
    None: {"items": [{"bucket": "bkt", "name": f"p/a{i}", "size": "1", "crc32c": "AAAAAA==",
                      "generation": str(100 + i), "updated": "2026-01-02T03:04:05.678Z"}
                     for i in range(3)],
           "nextPageToken": "t1"},
    "t1": {"items": [{"bucket": "bkt", "name": "p/b", "size": "2", "crc32c": "AAAAAQ==",
                      "generation": "7", "updated": "2026-01-02T03:04:05Z"}]},
}


class _PagingHandler(BaseHTTPRequestHandler):
    """Answers objects.list for bucket "bkt" in two pages, as GCS paginates."""

    seen: list[dict[str, list[str]]] = []

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        type(self).seen.append(query)
        if url.path != "/storage/v1/b/bkt/o":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps(PAGES[query.get("pageToken", [None])[0]]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def paging_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PagingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _PagingHandler.seen = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class TestPaginatedListing:
    """A listing follows nextPageToken to the end, with the prefix on every page."""

    def test_two_pages(self, paging_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
        for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                    "ALL_PROXY"):
            monkeypatch.delenv(var, raising=False)
        backend = GcsBackend(endpoint=paging_server, retry=RetryPolicy(max_attempts=1),
                             direct=True)
        infos = list(backend.list(parse_uri("gs://bkt/p")))
        assert [(i.key, i.size, i.generation) for i in infos] == [
            ("a0", 1, 100), ("a1", 1, 101), ("a2", 1, 102), ("b", 2, 7)]
        assert infos[0].updated is not None and infos[0].updated.microsecond == 678000
        assert [q.get("pageToken") for q in _PagingHandler.seen] == [None, ["t1"]]
        assert all(q["prefix"] == ["p/"] for q in _PagingHandler.seen)


class TestStepsAsideForProxies:
    """With a proxy variable set, the direct path is not used (the library honours proxies)."""

    def test_proxy_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
        backend = GcsBackend(endpoint="http://127.0.0.1:9")
        assert not DirectHttp(timeout=(1.0, 1.0)).usable(backend.client())

    def test_no_proxy(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                    "ALL_PROXY"):
            monkeypatch.delenv(var, raising=False)
        backend = GcsBackend(endpoint="http://127.0.0.1:9")
        assert DirectHttp(timeout=(1.0, 1.0)).usable(backend.client())


class TestDirectRoundTrip:
    """With VERTEX_PATTERNS_GCS_DIRECT=1 the opt-in direct path carries a replication
    local -> gs -> gs -> local against the emulator and every byte arrives verified."""

    def test_replicate_through_direct_path(self, tmp_path, make_bucket,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
        from conftest import read_tree
        from vertex_patterns.replication import replicate
        from vertex_patterns.storage import Storage

        monkeypatch.setenv("VERTEX_PATTERNS_GCS_DIRECT", "1")
        store = Storage()
        assert store.gcs._direct.usable(store.gcs.client())
        files = {f"d/{i}.bin": bytes([i]) * (1000 + i * 4099) for i in range(12)}
        src = tmp_path / "src"
        for key, data in files.items():
            (src / key).parent.mkdir(parents=True, exist_ok=True)
            (src / key).write_bytes(data)
        a, b = f"gs://{make_bucket('da')}/x", f"gs://{make_bucket('db')}/y"
        for s, d in ((str(src), a), (a, b), (b, str(tmp_path / "out"))):
            report = replicate(s, [d], progress=False, storage=store)
            assert report.ok, report.to_table()
        assert read_tree(store, b) == files
        assert read_tree(store, str(tmp_path / "out")) == files
