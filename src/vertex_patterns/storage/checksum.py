"""CRC32C of local files and byte strings, in the base64 form GCS reports."""

from __future__ import annotations

import base64
import ctypes
import glob
import os
from typing import BinaryIO, Protocol

import google_crc32c

CHUNK_SIZE = 4 * 1024 * 1024


def _load_native_extend(
    loader: type[ctypes.CDLL] = ctypes.CDLL,
) -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """`crc32c_extend` of the C library inside the google-crc32c wheel, for raw buffers.

    google-crc32c's Python API takes only `bytes`; checksumming a tensor's memory through it
    would copy every byte first. Its bundled libcrc32c exports
    `uint32_t crc32c_extend(uint32_t, const uint8_t*, size_t)`, which ctypes calls on the
    buffer's address directly (and without holding the GIL). Where the library cannot be
    found (other platforms' wheel layouts), callers fall back to chunked copies.
    """
    pkg = os.path.dirname(google_crc32c.__file__)
    patterns = [os.path.join(pkg, "..", "google_crc32c.libs", "libcrc32c*"),
                os.path.join(pkg, ".dylibs", "libcrc32c*"),
                os.path.join(pkg, "libcrc32c*")]
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            try:
                fn = loader(path).crc32c_extend
            except (OSError, AttributeError):
                continue
            fn.restype = ctypes.c_uint32
            fn.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
            return fn
    return None


_NATIVE_EXTEND = _load_native_extend()
# The same function called with the GIL held (ctypes.PyDLL), for buffers below
# _GIL_RELEASE_MIN: releasing the GIL for a few microseconds of checksumming costs a hand-off
# between busy threads that is worth more than what the others could do meanwhile.
_NATIVE_EXTEND_GIL = _load_native_extend(ctypes.PyDLL)
_GIL_RELEASE_MIN = 1024 * 1024
_FALLBACK_CHUNK = 8 * 1024 * 1024


def crc32c_extend_buffer(crc: int, buffer: memoryview) -> int:
    """Extends a CRC32C over any contiguous byte buffer (tensor memory, bytearray, mmap).

    Args:
        crc: The running CRC32C (0 to start).
        buffer: A contiguous, 1-byte-format memoryview.

    Returns:
        The extended CRC32C.
    """
    n = len(buffer)
    if n == 0:
        return crc
    if _NATIVE_EXTEND is not None:
        if buffer.readonly:
            buffer = memoryview(bytes(buffer)) if n < 4096 else buffer
        if not buffer.readonly:
            addr = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
            fn = _NATIVE_EXTEND
            if n < _GIL_RELEASE_MIN and _NATIVE_EXTEND_GIL is not None:
                fn = _NATIVE_EXTEND_GIL
            return int(fn(crc, addr, n))
    for start in range(0, n, _FALLBACK_CHUNK):
        crc = google_crc32c.extend(crc, bytes(buffer[start:start + _FALLBACK_CHUNK]))
    return crc


# From this size on, bytes are checksummed by the native call without the GIL (other threads
# run meanwhile); below it, google-crc32c's call under the GIL costs less than a hand-off.
_BYTES_NATIVE_MIN = 1024 * 1024


def crc32c_extend_bytes(crc: int, data: bytes) -> int:
    """Extends a CRC32C over a `bytes` object, without copying it.

    Args:
        crc: The running CRC32C (0 to start).
        data: The bytes.

    Returns:
        The extended CRC32C.
    """
    data = bytes(data)  # the same object for bytes; a copy of other buffers
    if _NATIVE_EXTEND is not None and len(data) >= _BYTES_NATIVE_MIN:
        # c_char_p points into the (immutable, referenced) bytes object itself.
        return int(_NATIVE_EXTEND(crc, ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p),
                                  len(data)))
    return int(google_crc32c.extend(crc, data))


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


class Writable(Protocol):
    """What `HashingWriter` wraps: a binary file, or anything with these three methods."""

    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...

    def tell(self) -> int: ...


class HashingWriter:
    """Wraps a binary file, computing the CRC32C of what passes through `write`.

    Used for downloads so the checksum costs no second read of the file.
    """

    def __init__(self, raw: BinaryIO | Writable) -> None:
        self._raw = raw
        self._crc = 0
        self.bytes_written = 0

    def write(self, data: bytes) -> int:
        self._crc = crc32c_extend_bytes(self._crc, data)
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


class HashingReader:
    """Wraps a binary file open for reading, computing the CRC32C of what is read in order.

    Used for uploads so the checksum costs no separate read of the file. A reader that
    seeks backwards and reads again (a retried chunk) makes the running CRC32C unusable:
    `crc32c` is then None.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._crc = 0
        self._pos = raw.tell()
        self._hashed_to = self._pos
        self._broken = self._pos != 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if data:
            if self._pos == self._hashed_to:
                self._crc = crc32c_extend_bytes(self._crc, data)
                self._hashed_to += len(data)
            elif self._pos + len(data) > self._hashed_to:
                self._broken = True
            self._pos += len(data)
        return data

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._pos = self._raw.seek(offset, whence)
        return self._pos

    @property
    def bytes_hashed(self) -> int:
        """How many bytes from the start went into the CRC32C."""
        return self._hashed_to

    @property
    def crc32c(self) -> str | None:
        """The base64 CRC32C of bytes 0..`bytes_hashed`, or None if the reads went astray."""
        return None if self._broken else encode_crc32c(self._crc)

