"""Local-disk backend: atomic writes by temporary name plus rename.

A temporary file is named `.<name>.vptmp-<pid>-<random>` in the destination directory, so the
rename is atomic on one filesystem; listings skip such names, so a crash never leaves a partial
file at its final name nor a partial one in a listing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import uuid
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

from vertex_patterns.errors import NotFoundError, PermanentError, TransientError
from vertex_patterns.storage.base import ObjectInfo
from vertex_patterns.storage.checksum import CHUNK_SIZE, HashingWriter, crc32c_file
from vertex_patterns.storage.uri import StorageUri

T = TypeVar("T")

TEMP_RE = re.compile(r"^\..+\.vptmp-(\d+)-[0-9a-f]{8}$")


def is_temp_name(name: str) -> bool:
    """True for the temporary names this module writes before renaming."""
    return TEMP_RE.match(name) is not None


def _temp_path(final_path: str) -> str:
    directory, name = os.path.split(final_path)
    return os.path.join(directory, f".{name}.vptmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


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
    os.makedirs(os.path.dirname(final_path) or ".", exist_ok=True)
    if os.path.isdir(final_path):
        raise PermanentError(f"{final_path}: is a directory, cannot write a file there",
                             uri=final_path)
    tmp = _temp_path(final_path)
    try:
        with open(tmp, "wb") as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, final_path)
        if fsync:
            fd = os.open(os.path.dirname(final_path) or ".", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
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


def _copy_stream(src: BinaryIO, dst: BinaryIO | HashingWriter) -> int:
    total = 0
    while chunk := src.read(CHUNK_SIZE):
        dst.write(chunk)
        total += len(chunk)
    return total


def _check(actual: str, expected: str | None, uri: str) -> None:
    # Raised inside atomic_write's block, so the damaged temporary file is never renamed.
    if expected is not None and actual != expected:
        raise TransientError(f"{uri}: wrote bytes with CRC32C {actual}, expected {expected}",
                             uri=uri)


class LocalBackend:
    """Files below a directory, addressed as local paths or `file://` URIs."""

    def __init__(self, *, fsync: bool = False) -> None:
        self.fsync = fsync

    def list(self, location: StorageUri, *, with_crc32c: bool = False) -> Iterator[ObjectInfo]:
        root = location.path
        if not os.path.isdir(root):
            return
        for dirpath, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                if is_temp_name(name):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                if not os.path.isfile(path):
                    continue
                key = os.path.relpath(path, root).replace(os.sep, "/")
                yield _info(path, key, st, crc32c_file(path) if with_crc32c else None)

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
        """Copies a local file into place atomically, verifying `crc32c` before the rename."""
        del expected_generation  # local disk has no generations
        try:
            src = open(local_path, "rb")  # noqa: SIM115 - closed below, before the rename
        except FileNotFoundError as exc:
            raise NotFoundError(f"{local_path}: not found", uri=local_path) from exc
        with src, atomic_write(location.path, fsync=self.fsync) as dst:
            writer = HashingWriter(dst)
            _copy_stream(src, writer)
            _check(writer.crc32c, crc32c, str(location))
        st = os.stat(location.path)
        return _info(location.path, "", st, writer.crc32c)

    def download_file(
        self, location: StorageUri, local_path: str, *, crc32c: str | None = None
    ) -> tuple[ObjectInfo, str]:
        """Copies to `local_path` atomically, verifying `crc32c` before the rename."""
        try:
            src = open(location.path, "rb")  # noqa: SIM115
        except FileNotFoundError as exc:
            raise NotFoundError(f"{location}: not found", uri=str(location)) from exc
        with src, atomic_write(local_path, fsync=self.fsync) as dst:
            st = os.fstat(src.fileno())
            writer = HashingWriter(dst)
            _copy_stream(src, writer)
            _check(writer.crc32c, crc32c, local_path)
        return _info(location.path, "", st, crc32c), writer.crc32c

    def delete(self, location: StorageUri, *, generation: int | None = None) -> None:
        del generation
        try:
            os.unlink(location.path)
        except FileNotFoundError:
            return
        except IsADirectoryError as exc:
            raise PermanentError(f"{location}: is a directory", uri=str(location)) from exc
