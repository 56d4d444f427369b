"""The two fast paths of large local files: written at disk speed, read without a copy.

`DirectFile` writes past the page cache (O_DIRECT) through reused aligned buffers, the disk
write of one overlapping the copy into the next: no page-cache pages to allocate and fill,
which is most of the CPU a buffered write costs. `WritebackFile`, for filesystems that refuse
O_DIRECT, starts each piece's write to disk as it arrives, so the copy into the page cache and
the disk write overlap instead of running one after the other. `map_file` reads a
file as a copy-on-write memory map: no byte is copied, whether it is in the page cache or not.
Both are what checkpoint files need (`checkpoint.io`); other files use `storage.local`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import io
import mmap
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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

    def finish(self) -> None:
        """Nothing to finish: every write went to the file."""

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


_O_DIRECT = getattr(os, "O_DIRECT", 0)
DIRECT_ALIGN = 4096
"""File offsets, lengths and memory of O_DIRECT writes are multiples of this."""
DIRECT_CHUNK = 8 * 1024 * 1024
_free_buffers: list[mmap.mmap] = []
_free_lock = threading.Lock()
_KEEP_FREE = 4
_write_pool: ThreadPoolExecutor | None = None


def _take_buffer() -> mmap.mmap:
    with _free_lock:
        if _free_buffers:
            return _free_buffers.pop()
    return mmap.mmap(-1, DIRECT_CHUNK)  # anonymous: page-aligned


def _give_buffer(buffer: mmap.mmap) -> None:
    with _free_lock:
        if len(_free_buffers) < _KEEP_FREE:
            _free_buffers.append(buffer)
            return
    buffer.close()


def _writer() -> ThreadPoolExecutor:
    global _write_pool
    with _free_lock:
        if _write_pool is None:
            _write_pool = ThreadPoolExecutor(2, thread_name_prefix="vp-direct-write")
        return _write_pool


class DirectFile:
    """A new file written past the page cache (`O_DIRECT`), the disk write overlapping the
    caller's next piece.

    A buffered write makes the kernel take a fresh page-cache page for every 4 KiB and copy
    into it; on the VMs this was measured on, a 1.2 GB checkpoint cost 1.7-2.9 s of CPU that
    way (pages handed back to the host must be faulted in again), against 0.12 s with
    `O_DIRECT` at a higher write rate. That CPU is what an async save takes from training.
    Bytes are copied into two page-aligned 8 MiB buffers that are reused across files; a
    full buffer is written by a background thread while the caller fills the other. The
    last block is padded and the file truncated to its length. Where the filesystem refuses
    `O_DIRECT` (tmpfs, some FUSE mounts) the file falls back to plain writes on first
    refusal; `open_for_checkpoint` uses `WritebackFile` where it cannot even be opened so.

    Args:
        path: The file to create (truncated if it exists).

    Raises:
        OSError: The file cannot be opened with O_DIRECT (EINVAL where unsupported).
    """

    def __init__(self, path: str) -> None:
        if not _O_DIRECT:
            raise OSError(errno.EINVAL, "O_DIRECT is not available here", path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        self.path = path
        self._fd = os.open(path, flags | _O_DIRECT, 0o666)
        self._direct = True
        self._buffer: mmap.mmap | None = None
        self._fill = 0
        self._flushed = 0  # file offset of the current buffer's first byte
        self._pending: Future[None] | None = None
        self._finished = False

    def _put(self, buffer: mmap.mmap, length: int, offset: int) -> None:
        """Writes `length` bytes of `buffer` at `offset` (a background thread)."""
        view = memoryview(buffer)[:length]
        try:
            done = 0
            while done < length:
                try:
                    done += os.pwrite(self._fd, view[done:], offset + done)
                except OSError as exc:
                    if exc.errno != errno.EINVAL or not self._direct:
                        raise
                    # The filesystem refuses O_DIRECT writes: write through the cache.
                    fcntl.fcntl(self._fd, fcntl.F_SETFL,
                                fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~_O_DIRECT)
                    self._direct = False
        finally:
            view.release()
            _give_buffer(buffer)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _ship(self, padded: int) -> None:
        """Hands the current buffer (`padded` bytes of it) to the writer thread."""
        buffer, self._buffer = self._buffer, None
        assert buffer is not None
        self._wait()  # one write in flight at a time, in file order
        self._pending = _writer().submit(self._put, buffer, padded, self._flushed)
        self._flushed += self._fill
        self._fill = 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        """Takes all of `data` (copied into the staging buffer before this returns)."""
        if self._finished:
            raise ValueError(f"{self.path}: write after finish")
        view = memoryview(data).cast("B")
        n = len(view)
        done = 0
        while done < n:
            if self._buffer is None:
                self._buffer = _take_buffer()
            k = min(n - done, DIRECT_CHUNK - self._fill)
            self._buffer[self._fill:self._fill + k] = view[done:done + k]
            self._fill += k
            done += k
            if self._fill == DIRECT_CHUNK:
                self._ship(DIRECT_CHUNK)
        return n

    def tell(self) -> int:
        return self._flushed + self._fill

    def finish(self) -> None:
        """Writes the last partial buffer (padded to a block, then the file truncated to its
        length), waits for every write and releases the buffers. Idempotent."""
        if self._finished:
            return
        length = self.tell()
        if self._fill:
            assert self._buffer is not None
            padded = -(-self._fill // DIRECT_ALIGN) * DIRECT_ALIGN
            self._buffer[self._fill:padded] = bytes(padded - self._fill)
            self._ship(padded)
        self._wait()
        self._finished = True
        if os.fstat(self._fd).st_size != length:
            os.ftruncate(self._fd, length)

    def sync(self) -> None:
        """Finishes the file and waits until it is on disk (fsync: size and metadata)."""
        self.finish()
        os.fsync(self._fd)

    def close(self) -> None:
        """Closes the file; an unfinished one is left as it is (its caller discards it)."""
        if self._fd < 0:
            return
        with contextlib.suppress(Exception):
            self._wait()
        if self._buffer is not None:
            _give_buffer(self._buffer)
            self._buffer = None
        fd, self._fd = self._fd, -1
        os.close(fd)

    def __enter__(self) -> DirectFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_for_checkpoint(path: str) -> DirectFile | WritebackFile:
    """A new large file for checkpoint data: `DirectFile` where the filesystem takes
    O_DIRECT, else `WritebackFile`."""
    try:
        return DirectFile(path)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    return WritebackFile(path)


def map_file(path: str) -> mmap.mmap | bytearray:
    """A file's bytes as a private (copy-on-write) memory map.

    Nothing is copied: the map shares the page cache's pages, so reading a file that is in
    the page cache costs no more than mapping it, and buffers viewed from it (tensors) stay
    valid after the file is deleted or renamed. Writes to the map go to private copies of
    the pages they touch, never to the file. The file must not be rewritten in place while
    the map is alive: a map sees such changes, and one truncated below it faults (SIGBUS).
    The kernel is asked to read the whole file ahead at once (`POSIX_FADV_WILLNEED`, which
    costs nothing when it is cached already), so a cold read runs at disk speed while the
    caller checksums the pages that have arrived; `populate` maps ranges in one call each.
    An empty file, or one on a filesystem that cannot map files, is read into a new buffer
    instead.

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
            if hasattr(os, "posix_fadvise"):
                with contextlib.suppress(OSError):
                    os.posix_fadvise(f.fileno(), 0, size, os.POSIX_FADV_WILLNEED)
    except FileNotFoundError as exc:
        raise NotFoundError(f"{path}: not found", uri=path) from exc
    return mapped


def _read_all(f: io.RawIOBase, size: int) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size and (n := f.readinto(view[got:])):
        got += n
    return buf if got == size else buf[:got]


# Linux 5.14+: fill the page tables of a range with the page cache's pages, reading what is
# missing, in one call (a private map's pages stay shared until written). Older kernels
# answer EINVAL and the range is faulted in page by page as it is read instead.
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22 if sys.platform == "linux" else None)


def populate(buffer: mmap.mmap | bytearray, start: int, end: int) -> None:
    """Maps bytes [start, end) of a `map_file` map ahead of reading them (no-op otherwise).

    Reading a map through page faults costs a fault per 16 pages; one populate call per
    range is several times cheaper, which matters when the bytes are checksummed at memory
    speed.
    """
    if not isinstance(buffer, mmap.mmap) or _MADV_POPULATE_READ is None or end <= start:
        return
    first = start - start % mmap.PAGESIZE
    with contextlib.suppress(OSError, ValueError):
        buffer.madvise(_MADV_POPULATE_READ, first, end - first)


