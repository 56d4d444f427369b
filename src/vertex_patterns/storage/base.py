"""What every storage backend provides, and the object metadata they return."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from vertex_patterns.storage.uri import StorageUri


@dataclass(frozen=True)
class ObjectInfo:
    """Metadata of one stored object.

    Attributes:
        uri: The object's full URI.
        key: The name relative to the listed prefix, `/`-separated ("" for `stat`).
        size: Size in bytes.
        crc32c: Base64 big-endian CRC32C as GCS reports it; None when not yet computed
            (local listings compute it only on request).
        md5: Base64 MD5 where the backend stores one (GCS, non-composite objects).
        generation: The GCS generation; None on local disk.
        updated: Last modification time (UTC).
    """

    uri: str
    key: str
    size: int
    crc32c: str | None = None
    md5: str | None = None
    generation: int | None = None
    updated: dt.datetime | None = None


class Backend(Protocol):
    """The operations the storage facade dispatches to, for one URI scheme."""

    def list(self, location: StorageUri, *, with_crc32c: bool = False) -> Iterator[ObjectInfo]:
        """Yields every object below `location` (recursive), keys relative to it."""
        ...

    def stat(self, location: StorageUri, *, with_crc32c: bool = True) -> ObjectInfo | None:
        """The object's metadata, or None when it does not exist."""
        ...

    def read_bytes(self, location: StorageUri) -> bytes:
        """The whole object (small objects only)."""
        ...

    def write_bytes(self, location: StorageUri, data: bytes) -> ObjectInfo:
        """Writes an object in one go; readers never see a partial object."""
        ...

    def upload_file(
        self,
        local_path: str,
        location: StorageUri,
        *,
        expected_generation: int | None = None,
        crc32c: str | None = None,
    ) -> ObjectInfo:
        """Streams a local file to `location`."""
        ...

    def download_file(
        self, location: StorageUri, local_path: str, *, crc32c: str | None = None
    ) -> tuple[ObjectInfo, str]:
        """Streams an object to a local file; returns the source info and the CRC32C written."""
        ...

    def delete(self, location: StorageUri, *, generation: int | None = None) -> None:
        """Deletes one object; a missing object is not an error."""
        ...
