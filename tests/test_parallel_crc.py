"""CRC32C on several cores: the combined value equals the one-pass CRC32C, for any split."""

from __future__ import annotations

import itertools
import mmap
import os
import pathlib
import threading

import google_crc32c
import pytest

from vertex_patterns.storage.diskio import map_file, populate
from vertex_patterns.storage.parallel_crc import (
    PARALLEL_MIN_BYTES,
    PREPARE_CHUNK,
    crc32c_combine,
    crc32c_parallel,
)


class TestCombine:
    """crc32c_combine(CRC(A), CRC(B), len(B)) == CRC(A + B), including empty parts and
    lengths whose bits reach past the polynomial's period (31 doublings)."""

    @pytest.mark.parametrize(("len_a", "len_b"), [(0, 0), (0, 9), (7, 0), (1, 1), (3, 4096),
                                                  (100_000, 12_345)])
    def test_small(self, len_a: int, len_b: int) -> None:
        a, b = os.urandom(len_a), os.urandom(len_b)
        combined = crc32c_combine(google_crc32c.value(a), google_crc32c.value(b), len(b))
        assert combined == google_crc32c.value(a + b)

    def test_long_second_part(self) -> None:
        # 2**29 bytes = 2**32 bits: the length's high bits go past the table of x^(2^k).
        b = bytes(2**29 + 3)
        a = b"head"
        combined = crc32c_combine(google_crc32c.value(a), google_crc32c.value(b), len(b))
        assert combined == google_crc32c.extend(google_crc32c.value(a), b)


class TestParallel:
    """crc32c_parallel gives the one-pass CRC32C of a buffer whatever the number of parts,
    including parts of unequal length."""

    @pytest.mark.parametrize("parts", [None, 2, 3, 7])
    def test_equals_one_pass(self, parts: int | None) -> None:
        data = bytearray(os.urandom(1 << 20) * (PARALLEL_MIN_BYTES // (1 << 20)) + b"tail!")
        assert crc32c_parallel(memoryview(data), parts=parts) == google_crc32c.value(bytes(data))

    @pytest.mark.parametrize("parts", [1, 3])
    def test_prepare_covers_every_byte_once(self, parts: int) -> None:
        """`prepare` is called for pieces that tile the buffer exactly, before they are read;
        the CRC32C is unchanged."""
        data = bytearray(os.urandom(1 << 20) * (2 * PREPARE_CHUNK // (1 << 20)) + b"tail!")
        seen: list[tuple[int, int]] = []
        lock = threading.Lock()

        def prepare(start: int, end: int) -> None:
            assert end - start <= PREPARE_CHUNK
            with lock:
                seen.append((start, end))

        crc = crc32c_parallel(memoryview(data), parts=parts, prepare=prepare)
        assert crc == google_crc32c.value(bytes(data))
        seen.sort()
        assert seen[0][0] == 0 and seen[-1][1] == len(data)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(seen))


def test_populate_maps_a_file_without_changing_it(tmp_path: pathlib.Path) -> None:
    """`populate` on a copy-on-write map of a file (any range, unaligned) leaves its bytes
    and the file as they were; on a plain buffer it does nothing."""
    data = os.urandom(3 * mmap.PAGESIZE + 17)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    mapped = map_file(str(path))
    assert isinstance(mapped, mmap.mmap)
    populate(mapped, 5, len(data))
    populate(mapped, mmap.PAGESIZE + 1, 2 * mmap.PAGESIZE)
    assert bytes(mapped) == data
    mapped[0:4] = b"XXXX"  # a private copy of the page: the file is untouched
    assert path.read_bytes() == data
    mapped.close()
    plain = bytearray(data)
    populate(plain, 0, len(plain))
    assert plain == data
