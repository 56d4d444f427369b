"""Nested training state <-> (JSON skeleton, flat tensors), and safetensors files written and
read as streams.

Nothing here unpickles. Tensors go to safetensors files; everything else (numbers, strings,
lists, tuples, dicts with any scalar keys, bytes, numpy arrays) to a JSON skeleton whose
`{"__tensor__": key}` leaves point into the tensor files. Dicts with non-string keys (an
optimizer's `state`) and tuples keep their types through a round trip.

The safetensors library serialises a whole file into one bytes object before writing; a 1 GB
model would need 1 GB extra and a second pass. This module writes the same format (8-byte
header length, JSON header, raw little-endian bytes) straight from the tensors' memory in
pieces small enough to stay in the CPU cache between their CRC32C and their write, and reads
it back as views into one buffer (a memory map of the file, see `storage.diskio.map_file`)
without copies. The data section starts on a 64-byte boundary and tensors are laid out by
descending element size, so every view is aligned for its dtype. Files stay loadable with
`safetensors.torch.load_file`.
"""

from __future__ import annotations

import base64
import ctypes
import json
import math
import mmap
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import google_crc32c
import torch

from vertex_patterns.errors import StoppedError, VertexPatternsError
from vertex_patterns.storage.checksum import crc32c_extend_buffer, encode_crc32c

TENSOR_TAG = "__tensor__"
NDARRAY_TAG = "__ndarray__"
TUPLE_TAG = "__tuple__"
DICT_TAG = "__dict__"
BYTES_TAG = "__bytes__"
_TAGS = {TENSOR_TAG, NDARRAY_TAG, TUPLE_TAG, DICT_TAG, BYTES_TAG}

DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
for _name, _code in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"),
                     ("uint16", "U16"), ("uint32", "U32"), ("uint64", "U64")):
    if hasattr(torch, _name):
        DTYPES[getattr(torch, _name)] = _code
CODES = {code: dtype for dtype, code in DTYPES.items()}

assert sys.byteorder == "little", "safetensors stores little-endian data"

DATA_ALIGNMENT = 64
"""Where the data section of a file written here starts: a multiple of this (a cache line)."""
PIECE_BYTES = 4 * 1024 * 1024
"""Bytes checksummed then written per call: small enough that the write reads them from the
CPU cache the checksum just filled, large enough that per-call costs do not count."""


class Sink(Protocol):
    """Where a file is written: a binary file object, a `WritebackFile`, an upload."""

    def write(self, data: bytes | memoryview, /) -> int: ...


class StateError(VertexPatternsError, TypeError):
    """The state holds something that cannot be checkpointed without pickling."""


def _tensor_key(path: tuple[str, ...]) -> str:
    return "/".join(path) if path else "_"


def flatten_state(state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Splits a nested state into a JSON-able skeleton and a flat `{key: tensor}` map.

    Args:
        state: Nested dicts/lists/tuples of tensors, numbers, strings, bytes, None and numpy
            arrays or scalars.

    Returns:
        The skeleton and the tensors (detached, as given: not copied).

    Raises:
        StateError: A leaf of an unsupported type, named by its path.
    """
    tensors: dict[str, torch.Tensor] = {}

    def enc(value: Any, path: tuple[str, ...]) -> Any:
        if isinstance(value, torch.Tensor):
            key = _tensor_key(path)
            if key in tensors:
                raise StateError(f"two tensors map to the key {key!r}; rename one")
            tensors[key] = value.detach()
            return {TENSOR_TAG: key}
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, bytes):
            return {BYTES_TAG: base64.b64encode(value).decode("ascii")}
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value) and not (_TAGS & set(value)) \
                    and "__float__" not in value:
                return {k: enc(v, (*path, k)) for k, v in value.items()}
            items = []
            for k, v in value.items():
                if not (k is None or isinstance(k, (bool, int, float, str))):
                    raise StateError(f"{'/'.join(path) or 'state'}: dict key {k!r} of type "
                                     f"{type(k).__name__} is not a str/int/float/bool/None")
                items.append([k, enc(v, (*path, str(k)))])
            return {DICT_TAG: items}
        if isinstance(value, list):
            return [enc(v, (*path, str(i))) for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return {TUPLE_TAG: [enc(v, (*path, str(i))) for i, v in enumerate(value)]}
        np = sys.modules.get("numpy")
        if np is not None:
            if isinstance(value, np.ndarray):
                key = _tensor_key(path)
                tensors[key] = torch.from_numpy(np.ascontiguousarray(value))
                return {NDARRAY_TAG: key}
            if isinstance(value, np.generic):
                return enc(value.item(), path)
        raise StateError(f"{'/'.join(path) or 'state'}: cannot checkpoint a "
                         f"{type(value).__module__}.{type(value).__qualname__} without "
                         "pickling; convert it to tensors, numbers, strings or containers")

    return enc(state, ()), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `flatten_state`."""
    return _decode(skeleton, tensors)


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    # A module-level function, not a closure: a recursive closure is a reference cycle that
    # would keep `tensors` (and the file maps they view) alive until the next GC run.
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if TENSOR_TAG in value:
        return tensors[value[TENSOR_TAG]]
    if NDARRAY_TAG in value:
        return tensors[value[NDARRAY_TAG]].numpy()
    if TUPLE_TAG in value:
        return tuple(_decode(v, tensors) for v in value[TUPLE_TAG])
    if DICT_TAG in value:
        return {k: _decode(v, tensors) for k, v in value[DICT_TAG]}
    if BYTES_TAG in value:
        return base64.b64decode(value[BYTES_TAG])
    if "__float__" in value and len(value) == 1:
        return float(value["__float__"])
    return {k: _decode(v, tensors) for k, v in value.items()}


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """A zero-copy byte view of a contiguous CPU tensor (no numpy needed)."""
    assert t.device.type == "cpu" and t.is_contiguous()
    n = t.numel() * t.element_size()
    if n == 0:
        return memoryview(b"")
    return memoryview((ctypes.c_char * n).from_address(t.data_ptr())).cast("B")


@dataclass(frozen=True)
class WrittenFile:
    """A file of a checkpoint: its name inside the step directory, size and CRC32C."""

    name: str
    size: int
    crc32c: str


def file_order(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`tensors` in the order they are laid out in a file: by descending element size, so
    each one's offset is a multiple of its element size (a stable sort: ties keep order)."""
    return dict(sorted(tensors.items(), key=lambda kv: -kv[1].element_size()))


def safetensors_header(tensors: dict[str, torch.Tensor]) -> bytes:
    """The header (length prefix included) of a safetensors file holding `tensors` in order.

    The JSON is padded with spaces (which the format allows) so that the data section starts
    at a multiple of `DATA_ALIGNMENT`.
    """
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key, t in tensors.items():
        if t.dtype not in DTYPES:
            raise StateError(f"{key}: dtype {t.dtype} has no safetensors code")
        n = t.numel() * t.element_size()
        header[key] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                       "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % DATA_ALIGNMENT)
    return struct.pack("<Q", len(raw)) + raw


def write_safetensors(
    sink: Sink,
    tensors: dict[str, torch.Tensor],
    *,
    should_stop: Callable[[], bool] | None = None,
    piece_bytes: int = PIECE_BYTES,
) -> tuple[int, str]:
    """Streams `tensors` (contiguous CPU) into `sink` as a safetensors file.

    Each tensor's memory is written as it is (no staging copy); its CRC32C is taken over the
    same memory just before it is written.

    Args:
        sink: A binary file object.
        tensors: Map of key to tensor (laid out in `file_order`).
        should_stop: Polled between pieces; when it returns True the write stops with
            `StoppedError` (a save past its deadline).
        piece_bytes: Bytes checksummed and written per call.

    Returns:
        Bytes written and their CRC32C (GCS base64 form).
    """
    tensors = file_order(tensors)
    header = safetensors_header(tensors)
    sink.write(header)
    crc = google_crc32c.extend(0, header)
    total = len(header)
    for t in tensors.values():
        view = tensor_bytes(t)
        for start in range(0, len(view), piece_bytes):
            if should_stop is not None and should_stop():
                raise StoppedError("checkpoint write stopped (deadline passed)")
            piece = view[start:start + piece_bytes]
            crc = crc32c_extend_buffer(crc, piece)
            sink.write(piece)
            total += len(piece)
    return total, encode_crc32c(crc)


def parse_safetensors(
    buf: bytearray | memoryview | mmap.mmap, *, copy: bool = False
) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file held in `buf`, as views into it (or copies).

    A view keeps `buf` alive (a map stays mapped) for as long as it lives.

    Raises:
        ValueError: The buffer is not a well-formed safetensors file.
    """
    view = memoryview(buf)
    if len(view) < 8:
        raise ValueError("file too short for a safetensors header")
    (n,) = struct.unpack("<Q", view[:8])
    if n > len(view) - 8 or n > 100 * 1024 * 1024:
        raise ValueError("safetensors header length is out of range")
    header = json.loads(bytes(view[8:8 + n]))
    base = 8 + n
    data_len = len(view) - base
    out: dict[str, torch.Tensor] = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        dtype = CODES.get(meta["dtype"])
        if dtype is None:
            raise ValueError(f"{key}: unknown dtype {meta['dtype']!r}")
        start, end = meta["data_offsets"]
        shape = [int(s) for s in meta["shape"]]
        itemsize = torch.empty((), dtype=dtype).element_size()
        count = math.prod(shape)
        if not 0 <= start <= end <= data_len or end - start != count * itemsize:
            raise ValueError(f"{key}: data offsets do not match its shape")
        if count == 0:
            t = torch.empty(shape, dtype=dtype)
        else:
            t = torch.frombuffer(view, dtype=dtype, count=count, offset=base + start)
            t = t.reshape(shape)
            if copy:
                t = t.clone()
        out[key] = t
    return out


def iter_shards(tensors: dict[str, torch.Tensor], shard_bytes: int
                ) -> Iterator[dict[str, torch.Tensor]]:
    """Groups tensors, in order, into shards of about `shard_bytes` each."""
    shard: dict[str, torch.Tensor] = {}
    size = 0
    for key, t in tensors.items():
        n = t.numel() * t.element_size()
        if shard and size + n > shard_bytes:
            yield shard
            shard, size = {}, 0
        shard[key] = t
        size += n
    if shard or not tensors:
        yield shard
