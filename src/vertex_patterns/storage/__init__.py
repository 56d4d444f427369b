"""One small storage interface addressed by URI strings: local paths, `file://` and `gs://`.

    >>> from vertex_patterns.storage import Storage
    >>> store = Storage()
    >>> store.write_bytes("gs://my-bucket/data/hello.txt", b"hi")
    >>> [o.key for o in store.list("gs://my-bucket/data")]
    ['hello.txt']

Listings are recursive and directory-like: `gs://b/data` lists the objects named `data/...`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

from vertex_patterns.errors import ConfigError, IntegrityError, NotFoundError
from vertex_patterns.storage.base import ObjectInfo
from vertex_patterns.storage.checksum import crc32c_bytes, crc32c_file
from vertex_patterns.storage.gcs import GcsBackend
from vertex_patterns.storage.local import LocalBackend
from vertex_patterns.storage.retry import DEFAULT_RETRY, RetryPolicy
from vertex_patterns.storage.uri import (
    StorageUri,
    parse_uri,
    safe_local_path,
    validate_object_key,
)

T = TypeVar("T")

__all__ = [
    "CopyResult",
    "GcsBackend",
    "LocalBackend",
    "ObjectInfo",
    "RetryPolicy",
    "Storage",
    "StorageUri",
    "crc32c_bytes",
    "crc32c_file",
    "parse_uri",
    "safe_local_path",
    "validate_object_key",
]


@dataclass(frozen=True)
class CopyResult:
    """The outcome of one verified object copy.

    Attributes:
        destination: The written object's metadata.
        bytes_through_client: Object bytes this process sent or received for the copy, as
            counted by the GCS backend (0 for a server-side copy; every byte of a retried
            download counts again); a local→local copy counts the object's size.
    """

    destination: ObjectInfo
    bytes_through_client: int


class Storage:
    """Dispatches URI-addressed calls to the local or GCS backend.

    Args:
        gcs: The GCS backend; by default one that follows `STORAGE_EMULATOR_HOST` or uses
            Application Default Credentials.
        local: The local backend.
        retry: The retry policy for a default GCS backend.
    """

    def __init__(
        self,
        *,
        gcs: GcsBackend | None = None,
        local: LocalBackend | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self.gcs = gcs or GcsBackend(retry=retry)
        self.local = local or LocalBackend()

    def _backend(self, location: StorageUri) -> GcsBackend | LocalBackend:
        return self.gcs if location.is_gcs else self.local

    def list(
        self, uri: str, *, with_crc32c: bool = False, cached_crc32c_only: bool = False
    ) -> Iterator[ObjectInfo]:
        """Yields every object below `uri`, recursively, with keys relative to it.

        Args:
            uri: A prefix (`gs://bucket/prefix`) or a local directory.
            with_crc32c: Also compute CRC32C for local files (GCS always reports it).
            cached_crc32c_only: For local files, report a CRC32C only where a still-valid
                one is remembered beside the file (`storage.crc_cache`), reading no file
                contents. For skip decisions, never for integrity checks.

        Raises:
            NotFoundError: The bucket does not exist.
        """
        location = parse_uri(uri)
        if location.is_gcs:
            return self.gcs.list(location)
        return self.local.list(location, with_crc32c=with_crc32c,
                               cached_crc32c_only=cached_crc32c_only)

    def stat(self, uri: str) -> ObjectInfo | None:
        """One object's metadata (CRC32C included), or None when it does not exist."""
        location = parse_uri(uri)
        return self._backend(location).stat(location)

    def exists(self, uri: str) -> bool:
        """True when the object exists."""
        location = parse_uri(uri)
        return self._backend(location).stat(location, with_crc32c=False) is not None

    def bucket_exists(self, uri: str) -> bool:
        """For `gs://` URIs, whether the bucket exists; always True for local paths."""
        location = parse_uri(uri)
        return self.gcs.bucket_exists(location) if location.is_gcs else True

    def read_bytes(self, uri: str) -> bytes:
        """The whole object; for small objects (manifests, configs)."""
        location = parse_uri(uri)
        return self._backend(location).read_bytes(location)

    def write_bytes(self, uri: str, data: bytes) -> ObjectInfo:
        """Writes a whole object; readers see the old or the new bytes, never a mix."""
        location = parse_uri(uri)
        return self._backend(location).write_bytes(location, data)

    def upload_file(self, local_path: str, uri: str) -> ObjectInfo:
        """Streams a local file to `uri`, verified by CRC32C (computed while it is read)."""
        location = parse_uri(uri)
        return self._backend(location).upload_file(local_path, location)

    def download_file(self, uri: str, local_path: str) -> ObjectInfo:
        """Streams the object at `uri` into `local_path` (temporary name, then rename)."""
        location = parse_uri(uri)
        info, _ = self._backend(location).download_file(location, local_path)
        return info

    def write_stream(self, uri: str, produce: Callable[[BinaryIO], T]) -> T:
        """Writes a new object from what `produce` writes to the file object it is given.

        Local: a temporary file renamed into place. GCS: a chunked resumable upload that
        must create the object. `produce` may be called again after a transient failure.
        """
        location = parse_uri(uri)
        return self._backend(location).write_stream(location, produce)

    def read_into_buffer(self, uri: str) -> bytearray:
        """The whole object in a new writable bytearray."""
        location = parse_uri(uri)
        return self._backend(location).read_into_buffer(location)

    def delete(self, uri: str, *, generation: int | None = None) -> None:
        """Deletes one object; deleting a missing object is not an error."""
        location = parse_uri(uri)
        self._backend(location).delete(location, generation=generation)

    def copy(
        self,
        source: ObjectInfo,
        dest_uri: str,
        *,
        expected_generation: int | None = None,
    ) -> CopyResult:
        """Copies one object anywhere to anywhere and verifies the destination's CRC32C.

        gs→gs is a server-side rewrite (no bytes through this process); the other pairs
        stream, and a download is a single GET pinned to the listed generation. Local
        destinations are written under a temporary name and renamed once verified.

        Args:
            source: The source object's metadata. For a local source without `crc32c`, the
                CRC32C is computed from the bytes as they are copied (the file must not
                change meanwhile) and compared with the destination's.
            dest_uri: Where to write.
            expected_generation: The destination's generation as last listed (0: absent),
                the precondition for GCS writes; None stats it first.

        Raises:
            IntegrityError: The destination's CRC32C differs from the source's.
            StorageError: The copy failed (after retries for transient errors).
        """
        src = parse_uri(source.uri)
        dst = parse_uri(dest_uri)
        crc = source.crc32c
        if crc is None and src.is_gcs:
            crc = self._crc32c(src)
        # Measured, not assumed: the object bytes the GCS backend sent and received on this
        # thread during the copy (a rewrite moves none; a download or upload, all of them,
        # retries included). A local→local copy reads and writes every byte here.
        before = self.gcs.data_bytes()
        if src.is_gcs and dst.is_gcs:
            info = self.gcs.rewrite(
                ObjectInfo(uri=source.uri, key=source.key, size=source.size, crc32c=crc,
                           generation=source.generation),
                dst,
                expected_generation=expected_generation,
            )
        elif src.is_gcs:
            _, written = self.gcs.download_file(
                src, dst.path, crc32c=crc,
                source=source if source.generation is not None else None,
            )
            info = ObjectInfo(uri=dst.path, key="", size=source.size, crc32c=written)
        elif dst.is_gcs:
            info = self.gcs.upload_file(
                src.path, dst, expected_generation=expected_generation, crc32c=crc
            )
        else:
            info = self.local.upload_file(src.path, dst, crc32c=crc)
        _verify(info, crc)
        moved = self.gcs.data_bytes() - before
        if not src.is_gcs and not dst.is_gcs:
            moved = source.size
        return CopyResult(destination=info, bytes_through_client=moved)

    def _crc32c(self, location: StorageUri) -> str | None:
        info = self.gcs.stat(location)
        if info is None:
            raise NotFoundError(f"{location}: not found", uri=str(location))
        return info.crc32c


def _verify(info: ObjectInfo, expected_crc32c: str | None) -> None:
    if expected_crc32c is not None and info.crc32c != expected_crc32c:
        raise IntegrityError(
            f"{info.uri}: CRC32C {info.crc32c} does not match the source's {expected_crc32c}",
            uri=info.uri,
        )


def require_gcs_uri(uri: str) -> StorageUri:
    """Parses `uri` and insists on `gs://` (for features that only make sense on GCS)."""
    location = parse_uri(uri)
    if not location.is_gcs:
        raise ConfigError(f"{uri!r} is not a gs:// URI")
    return location
