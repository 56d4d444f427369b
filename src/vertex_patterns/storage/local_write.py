"""New local files written unnamed (or under a temporary name) and put into place when whole.

`atomic_write` (in `local.py`) hands its caller a buffered file object; replication writes
thousands of small files, where each system call counts: Python's `open` adds an `fstat`, an
`lseek` and more per file, and every call is a point where busy threads hand the GIL to one
another. `NewFile` and `copy_file` use `os.open`/`os.readv`/`os.write` directly, keep the
file open until it is in place so its checksum is remembered through the descriptor, and make
about half the system calls per file.

Where the filesystem supports it (Linux: ext4, XFS, btrfs, tmpfs), `NewFile` creates the file
with `O_TMPFILE`: an inode with no name at all, given its final name by one `linkat` once it
is whole. Creating a named file holds its directory's lock while the filesystem finds a free
inode, so writers into one directory queue behind one another (and spin on the lock, burning
the CPU they wait with); an unnamed file is created without that lock, and only the short
`linkat` takes it. On this project's ext4 (no journal, where finding an inode scans past
recently deleted ones) 1,000 files of 64 KiB went into one directory in half the time and
half the CPU of create + rename, from 2 or more threads. An unnamed file also vanishes by
itself if the process dies: nothing is left to clean up. Elsewhere (or when the final name
is taken, or is a directory) the temporary name plus rename of `create_temp` is used. Either
way nothing partial is ever seen at the final name, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import stat
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

from vertex_patterns.errors import NotFoundError, PermanentError, TransientError
from vertex_patterns.storage.checksum import CHUNK_SIZE, crc32c_extend_buffer, encode_crc32c
from vertex_patterns.storage.crc_cache import remember_read_crc32c, remember_written_crc32c

T = TypeVar("T")

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_TMPFILE = getattr(os, "O_TMPFILE", 0)
_buffers = threading.local()
# The pid in temporary names (kept current across fork); no system call per name, as
# `os.getpid()` and `os.urandom` would be (each one a GIL hand-off between busy threads).
_pid = os.getpid()
# `/proc/self/fd` opened once (O_PATH), through which unnamed files are linked; None until
# first needed, -1 where it cannot be opened (then no unnamed files are made).
_proc_fd: int | None = None
_proc_lock = threading.Lock()
# Directories whose filesystem refused O_TMPFILE (each then gets named temporary files).
_no_tmpfile_dirs: set[str] = set()
# errno values that mean "this filesystem or kernel has no O_TMPFILE" (an old kernel opens
# the directory itself, hence EISDIR).
_TMPFILE_UNSUPPORTED = {errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL,
                        getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


def _after_fork() -> None:
    global _pid, _proc_fd
    _pid = os.getpid()
    # The parent's descriptor names the parent's /proc/<pid>/fd: open our own when needed.
    if _proc_fd is not None and _proc_fd >= 0:
        with contextlib.suppress(OSError):
            os.close(_proc_fd)
    _proc_fd = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def temp_path(final_path: str) -> str:
    """A fresh temporary name beside `final_path`: `.<name>.vptmp-<pid>-<8 hex digits>`."""
    directory, name = os.path.split(final_path)
    return os.path.join(directory, f".{name}.vptmp-{_pid}-{random.getrandbits(32):08x}")


def _at_temp_name(final_path: str, make: Callable[[str], T]) -> tuple[str, T]:
    """Calls `make` with fresh temporary names beside `final_path` until one is free.

    Missing directories are created on the first failed attempt only, which spares a
    `makedirs` per file when many files go to the same directories.

    Returns:
        The name used and what `make` returned for it.

    Raises:
        PermanentError: No free name was found.
    """
    for _ in range(100):
        tmp = temp_path(final_path)
        try:
            return tmp, make(tmp)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(final_path) or ".", exist_ok=True)
        except FileExistsError:
            continue
    raise PermanentError(f"{final_path}: cannot create a temporary file beside it",
                         uri=final_path)


def create_temp(final_path: str) -> tuple[str, int]:
    """Creates a new temporary file beside `final_path` and returns its name and descriptor.

    `O_EXCL` guarantees the file is ours alone, even if two random names collide.

    Raises:
        PermanentError: No name could be created there.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC
    return _at_temp_name(final_path, lambda tmp: os.open(tmp, flags, 0o666))


def _proc_self_fd() -> int:
    """The descriptor of `/proc/self/fd` (opened once per process), or -1 where unavailable."""
    global _proc_fd
    if _proc_fd is None:
        with _proc_lock:
            if _proc_fd is None:
                flags = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | _CLOEXEC
                try:
                    _proc_fd = os.open("/proc/self/fd", flags)
                except OSError:
                    _proc_fd = -1
    return _proc_fd


def create_unnamed(final_path: str) -> int | None:
    """Opens a new file with no name in `final_path`'s directory (`O_TMPFILE`).

    Returns:
        Its descriptor, or None where unnamed files are not available (the caller then uses
        `create_temp`). Missing directories are created.
    """
    directory = os.path.dirname(final_path) or "."
    if not _TMPFILE or directory in _no_tmpfile_dirs or _proc_self_fd() < 0:
        return None
    try:
        return _open_unnamed(directory)
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)
        return _open_unnamed(directory)


def _open_unnamed(directory: str) -> int | None:
    try:
        return os.open(directory, _TMPFILE | os.O_WRONLY | _CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno not in _TMPFILE_UNSUPPORTED:
            raise
    _no_tmpfile_dirs.add(directory)
    return None


def link_unnamed(fd: int, final_path: str) -> None:
    """Gives the unnamed file `fd` the name `final_path` (`linkat` through /proc/self/fd).

    Raises:
        FileExistsError: Something already has that name.
        OSError: The link failed otherwise.
    """
    os.link(str(fd), final_path, src_dir_fd=_proc_self_fd(), follow_symlinks=True)


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
    """A file created unnamed in `final_path`'s directory (or under a temporary name beside
    it); `commit` gives it its final name.

    Use as a context manager: leaving it without `commit` (or by an exception) removes the
    file. Missing directories are created on the first failed open only.

    Args:
        final_path: Where the file ends up.
        fsync: Flush contents and the directory entry to disk in `commit`.
    """

    def __init__(self, final_path: str, *, fsync: bool = False) -> None:
        self.final_path = final_path
        self._fsync = fsync
        self._written = 0
        fd = create_unnamed(final_path)
        # temp_path is None while the file has no name (O_TMPFILE).
        self.temp_path: str | None = None
        if fd is None:
            self.temp_path, fd = create_temp(final_path)
        self._fd = fd

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
        """Puts the file in place; remembers `crc32c` (see `crc_cache`) when given.

        An unnamed file is linked at its final name when that is free; when it is taken, the
        file is linked under a temporary name and renamed over it, as a named one is.

        Returns:
            The file's `os.fstat` after its last write.

        Raises:
            PermanentError: `final_path` is a directory.
            TransientError: An unnamed file could not be linked for another reason (the
                directory then gets named temporary files: a retry succeeds).
        """
        if self._fsync:
            os.fsync(self._fd)
        written = os.fstat(self._fd)
        if self.temp_path is None:
            try:
                link_unnamed(self._fd, self.final_path)
            except FileExistsError:
                self._link_under_temp_name()
            except OSError as exc:
                _no_tmpfile_dirs.add(os.path.dirname(self.final_path) or ".")
                raise TransientError(f"{self.final_path}: could not link the new file into "
                                     f"place ({exc}); retrying with a temporary name",
                                     uri=self.final_path) from exc
        if self.temp_path is not None:
            try:
                os.replace(self.temp_path, self.final_path)
            except IsADirectoryError as exc:
                raise PermanentError(f"{self.final_path}: is a directory, cannot write a "
                                     "file there", uri=self.final_path) from exc
        fd, self._fd = self._fd, -1
        try:
            if crc32c is not None:
                remember_written_crc32c(fd, crc32c, written)
        finally:
            os.close(fd)
        if self._fsync:
            fsync_dir(os.path.dirname(self.final_path))
        return written

    def _link_under_temp_name(self) -> None:
        """Links the unnamed file under a fresh temporary name (for a rename over a file)."""
        fd = self._fd
        self.temp_path, _ = _at_temp_name(self.final_path, lambda tmp: link_unnamed(fd, tmp))

    def abort(self) -> None:
        """Closes and removes the file (an unnamed one is freed on close; nothing happens
        after `commit`)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
            if self.temp_path is not None:
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
