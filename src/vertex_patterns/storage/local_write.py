"""New local files written under a temporary name and renamed into place, over raw descriptors.

`atomic_write` (in `local.py`) hands its caller a buffered file object; replication writes
thousands of small files, where each system call counts: Python's `open` adds an `fstat`, an
`lseek` and more per file, and every call is a point where busy threads hand the GIL to one
another. `NewFile` and `copy_file` use `os.open`/`os.readv`/`os.write` directly, keep the
file open across its rename so its checksum is remembered through the descriptor, and make
about half the system calls per file. Same temporary names, same guarantees: nothing
partial is ever seen at the final name, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import random
import stat
import threading
import time
from types import TracebackType

from vertex_patterns.errors import NotFoundError, PermanentError, TransientError
from vertex_patterns.storage.checksum import CHUNK_SIZE, crc32c_extend_buffer, encode_crc32c
from vertex_patterns.storage.crc_cache import remember_read_crc32c, remember_written_crc32c

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_buffers = threading.local()
# The pid in temporary names (kept current across fork); no system call per name, as
# `os.getpid()` and `os.urandom` would be (each one a GIL hand-off between busy threads).
_pid = os.getpid()


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def temp_path(final_path: str) -> str:
    """A fresh temporary name beside `final_path`: `.<name>.vptmp-<pid>-<8 hex digits>`."""
    directory, name = os.path.split(final_path)
    return os.path.join(directory, f".{name}.vptmp-{_pid}-{random.getrandbits(32):08x}")


def create_temp(final_path: str) -> tuple[str, int]:
    """Creates a new temporary file beside `final_path` and returns its name and descriptor.

    Missing directories are created on the first failed open only, which spares a `makedirs`
    per file when many files go to the same directories. `O_EXCL` guarantees the file is ours
    alone, even if two random names collide.

    Raises:
        PermanentError: No name could be created there.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC
    for _ in range(100):
        tmp = temp_path(final_path)
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(final_path) or ".", exist_ok=True)
        except FileExistsError:
            continue
    raise PermanentError(f"{final_path}: cannot create a temporary file beside it",
                         uri=final_path)


def fsync_dir(path: str) -> None:
    """Flushes a directory's entries (a rename or create in it) to disk."""
    fd = os.open(path or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_buffer() -> memoryview:
    """This thread's reusable copy buffer (a fresh 4 MiB bytes per chunk costs page faults)."""
    view: memoryview | None = getattr(_buffers, "view", None)
    if view is None:
        view = memoryview(bytearray(CHUNK_SIZE))
        _buffers.view = view
    return view


def check_unchanged(before: os.stat_result, after: os.stat_result, uri: str) -> None:
    """Raises TransientError when a source file changed while it was being copied."""
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        raise TransientError(f"{uri}: the source file changed while it was copied", uri=uri)


class NewFile:
    """A file created beside `final_path` under a temporary name; `commit` renames it there.

    Use as a context manager: leaving it without `commit` (or by an exception) removes the
    temporary file. Missing directories are created on the first failed open only.

    Args:
        final_path: Where the file ends up.
        fsync: Flush contents and the directory entry to disk in `commit`.
    """

    def __init__(self, final_path: str, *, fsync: bool = False) -> None:
        self.final_path = final_path
        self._fsync = fsync
        self._written = 0
        self.temp_path, self._fd = create_temp(final_path)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Writes all of `data`."""
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.write(self._fd, view[done:])
        self._written += done
        return done

    def flush(self) -> None:
        """Nothing is buffered."""

    def tell(self) -> int:
        return self._written

    def fileno(self) -> int:
        return self._fd

    def commit(self, crc32c: str | None = None) -> os.stat_result:
        """Renames the file into place; remembers `crc32c` (see `crc_cache`) when given.

        Returns:
            The file's `os.fstat` after its last write.

        Raises:
            PermanentError: `final_path` is a directory.
        """
        if self._fsync:
            os.fsync(self._fd)
        written = os.fstat(self._fd)
        try:
            os.replace(self.temp_path, self.final_path)
        except IsADirectoryError as exc:
            raise PermanentError(f"{self.final_path}: is a directory, cannot write a file "
                                 "there", uri=self.final_path) from exc
        fd, self._fd = self._fd, -1
        try:
            if crc32c is not None:
                remember_written_crc32c(fd, crc32c, written)
        finally:
            os.close(fd)
        if self._fsync:
            fsync_dir(os.path.dirname(self.final_path))
        return written

    def abort(self) -> None:
        """Closes and removes the temporary file (nothing happens after `commit`)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temp_path)

    def __enter__(self) -> NewFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


def copy_file(
    src_path: str, dst_path: str, expected: str | None, *, fsync: bool = False
) -> tuple[str, os.stat_result]:
    """Copies one local file atomically, hashing as it goes, verified before the rename.

    With `expected`, the bytes must have that CRC32C; without, the source must not change
    during the copy. The destination's CRC32C is remembered (see `crc_cache`), and the
    source's too where that is safe.

    Returns:
        The CRC32C written and the destination's `os.fstat`.

    Raises:
        NotFoundError: No such source file.
        TransientError: The bytes did not match `expected`, or the source changed meanwhile.
    """
    try:
        src = os.open(src_path, os.O_RDONLY | _CLOEXEC)
    except FileNotFoundError as exc:
        raise NotFoundError(f"{src_path}: not found", uri=src_path) from exc
    try:
        before = os.fstat(src)
        if not stat.S_ISREG(before.st_mode):
            raise PermanentError(f"{src_path}: not a regular file", uri=src_path)
        started = time.time_ns()
        with NewFile(dst_path, fsync=fsync) as dst:
            view = _copy_buffer()
            crc = 0
            while n := os.readv(src, [view]):
                chunk = view[:n]
                crc = crc32c_extend_buffer(crc, chunk)
                dst.write(chunk)
                if n < len(view):  # a short read of a regular file is its end (checked below)
                    break
            written_crc = encode_crc32c(crc)
            if expected is not None and written_crc != expected:
                # Raised before the rename: the temporary file is removed, never renamed.
                raise TransientError(f"{dst_path}: wrote bytes with CRC32C {written_crc}, "
                                     f"expected {expected}", uri=dst_path)
            after = os.fstat(src)
            if expected is None:
                check_unchanged(before, after, src_path)
            written = dst.commit(written_crc)
        remember_read_crc32c(src, written_crc, before, started, after)
    finally:
        os.close(src)
    return written_crc, written
