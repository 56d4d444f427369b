"""The two fast paths of large local files: written at disk speed, read without a copy.

`WritebackFile` starts each piece's write to disk as it arrives, so the copy into the page
cache and the disk write overlap instead of running one after the other. `map_file` reads a
file as a copy-on-write memory map: no byte is copied, whether it is in the page cache or not.
Both are what checkpoint files need (`checkpoint.io`); other files use `storage.local`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import mmap
import os
from collections.abc import Callable
from types import TracebackType

from vertex_patterns.errors import NotFoundError


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's `sync_file_range` (Linux), or None where there is none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


_SYNC_FILE_RANGE = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


class WritebackFile:
    """A new file written front to back whose pages go to disk while it is still written.

    The kernel leaves written pages dirty in memory until a flusher thread or `fsync` gets to
    them, so a plain write-then-fsync (what `dd conv=fsync` does) first copies everything
    into the page cache and only then waits for the disk: the two run one after the other.
    Here every `writeback_bytes` written are handed to the disk at once (Linux
    `sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait), so copying and disk
    writes overlap and `sync` waits only for the tail. Elsewhere it is a plain file.

    Args:
        path: The file to create (truncated if it exists).
        writeback_bytes: How much to write before starting the disk write of it.
    """

    def __init__(self, path: str, *, writeback_bytes: int = 32 * 1024 * 1024) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        self.path = path
        self._fd = os.open(path, flags, 0o666)
        self._writeback_bytes = writeback_bytes
        self._offset = 0
        self._started = 0  # bytes whose write-back has been started

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        """Writes all of `data` (a bytes-like object, not copied)."""
        view = memoryview(data).cast("B")
        n = len(view)
        done = os.write(self._fd, view)
        while done < n:  # short writes: a signal, or a full disk (then the next raises)
            done += os.write(self._fd, view[done:])
        self._offset += n
        if _SYNC_FILE_RANGE is not None and \
                self._offset - self._started >= self._writeback_bytes:
            # Advice only: a failure here surfaces at the fsync in `sync`.
            _SYNC_FILE_RANGE(self._fd, self._started, self._offset - self._started,
                             _SYNC_FILE_RANGE_WRITE)
            self._started = self._offset
        return n

    def flush(self) -> None:
        """Nothing to flush: writes are not buffered."""

    def tell(self) -> int:
        return self._offset

    def fileno(self) -> int:
        return self._fd

    def sync(self) -> None:
        """Waits until everything written is on disk (fsync)."""
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> WritebackFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def map_file(path: str) -> mmap.mmap | bytearray:
    """A file's bytes as a private (copy-on-write) memory map.

    Nothing is copied: the map shares the page cache's pages, so reading a file that is in
    the page cache costs no more than mapping it, and buffers viewed from it (tensors) stay
    valid after the file is deleted or renamed. Writes to the map go to private copies of
    the pages they touch, never to the file. The file must not be rewritten in place while
    the map is alive: a map sees such changes, and one truncated below it faults (SIGBUS).
    The sequential read-ahead hint holds while the caller reads it through once (its
    checksum) and is reset by `reset_access_hint`. An empty file, or one on a filesystem
    that cannot map files, is read into a new buffer instead.

    Raises:
        NotFoundError: No such file.
    """
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            try:
                mapped = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) if size else None
            except OSError:  # e.g. a FUSE mount with direct I/O
                mapped = None
            if mapped is None:
                return _read_all(f, size)
    except FileNotFoundError as exc:
        raise NotFoundError(f"{path}: not found", uri=path) from exc
    if hasattr(mmap, "MADV_SEQUENTIAL"):
        mapped.madvise(mmap.MADV_SEQUENTIAL)  # a cold read goes at disk speed
    return mapped


def _read_all(f: io.RawIOBase, size: int) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size and (n := f.readinto(view[got:])):
        got += n
    return buf if got == size else buf[:got]


def reset_access_hint(buffer: mmap.mmap | bytearray) -> None:
    """Drops `map_file`'s sequential hint once the whole map has been read."""
    if isinstance(buffer, mmap.mmap) and hasattr(mmap, "MADV_NORMAL"):
        buffer.madvise(mmap.MADV_NORMAL)


