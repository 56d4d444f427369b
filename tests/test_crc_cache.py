"""The CRC32C remembered beside a local file: used only while the file is provably unchanged."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from vertex_patterns.storage import LocalBackend, crc32c_bytes, parse_uri
from vertex_patterns.storage.crc_cache import (
    CTIME_SLACK_NS,
    RACY_WINDOW_NS,
    XATTR_NAME,
    cached_crc32c,
    crc32c_file_cached,
)


def _xattrs_supported(path: str) -> bool:
    try:
        os.setxattr(path, "user.vp.probe", b"1")
        os.removexattr(path, "user.vp.probe")
    except (OSError, AttributeError):
        return False
    return True


@pytest.fixture
def at_rest(tmp_path) -> str:
    """A file whose last change is older than the racy window (so it may be remembered)."""
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(5000))
    if not _xattrs_supported(str(path)):
        pytest.skip("this filesystem has no user extended attributes")
    time.sleep(2 * RACY_WINDOW_NS / 1e9)
    return str(path)


def _rewrite_in_place_keeping_mtime(path: str, data: bytes) -> None:
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        st.st_size, st.st_mtime_ns, st.st_ino)


class TestRememberedWhileUnchanged:
    """A checksum computed from a file at rest is remembered and returned while it is unchanged."""

    def test_remembered_and_reused(self, at_rest: str) -> None:
        with open(at_rest, "rb") as f:
            expected = crc32c_bytes(f.read())
        assert crc32c_file_cached(at_rest) == expected
        assert len(os.getxattr(at_rest, XATTR_NAME)) < 64  # fits inside an ext4 inode
        assert cached_crc32c(at_rest, os.stat(at_rest)) == expected


class TestChangedFilesAreReread:
    """Same size and mtime are not enough: an in-place change (ctime moves) or another inode
    makes the remembered checksum unusable, and the bytes are read again."""

    def test_rewrite_with_mtime_restored(self, at_rest: str) -> None:
        crc32c_file_cached(at_rest)
        time.sleep(2 * CTIME_SLACK_NS / 1e9)  # the documented blind window after storing
        new = os.urandom(5000)
        _rewrite_in_place_keeping_mtime(at_rest, new)
        assert cached_crc32c(at_rest, os.stat(at_rest)) is None
        assert crc32c_file_cached(at_rest) == crc32c_bytes(new)

    def test_copy_with_attributes_is_another_file(self, at_rest: str, tmp_path) -> None:
        crc32c_file_cached(at_rest)
        copy = str(tmp_path / "copy.bin")
        shutil.copy2(at_rest, copy)  # copies the xattr and the mtime, not the inode
        assert os.getxattr(copy, XATTR_NAME) == os.getxattr(at_rest, XATTR_NAME)
        assert cached_crc32c(copy, os.stat(copy)) is None

    def test_garbage_attribute_is_ignored(self, at_rest: str) -> None:
        os.setxattr(at_rest, XATTR_NAME, b"v1 AAAAAA== 5000 1 2 3")  # another format
        assert cached_crc32c(at_rest, os.stat(at_rest)) is None


class TestRacyFilesAreNotRemembered:
    """A file changed just before it is read is checksummed but not remembered (a write in
    the same timestamp tick could go unseen)."""

    def test_fresh_file(self, tmp_path) -> None:
        path = tmp_path / "fresh.bin"
        path.write_bytes(b"just written")
        if not _xattrs_supported(str(path)):
            pytest.skip("this filesystem has no user extended attributes")
        assert crc32c_file_cached(str(path)) == crc32c_bytes(b"just written")
        with pytest.raises(OSError):
            os.getxattr(str(path), XATTR_NAME)


class TestWrittenFilesCarryTheirChecksum:
    """A file this library writes by copying carries its verified CRC32C from the start."""

    def test_local_copy(self, at_rest: str, tmp_path) -> None:
        target = str(tmp_path / "out" / "copy.bin")
        info = LocalBackend().upload_file(at_rest, parse_uri(target))
        assert cached_crc32c(target, os.stat(target)) == info.crc32c
        with open(target, "rb") as f:
            assert info.crc32c == crc32c_bytes(f.read())
