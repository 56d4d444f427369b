"""Host-memory snapshots of training state, into buffers reused across saves.

Taking the snapshot is the only part of an async save that blocks the training loop. Buffers
are allocated once per tensor key (pinned on CUDA so device-to-host copies run at full speed)
and reused by every later save, so a steady-state save is one memcpy per tensor.

A blocking save without a deadline needs no snapshot of CPU tensors: the caller waits until
the write is done, so the tensors cannot change under it, and it writes them where they are
(`in_place`). One with a deadline may return while the write is still stopping: it snapshots.
"""

from __future__ import annotations

import torch


class HostBuffers:
    """Reusable CPU buffers keyed by tensor name."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def snapshot(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Copies every tensor into its host buffer and returns the buffers (contiguous, CPU).

        The returned tensors stay valid until the next `snapshot` call.
        """
        out: dict[str, torch.Tensor] = {}
        cuda = False
        for key, t in tensors.items():
            buf = self._buffers.get(key)
            if buf is None or buf.shape != t.shape or buf.dtype != t.dtype:
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
