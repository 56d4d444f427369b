"""CRC32C of one large buffer on several cores: parts checksummed at once, then combined.

One core checksums at about 17 GB/s, slower than a page-cache read on these machines, so
verifying a restored checkpoint on one core would take longer than reading it. The CRC32C of
a concatenation follows from the parts' CRC32Cs and lengths (zlib's `crc32_combine`, with the
Castagnoli polynomial), so each part goes to its own thread; the native `crc32c_extend`
releases the GIL while it runs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from vertex_patterns.storage.checksum import crc32c_extend_buffer

_POLY = 0x82F63B78  # CRC32C (Castagnoli), reflected
PARALLEL_MIN_BYTES = 64 * 1024 * 1024
"""Smaller buffers are checksummed on one core: starting the threads would cost more."""


def _multmodp(a: int, b: int) -> int:
    """a(x) * b(x) modulo the CRC polynomial, both reflected 32-bit polynomials."""
    m = 1 << 31
    p = 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _x2n_table() -> list[int]:
    table = [1 << 30]  # x^1
    for _ in range(_PERIOD - 1):
        table.append(_multmodp(table[-1], table[-1]))
    return table


# x^(2^k) modulo the polynomial repeats every 31 k (zlib's CRC-32 table repeats every 32:
# its polynomial is primitive of degree 32; Castagnoli's is (x + 1) times one of degree 31).
_PERIOD = 31
_X2N = _x2n_table()  # x^(2^k) modulo the polynomial, k = 0..30


def _x8nmodp(n: int) -> int:
    """x^(8n) modulo the polynomial: what appending n zero bytes multiplies a CRC by."""
    p = 1 << 31  # x^0
    k = 3
    while n:
        if n & 1:
            p = _multmodp(_X2N[k % _PERIOD], p)
        n >>= 1
        k += 1
    return p


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC32C of A + B from CRC32C(A), CRC32C(B) and len(B)."""
    return _multmodp(_x8nmodp(len2), crc1) ^ crc2


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(1, os.cpu_count() or 1), thread_name_prefix="crc32c")
        return _pool


PREPARE_CHUNK = 64 * 1024 * 1024
"""With `prepare`, each part is prepared and checksummed in pieces of this size."""


def _crc_part(buffer: memoryview, lo: int, hi: int,
              prepare: Callable[[int, int], None] | None) -> int:
    if prepare is None:
        return crc32c_extend_buffer(0, buffer[lo:hi])
    crc = 0
    for start in range(lo, hi, PREPARE_CHUNK):
        end = min(hi, start + PREPARE_CHUNK)
        prepare(start, end)
        crc = crc32c_extend_buffer(crc, buffer[start:end])
    return crc


def crc32c_parallel(buffer: memoryview, *, parts: int | None = None,
                    prepare: Callable[[int, int], None] | None = None) -> int:
    """The CRC32C (from 0) of a contiguous byte buffer, its parts checksummed in parallel.

    Args:
        buffer: A contiguous, 1-byte-format memoryview (tensor memory, a file map).
        parts: How many parts (default: one per CPU); buffers under `PARALLEL_MIN_BYTES`
            are checksummed in one piece.
        prepare: Called with (start, end) byte offsets, by the thread that checksums them,
            just before each piece of up to `PREPARE_CHUNK` bytes is read (`diskio.populate`
            maps a file map's pages there).

    Returns:
        The CRC32C, as `crc32c_extend_buffer(0, buffer)` would give it.
    """
    n = len(buffer)
    parts = parts or os.cpu_count() or 1
    if parts < 2 or n < PARALLEL_MIN_BYTES:
        return _crc_part(buffer, 0, n, prepare)
    bounds = [n * i // parts for i in range(parts + 1)]
    futures = [_executor().submit(_crc_part, buffer, bounds[i], bounds[i + 1], prepare)
               for i in range(1, parts)]
    crc = _crc_part(buffer, bounds[0], bounds[1], prepare)  # the calling thread's part
    for i, future in enumerate(futures, start=1):
        crc = crc32c_combine(crc, future.result(), bounds[i + 1] - bounds[i])
    return crc
