"""CRC32C of local files and byte strings, in the base64 form GCS reports."""

from __future__ import annotations

import base64
from typing import BinaryIO

import google_crc32c

CHUNK_SIZE = 4 * 1024 * 1024


def encode_crc32c(value: int) -> str:
    """Encodes a CRC32C integer as GCS does: base64 of the 4 big-endian bytes."""
    return base64.b64encode(value.to_bytes(4, "big")).decode("ascii")


def crc32c_bytes(data: bytes) -> str:
    """The GCS-style CRC32C of `data`."""
    return encode_crc32c(google_crc32c.value(data))


def crc32c_file(path: str, *, chunk_size: int = CHUNK_SIZE) -> str:
    """Streams a local file through google-crc32c (hardware-accelerated where available)."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            crc = google_crc32c.extend(crc, chunk)
    return encode_crc32c(crc)


class HashingWriter:
    """Wraps a binary file, computing the CRC32C of what passes through `write`.

    Used for downloads so the checksum costs no second read of the file.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._crc = 0
        self.bytes_written = 0

    def write(self, data: bytes) -> int:
        self._crc = google_crc32c.extend(self._crc, data)
        self.bytes_written += len(data)
        return self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()

    def tell(self) -> int:
        return self._raw.tell()

    @property
    def crc32c(self) -> str:
        """The base64 CRC32C of everything written so far."""
        return encode_crc32c(self._crc)
