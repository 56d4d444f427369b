"""Local-disk backend: atomic writes by temporary name plus rename.

A temporary file is named `.<name>.vptmp-<pid>-<random>` in the destination directory, so the
rename is atomic on one filesystem; listings skip such names, so a crash never leaves a partial
file at its final name nor a partial one in a listing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import re
import stat
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

from vertex_patterns.errors import NotFoundError, PermanentError
from vertex_patterns.storage.base import ObjectInfo
from vertex_patterns.storage.checksum import crc32c_file
from vertex_patterns.storage.crc_cache import cached_crc32c
from vertex_patterns.storage.local_write import copy_file, create_temp, fsync_dir
from vertex_patterns.storage.uri import StorageUri

T = TypeVar("T")

TEMP_RE = re.compile(r"^\..+\.vptmp-(\d+)-[0-9a-f]{8}$")


def is_temp_name(name: str) -> bool:
    """True for the temporary names this module writes before renaming."""
    return TEMP_RE.match(name) is not None


def _open_temp(final_path: str) -> tuple[str, BinaryIO]:
    """Creates a new temporary file beside `final_path` (see `create_temp`), buffered."""
    tmp, fd = create_temp(final_path)
    # An explicit buffer size spares the isatty() probe of the default.
    return tmp, open(fd, "wb", buffering=io.DEFAULT_BUFFER_SIZE)  # caller closes it


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(root: str) -> int:
    """Removes temporary files left below `root` by processes that no longer run.

    Returns:
        How many were removed.
    """
    removed = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            m = TEMP_RE.match(name)
            if m and not _pid_alive(int(m.group(1))):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
    return removed


@contextlib.contextmanager
def atomic_write(final_path: str, *, fsync: bool = False) -> Iterator[BinaryIO]:
    """Opens a temporary file beside `final_path`, renamed into place only on success.

    Args:
        final_path: Where the file ends up.
        fsync: Flush file contents and the directory entry to disk before returning.

    Yields:
        The open temporary file.
    """
    tmp, f = _open_temp(final_path)
    try:
        with f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        try:
            os.replace(tmp, final_path)
        except IsADirectoryError as exc:
            raise PermanentError(f"{final_path}: is a directory, cannot write a file there",
                                 uri=final_path) from exc
        if fsync:
            fsync_dir(os.path.dirname(final_path))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _info(path: str, key: str, st: os.stat_result, crc: str | None) -> ObjectInfo:
    return ObjectInfo(
        uri=path,
        key=key,
        size=st.st_size,
        crc32c=crc,
        updated=dt.datetime.fromtimestamp(st.st_mtime, tz=dt.timezone.utc),
    )


class LocalBackend:
    """Files below a directory, addressed as local paths or `file://` URIs."""

    def __init__(self, *, fsync: bool = False) -> None:
        self.fsync = fsync

    def list(
        self,
        location: StorageUri,
        *,
        with_crc32c: bool = False,
        cached_crc32c_only: bool = False,
    ) -> Iterator[ObjectInfo]:
        """Yields the files below `location` in sorted, top-down order.

        Args:
            location: The directory.
            with_crc32c: Read every file and report its CRC32C.
            cached_crc32c_only: Report the CRC32C only where a still-valid one is remembered
                (see `crc_cache`); never reads file contents. Ignored with `with_crc32c`.
        """
        root = location.path
        if not os.path.isdir(root):
            return
        yield from self._walk(root, "", with_crc32c, cached_crc32c_only)

    def _walk(
        self, directory: str, key_prefix: str, with_crc32c: bool, cached_only: bool
    ) -> Iterator[ObjectInfo]:
        # os.walk's order and rules: files of a directory first, then its subdirectories;
        # symbolic links to files are followed, links to directories are not descended.
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return
        subdirs = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not entry.is_symlink():
                    subdirs.append(entry)
                continue
            if is_temp_name(entry.name):
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            path = entry.path
            if with_crc32c:
                crc: str | None = crc32c_file(path)
            elif cached_only:
                crc = cached_crc32c(path, st)
            else:
                crc = None
            yield _info(path, key_prefix + entry.name, st, crc)
        for entry in subdirs:
            yield from self._walk(entry.path, f"{key_prefix}{entry.name}/", with_crc32c,
                                  cached_only)

    def stat(self, location: StorageUri, *, with_crc32c: bool = True) -> ObjectInfo | None:
        try:
            st = os.stat(location.path)
        except FileNotFoundError:
            return None
        if not os.path.isfile(location.path):
            return None
        crc = crc32c_file(location.path) if with_crc32c else None
        return _info(location.path, "", st, crc)

    def write_stream(
        self, location: StorageUri, produce: Callable[[BinaryIO], T], *, fsync: bool | None = None
    ) -> T:
        """Writes what `produce` writes to a temporary file, renamed into place on success."""
        with atomic_write(location.path, fsync=self.fsync if fsync is None else fsync) as f:
            return produce(f)

    def read_into_buffer(self, location: StorageUri) -> bytearray:
        """Reads a whole file into a new writable buffer with one `readinto`."""
        try:
            with open(location.path, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                buf = bytearray(size)
                view = memoryview(buf)
                got = 0
                while got < size:
                    n = f.readinto(view[got:])
                    if not n:
                        break
                    got += n
                return buf if got == size else buf[:got]
        except FileNotFoundError as exc:
            raise NotFoundError(f"{location}: not found", uri=str(location)) from exc

    def read_bytes(self, location: StorageUri) -> bytes:
        try:
            with open(location.path, "rb") as f:
                return f.read()
        except FileNotFoundError as exc:
            raise NotFoundError(f"{location}: not found", uri=str(location)) from exc

    def write_bytes(self, location: StorageUri, data: bytes) -> ObjectInfo:
        with atomic_write(location.path, fsync=self.fsync) as f:
            f.write(data)
        info = self.stat(location)
        assert info is not None
        return info

    def upload_file(
        self,
        local_path: str,
        location: StorageUri,
        *,
        expected_generation: int | None = None,
        crc32c: str | None = None,
    ) -> ObjectInfo:
        """Copies a local file into place atomically, verified before the rename.

        With `crc32c`, the bytes copied must have it; without, the CRC32C is computed during
        the copy and the source must not change meanwhile.
        """
        del expected_generation  # local disk has no generations
        crc, st = copy_file(local_path, location.path, crc32c, fsync=self.fsync)
        return _info(location.path, "", st, crc)

    def download_file(
        self, location: StorageUri, local_path: str, *, crc32c: str | None = None
    ) -> tuple[ObjectInfo, str]:
        """Copies to `local_path` atomically, verified before the rename (see `upload_file`)."""
        crc, _ = copy_file(location.path, local_path, crc32c, fsync=self.fsync)
        st = os.stat(location.path)
        return _info(location.path, "", st, crc), crc

    def delete(self, location: StorageUri, *, generation: int | None = None) -> None:
        del generation
        try:
            os.unlink(location.path)
        except FileNotFoundError:
            return
        except IsADirectoryError as exc:
            raise PermanentError(f"{location}: is a directory", uri=str(location)) from exc
