"""CRC32C on several cores: the combined value equals the one-pass CRC32C, for any split."""

from __future__ import annotations

import os

import google_crc32c
import pytest

from vertex_patterns.storage.parallel_crc import (
    PARALLEL_MIN_BYTES,
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
