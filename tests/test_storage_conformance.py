"""One conformance suite, run against both backends: local disk and GCS, the latter on each
of two independent emulators (fake-gcs-server and gcp-storage-emulator, both behind the
front that adds what GCS does and they do not)."""

from __future__ import annotations

import os
import time

import pytest

from conftest import read_tree, write_tree
from vertex_patterns.emulators.gcs import DEFAULT_KIND
from vertex_patterns.errors import NotFoundError
from vertex_patterns.storage import Storage, crc32c_bytes, crc32c_file
from vertex_patterns.storage.crc_cache import RACY_WINDOW_NS, cached_crc32c


@pytest.fixture(autouse=True)
def _on_each_emulator(request: pytest.FixtureRequest, each_gcs_emulator) -> None:
    """Every test here runs once per GCS emulator (STORAGE_EMULATOR_HOST set for it); the
    local-disk variant only once."""
    params = getattr(request.node, "callspec", None)
    params = params.params if params is not None else {}
    if params.get("root_uri") == "local" and params.get("each_gcs_emulator") != DEFAULT_KIND:
        pytest.skip("local disk involves no emulator: run once")


class TestReadWriteList:
    """What is written reads back byte for byte and lists recursively with its metadata."""

    def test_round_trip_and_listing(self, store: Storage, root_uri: str) -> None:
        files = {"a.txt": b"alpha", "sub/b.bin": os.urandom(1000), "sub/deeper/c": b""}
        write_tree(store, root_uri, files)
        assert read_tree(store, root_uri) == files
        listed = {o.key: o for o in store.list(root_uri, with_crc32c=True)}
        assert set(listed) == set(files)
        for key, data in files.items():
            assert listed[key].size == len(data)
            assert listed[key].crc32c == crc32c_bytes(data)
            assert listed[key].updated is not None
        if root_uri.startswith("gs://"):
            assert all(o.generation for o in listed.values())
            assert listed["a.txt"].md5 is not None

    def test_listing_a_prefix_is_directory_like(self, store: Storage, root_uri: str) -> None:
        write_tree(store, root_uri, {"data/x": b"1", "database/y": b"2"})
        assert [o.key for o in store.list(f"{root_uri}/data")] == ["x"]
        assert list(store.list(f"{root_uri}/missing")) == []

    def test_stat_exists_delete(self, store: Storage, root_uri: str) -> None:
        uri = f"{root_uri}/obj"
        assert store.stat(uri) is None and not store.exists(uri)
        store.write_bytes(uri, b"hello")
        info = store.stat(uri)
        assert info is not None and info.size == 5 and info.crc32c == crc32c_bytes(b"hello")
        assert store.exists(uri)
        store.delete(uri)
        assert not store.exists(uri)
        store.delete(uri)  # deleting a missing object is not an error

    def test_overwrite_replaces_whole_object(self, store: Storage, root_uri: str) -> None:
        uri = f"{root_uri}/obj"
        store.write_bytes(uri, b"first version, longer")
        store.write_bytes(uri, b"second")
        assert store.read_bytes(uri) == b"second"

    def test_read_missing_raises_not_found(self, store: Storage, root_uri: str) -> None:
        with pytest.raises(NotFoundError, match="obj-missing"):
            store.read_bytes(f"{root_uri}/obj-missing")


class TestStreaming:
    """Files stream up and down (a resumable upload above 8 MiB) and verify by CRC32C."""

    def test_upload_download_large(self, store: Storage, root_uri: str, tmp_path) -> None:
        src = tmp_path / "big.bin"
        src.write_bytes(os.urandom(9 * 1024 * 1024 + 123))
        time.sleep(RACY_WINDOW_NS / 1e9 + 0.05)  # old enough for its CRC32C to be remembered
        info = store.upload_file(str(src), f"{root_uri}/big.bin")
        assert info.size == src.stat().st_size
        assert info.crc32c == crc32c_file(str(src))
        # What the upload remembers as the source's CRC32C is that of its bytes.
        assert cached_crc32c(str(src), os.stat(src)) == crc32c_file(str(src))
        out = tmp_path / "out" / "big.bin"
        store.download_file(f"{root_uri}/big.bin", str(out))
        assert out.read_bytes() == src.read_bytes()
        assert [p for p in os.listdir(out.parent) if "vptmp" in p] == []

    def test_copy_across_backends(
        self, store: Storage, root_uri: str, make_bucket, tmp_path
    ) -> None:
        store.write_bytes(f"{root_uri}/x", b"payload")
        src = store.stat(f"{root_uri}/x")
        assert src is not None
        targets = [str(tmp_path / "local-copy"), f"gs://{make_bucket('copy')}/x"]
        for target in targets:
            result = store.copy(src, target)
            assert store.read_bytes(target) == b"payload"
            server_side = root_uri.startswith("gs://") and target.startswith("gs://")
            assert result.bytes_through_client == (0 if server_side else len(b"payload"))


class TestBothUploadPaths:
    """Files above the one-request upload size go as the library's resumable upload; both
    paths store the same bytes and verify their CRC32C, and a re-run skips either."""

    def test_small_limit(self, store: Storage, make_bucket, tmp_path) -> None:
        from vertex_patterns.replication import replicate
        from vertex_patterns.storage import GcsBackend

        src = tmp_path / "src"
        src.mkdir()
        files = {"small.bin": os.urandom(1000), "big.bin": os.urandom(3 * 1024 * 1024 + 7)}
        for name, data in files.items():
            (src / name).write_bytes(data)
        limited = Storage(gcs=GcsBackend(direct_upload_max=1024 * 1024))
        dst = f"gs://{make_bucket('paths')}/d"
        report = replicate(str(src), [dst], storage=limited, progress=False)
        assert report.ok and report.destinations[0].copied == 2
        assert read_tree(store, dst) == files
        listed = {o.key: o.crc32c for o in store.list(dst)}
        assert listed == {k: crc32c_bytes(v) for k, v in files.items()}
        again = replicate(str(src), [dst], storage=limited, progress=False)
        assert again.destinations[0].skipped == 2


class TestLibraryAndDirectPaths:
    """Replication gives the same result whether GCS calls go directly over urllib3 or all
    through google-cloud-storage (the path used where proxies are configured)."""

    @pytest.mark.parametrize("direct", [True, False], ids=["direct", "library"])
    def test_round_trip(self, store: Storage, make_bucket, tmp_path, direct: bool) -> None:
        from vertex_patterns.replication import replicate
        from vertex_patterns.storage import GcsBackend

        files = {"a.bin": os.urandom(1000), "d/b.bin": os.urandom(2 * 1024 * 1024 + 1),
                 "d/e/c.bin": b""}
        src = tmp_path / "src"
        for name, data in files.items():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes(data)
        via = Storage(gcs=GcsBackend(direct=direct))
        first, second = f"gs://{make_bucket('one')}/d", f"gs://{make_bucket('two')}/d"
        back = str(tmp_path / "back")
        for s, d in [(str(src), first), (first, second), (second, back)]:
            report = replicate(s, [d], storage=via, progress=False)
            assert report.ok and report.destinations[0].copied == len(files)
            assert read_tree(store, d) == files
            again = replicate(s, [d], storage=via, progress=False)
            assert again.destinations[0].skipped == len(files)
        assert report.destinations[0].bytes_through_client == sum(map(len, files.values()))


class TestMissingBucket:
    """A missing bucket is a NotFoundError naming it, not an empty listing."""

    def test_list_missing_bucket(self, store: Storage) -> None:
        with pytest.raises(NotFoundError, match="gs://no-such-bucket-xyz"):
            list(store.list("gs://no-such-bucket-xyz/data"))
        assert not store.bucket_exists("gs://no-such-bucket-xyz")


class TestLocalAtomicity:
    """Local writes go to a temporary name; listings never show temporary files."""

    def test_temp_files_hidden_and_cleaned(self, store: Storage, tmp_path) -> None:
        from vertex_patterns.storage.local import remove_stale_temp_files

        root = tmp_path / "r"
        root.mkdir()
        (root / "real").write_bytes(b"x")
        # A temporary file left by a crashed writer (pid 999999 does not run).
        (root / ".real.vptmp-999999-0123abcd").write_bytes(b"partial")
        assert [o.key for o in store.list(str(root))] == ["real"]
        assert remove_stale_temp_files(str(root)) == 1
        assert sorted(os.listdir(root)) == ["real"]

    def test_new_file_needs_commit(self, tmp_path) -> None:
        from vertex_patterns.storage.local_write import NewFile

        final = tmp_path / "sub" / "f.bin"
        with NewFile(str(final)) as f:
            f.write(b"never committed")
        assert list(tmp_path.rglob("*.bin*")) == []
        with pytest.raises(RuntimeError), NewFile(str(final)) as f:
            f.write(b"half")
            raise RuntimeError("crash mid-write")
        assert list(tmp_path.rglob("*.bin*")) == []
        with NewFile(str(final)) as f:
            f.write(b"whole")
            f.commit()
        assert final.read_bytes() == b"whole"
        assert sorted(p.name for p in final.parent.iterdir()) == ["f.bin"]

    def test_failed_write_leaves_nothing(self, tmp_path) -> None:
        from vertex_patterns.storage.local import atomic_write

        final = tmp_path / "f.bin"
        with pytest.raises(RuntimeError), atomic_write(str(final)) as f:
            f.write(b"half")
            raise RuntimeError("crash mid-write")
        assert os.listdir(tmp_path) == []
