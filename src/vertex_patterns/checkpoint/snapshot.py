"""Host-memory snapshots of training state, into buffers reused across saves.

Taking the snapshot is the only part of an async save that blocks the training loop. Buffers
are allocated once per tensor key (pinned on CUDA so device-to-host copies run at full speed)
and reused by every later save, so a steady-state save is one memcpy per tensor.

Buffers for CPU tensors are views into one anonymous memory map (each page-aligned), not
allocations of torch's CPU allocator: gigabytes of long-lived blocks in malloc's heap change
how glibc trims it, after which the training step's own temporary buffers go back to the
kernel when freed and are faulted in again every step. Measured on a 100M-parameter AdamW
model: steps ran 70% slower for as long as malloc-allocated buffers were held, whether or not
a save was running; with the map they run as before.

A blocking save without a deadline needs no snapshot of CPU tensors: the caller waits until
the write is done, so the tensors cannot change under it, and it writes them where they are
(`in_place`). One with a deadline may return while the write is still stopping: it snapshots.
"""

from __future__ import annotations

import mmap
from typing import Any

import torch

_Layout = tuple[tuple[str, tuple[int, ...], torch.dtype], ...]


def _round_up(n: int) -> int:
    return -(-n // mmap.PAGESIZE) * mmap.PAGESIZE


def mapped_buffers(layout: _Layout) -> dict[str, torch.Tensor]:
    """New CPU tensors of the given keys, shapes and dtypes, each a page-aligned view into
    one anonymous memory map (outside malloc's heap; see the module docstring)."""
    counts = [torch.Size(shape).numel() for _, shape, _ in layout]
    sizes = [count * dtype.itemsize for count, (_, _, dtype) in zip(counts, layout, strict=True)]
    arena: Any = mmap.mmap(-1, max(1, sum(_round_up(n) for n in sizes)))
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for (key, shape, dtype), count, n in zip(layout, counts, sizes, strict=True):
        try:
            out[key] = (torch.frombuffer(arena, dtype=dtype, count=count, offset=offset)
                        .view(shape) if count else torch.empty(shape, dtype=dtype))
        except (TypeError, ValueError, RuntimeError):  # a dtype frombuffer does not take
            out[key] = torch.empty(shape, dtype=dtype)
        offset += _round_up(n)
    return out  # each view holds the map alive


class HostBuffers:
    """Reusable CPU buffers keyed by tensor name."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}
        self._cpu_layout: _Layout | None = None

    def _map_cpu_buffers(self, tensors: dict[str, torch.Tensor]) -> None:
        """(Re)creates the buffers of CPU tensors, all in one map, when their layout changed."""
        layout = tuple((key, tuple(t.shape), t.dtype) for key, t in tensors.items()
                       if not t.is_cuda)
        if layout == self._cpu_layout:
            return
        self._buffers.update(mapped_buffers(layout))
        self._cpu_layout = layout

    def snapshot(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Copies every tensor into its host buffer and returns the buffers (contiguous, CPU).

        The returned tensors stay valid until the next `snapshot` call.
        """
        out: dict[str, torch.Tensor] = {}
        cuda = False
        self._map_cpu_buffers(tensors)
        for key, t in tensors.items():
            buf = self._buffers.get(key)
            if buf is None or buf.shape != t.shape or buf.dtype != t.dtype:
                # A CUDA tensor's pinned buffer (CUDA's host allocator, not malloc).
                pin = t.is_cuda and torch.cuda.is_available()
                buf = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=pin)
                self._buffers[key] = buf
            buf.copy_(t, non_blocking=t.is_cuda)
            cuda = cuda or t.is_cuda
            out[key] = buf
        if cuda:
            torch.cuda.synchronize()
        # Drop buffers of tensors no longer in the state.
        for key in set(self._buffers) - set(tensors):
            del self._buffers[key]
        return out

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return sum(b.numel() * b.element_size() for b in self._buffers.values())


def in_place(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The tensors themselves, contiguous, when all are in CPU memory; else None (snapshot).

    Only for a save the caller waits on to the end; a non-contiguous tensor is copied.
    """
    if any(t.device.type != "cpu" for t in tensors.values()):
        return None
    return {key: t.contiguous() for key, t in tensors.items()}
