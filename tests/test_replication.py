"""Replication: incremental, verified, fan-out, --delete safety, dry run, path escapes."""

from __future__ import annotations

import os
import time

import pytest

from conftest import read_tree, write_tree
from vertex_patterns.errors import ConfigError
from vertex_patterns.replication import replicate
from vertex_patterns.storage import Storage, crc32c_bytes
from vertex_patterns.storage.crc_cache import CTIME_SLACK_NS, RACY_WINDOW_NS, cached_crc32c

FILES = {f"part-{i:03d}.bin": os.urandom(1000 + i) for i in range(30)} | {
    "nested/dir/meta.json": b'{"x": 1}'
}


class TestFanOut:
    """Every source object reaches every destination, local and gs:// mixed, verified."""

    def test_local_to_many(self, store: Storage, make_bucket, tmp_path) -> None:
        src = str(tmp_path / "src")
        write_tree(store, src, FILES)
        dests = [f"gs://{make_bucket('us')}/data", f"gs://{make_bucket('eu')}/data",
                 str(tmp_path / "copy")]
        report = replicate(src, dests, workers=4, progress=False)
        assert report.ok
        for d, dest in zip(report.destinations, dests, strict=True):
            assert (d.copied, d.skipped, d.failed) == (len(FILES), 0, 0)
            assert d.bytes_copied == sum(map(len, FILES.values()))
            assert read_tree(store, dest) == FILES

    def test_gs_to_gs_is_server_side(self, store: Storage, make_bucket) -> None:
        src = f"gs://{make_bucket('src')}/data"
        write_tree(store, src, FILES)
        dst = f"gs://{make_bucket('dst')}/mirror"
        report = replicate(src, [dst], progress=False)
        assert report.ok and report.destinations[0].copied == len(FILES)
        assert report.destinations[0].bytes_through_client == 0
        assert read_tree(store, dst) == FILES


class TestIncremental:
    """Unchanged objects (same size and CRC32C) are skipped; changed ones are copied."""

    def test_rerun_copies_nothing_then_only_changes(
        self, store: Storage, make_bucket, tmp_path
    ) -> None:
        src = f"gs://{make_bucket('src')}/d"
        write_tree(store, src, FILES)
        dests = [f"gs://{make_bucket('dst')}/d", str(tmp_path / "local")]
        assert replicate(src, dests, progress=False).ok
        again = replicate(src, dests, progress=False)
        assert [(d.copied, d.skipped) for d in again.destinations] == [(0, len(FILES))] * 2
        # Same size, different bytes: mtime or size alone would miss this change.
        store.write_bytes(f"{src}/part-000.bin", bytes(1000))
        third = replicate(src, dests, progress=False)
        assert [(d.copied, d.skipped) for d in third.destinations] == [(1, len(FILES) - 1)] * 2
        assert store.read_bytes(f"{dests[1]}/part-000.bin") == bytes(1000)


def _rewrite_keeping_size_and_mtime(path: str, data: bytes) -> None:
    st = os.stat(path)
    assert len(data) == st.st_size
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


class TestRememberedChecksums:
    """After a local run both sides carry their CRC32C (an unchanged re-run reads no file);
    a file changed in place with its size and mtime restored is still copied again."""

    def test_local_to_local(self, store: Storage, tmp_path) -> None:
        src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
        write_tree(store, src, FILES)
        try:
            os.setxattr(src, "user.vp.probe", b"1")
        except OSError:
            pytest.skip("this filesystem has no user extended attributes")
        time.sleep(2 * RACY_WINDOW_NS / 1e9)  # sources at rest may be remembered
        assert replicate(src, [dst], progress=False).ok
        for root in (src, dst):
            for key, data in FILES.items():
                path = os.path.join(root, *key.split("/"))
                assert cached_crc32c(path, os.stat(path)) == crc32c_bytes(data)
        again = replicate(src, [dst], progress=False)
        assert (again.destinations[0].copied, again.destinations[0].skipped) == (0, len(FILES))
        time.sleep(2 * CTIME_SLACK_NS / 1e9)
        _rewrite_keeping_size_and_mtime(os.path.join(dst, "part-001.bin"), bytes(1001))
        third = replicate(src, [dst], progress=False)
        assert third.destinations[0].copied == 1
        new_source = os.urandom(1002)
        _rewrite_keeping_size_and_mtime(os.path.join(src, "part-002.bin"), new_source)
        fourth = replicate(src, [dst], progress=False)
        assert fourth.destinations[0].copied == 1
        assert read_tree(store, dst) == FILES | {"part-002.bin": new_source}


class TestDelete:
    """--delete prunes extra objects, but never empties destinations from an empty source."""

    def test_delete_extra(self, store: Storage, make_bucket) -> None:
        src, dst = f"gs://{make_bucket('s')}/d", f"gs://{make_bucket('d')}/d"
        write_tree(store, src, {"keep": b"1"})
        write_tree(store, dst, {"keep": b"1", "stale": b"2", "old/x": b"3"})
        no_delete = replicate(src, [dst], progress=False)
        assert no_delete.destinations[0].deleted == 0 and store.exists(f"{dst}/stale")
        report = replicate(src, [dst], delete=True, progress=False)
        assert report.destinations[0].deleted == 2
        assert read_tree(store, dst) == {"keep": b"1"}

    def test_empty_source_refused(self, store: Storage, make_bucket) -> None:
        src, dst = f"gs://{make_bucket('s')}/empty", f"gs://{make_bucket('d')}/d"
        write_tree(store, dst, {"precious": b"1"})
        with pytest.raises(ConfigError, match="allow-empty-source"):
            replicate(src, [dst], delete=True, progress=False)
        assert store.exists(f"{dst}/precious")
        report = replicate(src, [dst], delete=True, allow_empty_source=True, progress=False)
        assert report.ok and report.destinations[0].deleted == 1


class TestDryRun:
    """--dry-run prints the plan and writes nothing."""

    def test_nothing_written(self, store: Storage, make_bucket, tmp_path, capsys) -> None:
        src = str(tmp_path / "src")
        write_tree(store, src, {"a": b"1", "b": b"2"})
        dst = f"gs://{make_bucket('d')}/d"
        write_tree(store, dst, {"extra": b"x"})
        report = replicate(src, [dst], delete=True, dry_run=True, progress=False)
        assert (report.destinations[0].copied, report.destinations[0].deleted) == (2, 1)
        out = capsys.readouterr().out
        assert "would copy" in out and "would delete" in out
        assert read_tree(store, dst) == {"extra": b"x"}


class TestPathEscape:
    """Object names that would escape a local destination are refused; nothing lands outside."""

    def test_escaping_names_fail_others_copy(self, store: Storage, bucket: str, tmp_path) -> None:
        client = store.gcs.client()
        # The emulator cannot store names with '..' segments (tests/test_uri.py covers those);
        # these it stores: a backslash, a '.' segment, and '//' (an absolute key, "/y").
        names = ["data/ok.txt", "data/a\\b.txt", "data/./x", "data//y"]
        for name in names:
            client.bucket(bucket).blob(name).upload_from_string(b"x")
        dest = tmp_path / "dest"
        report = replicate(f"gs://{bucket}/data", [str(dest)], progress=False)
        assert not report.ok
        assert report.destinations[0].copied == 1
        assert report.destinations[0].failed == 3
        assert all("refusing" in e for e in report.destinations[0].errors)
        assert sorted(os.listdir(tmp_path)) == ["dest"]
        assert [p.name for p in dest.rglob("*")] == ["ok.txt"]


    def test_symlinked_directory_pointing_outside(self, store: Storage, tmp_path) -> None:
        src, dest, outside = tmp_path / "src", tmp_path / "dest", tmp_path / "outside"
        write_tree(store, str(src), {"inside/x": b"1", "link/y": b"2"})
        outside.mkdir()
        dest.mkdir()
        (dest / "link").symlink_to(outside, target_is_directory=True)
        report = replicate(str(src), [str(dest)], progress=False)
        assert report.destinations[0].copied == 1 and report.destinations[0].failed == 1
        assert "resolves outside" in report.destinations[0].errors[0]
        assert list(outside.iterdir()) == []
        assert (dest / "inside" / "x").read_bytes() == b"1"


class TestBadInput:
    """Bad input raises ConfigError before anything is written."""

    @pytest.mark.parametrize("dst_suffix", ["", "/inside"])
    def test_destination_in_source(self, store: Storage, bucket: str, dst_suffix: str) -> None:
        write_tree(store, f"gs://{bucket}/d", {"a": b"1"})
        with pytest.raises(ConfigError, match="source"):
            replicate(f"gs://{bucket}/d", [f"gs://{bucket}/d{dst_suffix}"], progress=False)
        assert [o.key for o in store.list(f"gs://{bucket}")] == ["d/a"]

    def test_missing_buckets(self, store: Storage, bucket: str, tmp_path) -> None:
        with pytest.raises(ConfigError, match="gs://no-such-src-bkt"):
            replicate("gs://no-such-src-bkt/x", [str(tmp_path / "d")], progress=False)
        write_tree(store, f"gs://{bucket}/d", {"a": b"1"})
        with pytest.raises(ConfigError, match="gs://no-such-dst-bkt"):
            replicate(f"gs://{bucket}/d", [str(tmp_path / "d"), "gs://no-such-dst-bkt/x"],
                      progress=False)
        assert not (tmp_path / "d").exists()  # nothing written to the good destination

    def test_missing_local_source(self, tmp_path) -> None:
        with pytest.raises(ConfigError, match="does not exist"):
            replicate(str(tmp_path / "nope"), [str(tmp_path / "d")], progress=False)
