"""A file's CRC32C remembered in an extended attribute, so unchanged files need no re-read.

Replication decides "same object" by size and CRC32C. For local files that means reading
every byte on every run, which makes an unchanged re-run cost nearly as much as the first
copy. This module stores the checksum beside the file, in the `user.vp.crc32c` extended
attribute, together with what identifies the file's state when it was computed: 37 bytes,
little-endian `<B4sQqQq>` = format version (1), the CRC32C's 4 bytes, size, mtime_ns, inode,
stored_ns. (Small enough to live inside an ext4 inode: a value of 64 bytes or more takes a
4 KiB block of its own per file.)

A cached value is used only when size, mtime_ns and inode all still match AND the file's
ctime is no later than `stored_ns` plus a small slack. ctime cannot be set from user space
and moves on every write, truncate, `utime`, rename or attribute change, so a file modified
and then given its old mtime back (`touch -r`, `cp -p` in place) is caught by it; mtime alone
is never trusted. ctime itself cannot be stored: writing the attribute changes it, which is
why the store time stands in for it.

Timestamps have a granularity (a clock tick, or coarser on some filesystems), so two writes
within one tick can leave identical timestamps. Two rules keep that from fooling the cache:

- a checksum computed by reading a file is stored only when the file's ctime was already
  older than a window before the read began and did not move during the read (git's
  "racily clean" rule): a write during or after the read then always gets a later ctime.
  The window is `RACY_WINDOW_NS` (many clock ticks: Linux filesystems with nanosecond
  timestamps advance them at least every 10 ms), or `RACY_WINDOW_COARSE_NS` for a file whose
  ctime is a whole second (a filesystem with 1 s timestamps, such as ext4 with 128-byte
  inodes);
- a checksum of bytes this process just wrote (to a temporary file nobody else knows the
  name of) is stored once the file is renamed into place, with the size and mtime the file
  had after our last write: anyone's later write makes the record unusable.

What remains is a write to a file within `CTIME_SLACK_NS` (plus a clock tick) after the
attribute was stored that also restores size and mtime exactly; replication accepts that
window. Filesystems without user extended attributes (or read-only ones, or files we may not
change) simply get no cache, silently. Integrity checks that must catch bit rot (checkpoint
verification) never use this cache: they read the bytes.
"""

from __future__ import annotations

import base64
import contextlib
import os
import struct
import time

from vertex_patterns.storage.checksum import CHUNK_SIZE, crc32c_extend_buffer, encode_crc32c

XATTR_NAME = "user.vp.crc32c"
# A file whose last change is younger than this when we start reading it is not cached.
RACY_WINDOW_NS = 100_000_000
RACY_WINDOW_COARSE_NS = 2_000_000_000
# How much later than the store time a file's ctime may be: the attribute write itself sets
# it a moment after the store time was read. Larger gaps (a thread preempted in between)
# only make the remembered value unusable.
CTIME_SLACK_NS = 50_000_000
_VERSION = 1
_RECORD = struct.Struct("<B4sQqQq")
_HAVE_XATTR = hasattr(os, "getxattr")


def _encode(crc: str, st: os.stat_result, stored_ns: int) -> bytes:
    return _RECORD.pack(_VERSION, base64.b64decode(crc), st.st_size, st.st_mtime_ns,
                        st.st_ino, stored_ns)


def cached_crc32c(path: str | int, st: os.stat_result) -> str | None:
    """The remembered CRC32C of a file, if it is still valid for the file's state `st`.

    Args:
        path: The file's path, or an open descriptor of it.
        st: A fresh `os.stat` / `os.fstat` of the same file.

    Returns:
        The base64 CRC32C, or None when nothing valid is cached (or xattrs are unsupported).
    """
    if not _HAVE_XATTR:
        return None
    try:
        raw = os.getxattr(path, XATTR_NAME)
    except OSError:  # no attribute, no xattr support, no permission
        return None
    try:
        version, crc, size, mtime_ns, ino, stored_ns = _RECORD.unpack(raw)
    except struct.error:  # another format or length
        return None
    valid = (version == _VERSION and size == st.st_size and mtime_ns == st.st_mtime_ns
             and ino == st.st_ino and st.st_ctime_ns <= stored_ns + CTIME_SLACK_NS)
    return base64.b64encode(crc).decode("ascii") if valid else None


def remember_written_crc32c(fd: int, crc: str, written: os.stat_result) -> None:
    """Stores `crc` for the file this process just wrote and renamed into place.

    Args:
        fd: The file, still open after the rename.
        crc: The CRC32C of the bytes written.
        written: `os.fstat` of the file after its last write. Its size and mtime are what
            the record holds, so a write by anyone else after that makes it unusable.

    Failures (no xattr support, a read-only filesystem) are ignored.
    """
    if _HAVE_XATTR:
        with contextlib.suppress(OSError):
            os.setxattr(fd, XATTR_NAME, _encode(crc, written, time.time_ns()))


def _same_state(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns, a.st_ino) == (
        b.st_size, b.st_mtime_ns, b.st_ctime_ns, b.st_ino)


def remember_read_crc32c(
    fd: int,
    crc: str,
    before: os.stat_result,
    started_ns: int,
    after: os.stat_result | None = None,
) -> None:
    """Stores the CRC32C of a file's bytes read between `started_ns` and now, if safe.

    Args:
        fd: The file, still open.
        crc: The CRC32C of everything read from it.
        before: Its `os.fstat` taken before the first read.
        started_ns: `time.time_ns()` before the first read.
        after: Its `os.fstat` taken after the last read (taken here when not given).
    """
    coarse = before.st_ctime_ns % 1_000_000_000 == 0
    window = RACY_WINDOW_COARSE_NS if coarse else RACY_WINDOW_NS
    if not _HAVE_XATTR or before.st_ctime_ns >= started_ns - window:
        return
    with contextlib.suppress(OSError):
        if after is None:
            after = os.fstat(fd)
        if _same_state(before, after):
            os.setxattr(fd, XATTR_NAME, _encode(crc, after, time.time_ns()))


def forget_crc32c(path: str) -> None:
    """Removes a remembered CRC32C (benchmarks use it to measure a cold first run)."""
    if _HAVE_XATTR:
        with contextlib.suppress(OSError):
            os.removexattr(path, XATTR_NAME)


def crc32c_file_cached(path: str, *, remember: bool = True) -> str:
    """A local file's CRC32C: the remembered one when still valid, else read (and remember) it.

    Args:
        path: The file.
        remember: Store a newly computed CRC32C (when safe, see `remember_read_crc32c`).

    Raises:
        FileNotFoundError: The file does not exist.
    """
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        before = os.fstat(fd)
        crc = cached_crc32c(fd, before)
        if crc is not None:
            return crc
        started = time.time_ns()
        value = 0
        buf = bytearray(min(CHUNK_SIZE, max(before.st_size, 1)))
        view = memoryview(buf)
        while n := f.readinto(view):
            value = crc32c_extend_buffer(value, view[:n])
        crc = encode_crc32c(value)
        if remember:
            remember_read_crc32c(fd, crc, before, started)
        return crc
