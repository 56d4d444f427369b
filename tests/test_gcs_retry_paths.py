"""The retry-safety paths of the GCS backend, each driven for real through the fault proxy in
front of an emulator that honours preconditions and splits rewrites: take a path out of
`storage/gcs.py` and its test here fails."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from vertex_patterns.emulators.fault_proxy import FaultConfig, FaultProxy
from vertex_patterns.emulators.gcs import GcsEmulator
from vertex_patterns.errors import PreconditionFailedError
from vertex_patterns.storage import GcsBackend, ObjectInfo, RetryPolicy, Storage, crc32c_bytes
from vertex_patterns.storage.uri import parse_uri

FAST_RETRY = RetryPolicy(max_attempts=5, initial_backoff_s=0.001, max_backoff_s=0.01, seed=1)
PATHS = pytest.mark.parametrize("direct", [True, False], ids=["direct", "library"])


@pytest.fixture
def proxy(gcs_emulator: GcsEmulator) -> Iterator[FaultProxy]:
    """A proxy with no random faults: tests plan the one they need with `inject`."""
    with FaultProxy(gcs_emulator.url, FaultConfig(seed=0)) as p:
        yield p


def via(proxy: FaultProxy, *, direct: bool = True, **kwargs) -> Storage:
    return Storage(gcs=GcsBackend(endpoint=proxy.url, retry=FAST_RETRY, direct=direct,
                                  **kwargs))


class TestLostResponseIsAccepted:
    """A write whose response was lost after the server stored it is retried, meets 412 (its
    own object now exists), and is accepted because the object holds our bytes."""

    @PATHS
    def test_write_bytes(self, store: Storage, bucket: str, proxy: FaultProxy,
                         direct: bool) -> None:
        uri = f"gs://{bucket}/w"
        proxy.inject("drop_after", method="POST", path_contains="/upload/")
        info = via(proxy, direct=direct).write_bytes(uri, b"ours")
        assert info.crc32c == crc32c_bytes(b"ours") and store.read_bytes(uri) == b"ours"
        assert proxy.stats["drop_after"] == 1

    @PATHS
    @pytest.mark.parametrize("size", [1000, 2 * 1024 * 1024 + 3], ids=["small", "streamed"])
    def test_upload_file(self, store: Storage, bucket: str, proxy: FaultProxy, tmp_path,
                         direct: bool, size: int) -> None:
        data = os.urandom(size)
        path = tmp_path / "f"
        path.write_bytes(data)
        uri = f"gs://{bucket}/f"
        # The last request of the upload stores the object (a PUT for the library's
        # resumable upload, the POST for a one-request upload).
        proxy.inject("drop_after", method="POST" if direct else None,
                     path_contains="upload")
        info = via(proxy, direct=direct).upload_file(str(path), uri)
        assert info.size == size and store.read_bytes(uri) == data
        assert proxy.stats["drop_after"] == 1

    def test_write_stream(self, store: Storage, bucket: str, proxy: FaultProxy) -> None:
        """The path checkpoint files and manifests take (a resumable upload)."""
        uri = f"gs://{bucket}/s"
        proxy.inject("drop_after", method="PUT")
        result = via(proxy).write_stream(uri, lambda f: f.write(b"stream-bytes"))
        assert result == len(b"stream-bytes")
        assert store.read_bytes(uri) == b"stream-bytes"
        assert proxy.stats["drop_after"] == 1

    @PATHS
    def test_rewrite(self, store: Storage, make_bucket, proxy: FaultProxy,
                     direct: bool) -> None:
        src, dst = f"gs://{make_bucket('rs')}/o", f"gs://{make_bucket('rd')}/o"
        source = store.write_bytes(src, b"copied once")
        proxy.inject("drop_after", path_contains="rewriteTo")
        via(proxy, direct=direct).copy(source, dst)
        assert store.read_bytes(dst) == b"copied once"
        assert proxy.stats["drop_after"] == 1

    def test_someone_elses_object_is_not_accepted(self, store: Storage, bucket: str,
                                                  proxy: FaultProxy) -> None:
        """The 412 of a write that meets other bytes stays an error."""
        uri = f"gs://{bucket}/x"
        store.write_bytes(uri, b"theirs")
        with pytest.raises(PreconditionFailedError):
            via(proxy).gcs.write_stream(parse_uri(uri), lambda f: f.write(b"mine"))
        assert store.read_bytes(uri) == b"theirs"


class TestRewriteTokenLoop:
    """A rewrite larger than one call's share comes back unfinished with a token; the
    backend calls again with it until done."""

    @PATHS
    def test_loops_until_done(self, store: Storage, make_bucket, proxy: FaultProxy,
                              direct: bool) -> None:
        data = os.urandom(3 * 1024 * 1024 + 5)  # four calls of 1 MiB (the front's share)
        src, dst = f"gs://{make_bucket('ls')}/big", f"gs://{make_bucket('ld')}/big"
        source = store.write_bytes(src, data)
        proxy.reset_stats()
        result = via(proxy, direct=direct).copy(source, dst)
        calls = [path for _m, path, _o in proxy.history if "rewriteTo" in path]
        assert len(calls) == 4
        assert ["rewriteToken=" in c for c in calls] == [False, True, True, True]
        assert store.read_bytes(dst) == data
        assert result.bytes_through_client == 0


class TestPinnedDownload:
    """A download is pinned to the generation listed: an object replaced since then fails
    at once with a precondition error, and nothing is written locally."""

    @PATHS
    def test_replaced_object(self, store: Storage, bucket: str, proxy: FaultProxy, tmp_path,
                             direct: bool) -> None:
        uri = f"gs://{bucket}/p"
        listed = store.write_bytes(uri, b"as listed")
        store.write_bytes(uri, b"replaced since")
        proxy.reset_stats()
        out = tmp_path / "out"
        with pytest.raises(PreconditionFailedError):
            via(proxy, direct=direct).gcs.download_file(parse_uri(uri), str(out),
                                                        source=listed)
        gets = [p for m, p, _o in proxy.history if m == "GET" and "alt=media" in p]
        assert len(gets) == 1 and f"ifGenerationMatch={listed.generation}" in gets[0]
        assert not out.exists()


class TestListingResumesPerPage:
    """A listing that fails on page N retries that page from its token, not from page 1."""

    @PATHS
    def test_503_on_a_later_page(self, store: Storage, bucket: str, proxy: FaultProxy,
                                 direct: bool) -> None:
        for i in range(7):
            store.write_bytes(f"gs://{bucket}/l/{i}", b"x")
        proxy.inject("503", method="GET", path_contains="pageToken=", after=1)
        proxy.reset_stats()
        listed = [o.key for o in via(proxy, direct=direct, list_page_size=2)
                  .list(f"gs://{bucket}/l")]
        assert sorted(listed) == [str(i) for i in range(7)]
        pages = [p for m, p, _o in proxy.history if m == "GET" and f"/b/{bucket}/o?" in p]
        assert proxy.stats["503"] == 1
        assert len([p for p in pages if "pageToken=" not in p]) == 1  # page 1 once
        assert len(pages) == 4 + 1  # four pages, one of them twice


class TestBytesThroughClientIsMeasured:
    """`bytes_through_client` counts the object bytes the client sent and received: 0 for a
    server-side copy, and not 0 when the same copy is made through the client."""

    def test_server_side_and_forced_through_client(
        self, store: Storage, make_bucket, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data = os.urandom(5000)
        src = f"gs://{make_bucket('ms')}/o"
        source = store.write_bytes(src, data)
        dst = f"gs://{make_bucket('md')}"
        assert store.copy(source, f"{dst}/a").bytes_through_client == 0

        backend = store.gcs

        def through_client(source: ObjectInfo, location, *, expected_generation):
            # A gs→gs copy made the slow way: download, then upload.
            local = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"vp-{os.getpid()}-copy")
            try:
                backend.download_file(parse_uri(source.uri), local, source=source)
                return backend.upload_file(local, location,
                                           expected_generation=expected_generation)
            finally:
                if os.path.exists(local):
                    os.unlink(local)

        monkeypatch.setattr(backend, "rewrite", through_client)
        assert store.copy(source, f"{dst}/b").bytes_through_client == 2 * len(data)
        assert store.read_bytes(f"{dst}/b") == data
