"""The local-disk fast paths of checkpoints: blocking saves written from the live tensors,
restores as copy-on-write maps of the files, the aligned file layout, and `WritebackFile`.

Each invariant is checked on real files: tensors written to after a restore, files deleted and
rewritten in place under a restored state, saved bytes compared with what was given.
"""

from __future__ import annotations

import mmap
import os
import shutil
import struct
import tempfile

import pytest
import torch

from vertex_patterns.checkpoint import CheckpointManager
from vertex_patterns.checkpoint.inspect import verify_checkpoints
from vertex_patterns.checkpoint.layout import join, step_dir_name
from vertex_patterns.checkpoint.serialization import DATA_ALIGNMENT
from vertex_patterns.checkpoint.snapshot import HostBuffers
from vertex_patterns.storage import Storage, crc32c_bytes, diskio
from vertex_patterns.storage.diskio import (
    DIRECT_CHUNK,
    DirectFile,
    WritebackFile,
    map_file,
    open_for_checkpoint,
)

TENSOR_FILE = "tensors-00000.safetensors"


def mixed_state() -> dict[str, torch.Tensor]:
    """Tensors of every element size, in an order that would misalign them if laid out as given."""
    g = torch.Generator().manual_seed(1)
    return {
        "mask": torch.tensor([True, False, True]),  # 3 bytes
        "codes": torch.tensor([-3, 7, 1], dtype=torch.int8),  # 3 bytes
        "half": torch.randn(5, generator=g).to(torch.float16),  # 10 bytes
        "bf": torch.randn(3, generator=g).to(torch.bfloat16),  # 6 bytes
        "w": torch.randn(7, 3, generator=g),  # 84 bytes
        "ids": torch.arange(5, dtype=torch.int64),  # 40 bytes
        "d": torch.randn(3, generator=g, dtype=torch.float64),  # 24 bytes
    }


def tensor_file(root: str, step: int) -> str:
    return os.path.join(root, step_dir_name(step), TENSOR_FILE)


class TestRestoredTensorsAreAlignedViews:
    """Local restores return tensors whose memory is the file's map, each aligned to its
    element size, and the file's data section starts at a multiple of DATA_ALIGNMENT; the file
    still loads with the safetensors library."""

    def test_layout(self, store: Storage, tmp_path) -> None:
        from safetensors.torch import load_file

        root = str(tmp_path / "ckpt")
        saved = mixed_state()
        with CheckpointManager(root, storage=store) as manager:
            manager.save(1, saved, blocking=True)
            restored = manager.restore()
        assert restored is not None
        for key, t in restored.state.items():
            assert torch.equal(t, saved[key]), key
            assert t.data_ptr() % t.element_size() == 0, key
        with open(tensor_file(root, 1), "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
        assert (8 + header_len) % DATA_ALIGNMENT == 0
        loaded = load_file(tensor_file(root, 1))
        assert set(loaded) == set(saved)
        assert all(torch.equal(loaded[k], saved[k]) for k in saved)


class TestWritingRestoredTensorsLeavesTheCheckpointAlone:
    """Writing to a restored tensor changes that tensor only: the files keep their bytes, a
    second restore returns the saved values, and the checkpoint still verifies."""

    def test_write_after_restore(self, store: Storage, tmp_path) -> None:
        root = str(tmp_path / "ckpt")
        saved = {"w": torch.arange(10_000.0), "b": torch.ones(3)}
        with CheckpointManager(root, storage=store) as manager:
            manager.save(1, saved, blocking=True)
            with open(tensor_file(root, 1), "rb") as f:
                before = f.read()
            first = manager.restore()
            assert first is not None
            first.state["w"].mul_(-1)
            first.state["b"].zero_()
            assert torch.equal(first.state["w"], -torch.arange(10_000.0))
            second = manager.restore()
        assert second is not None
        assert torch.equal(second.state["w"], torch.arange(10_000.0))
        assert torch.equal(second.state["b"], torch.ones(3))
        with open(tensor_file(root, 1), "rb") as f:
            assert f.read() == before
        assert verify_checkpoints(root, storage=store).ok


class TestRestoredStateOutlivesItsFiles:
    """A restored state stays valid and unchanged after retention deletes its checkpoint."""

    def test_deleted_by_retention(self, store: Storage, tmp_path) -> None:
        root = str(tmp_path / "ckpt")
        with CheckpointManager(root, storage=store, keep_last=1) as manager:
            manager.save(1, {"w": torch.full((50_000,), 1.0)}, blocking=True)
            restored = manager.restore()
            assert restored is not None
            manager.save(2, {"w": torch.full((50_000,), 2.0)}, blocking=True)
            manager.wait()
            assert manager.all_steps() == [2]
        assert not os.path.exists(os.path.join(root, step_dir_name(1)))
        assert torch.equal(restored.state["w"], torch.full((50_000,), 1.0))
        restored.state["w"].add_(1)  # still writable
        assert torch.equal(restored.state["w"], torch.full((50_000,), 2.0))


class TestUnmappedRestoreOwnsItsMemory:
    """With restore_mapped=False the restored tensors are private memory: rewriting the file in
    place afterwards (what `cp` over it does) does not change them."""

    def test_rewrite_in_place(self, store: Storage, tmp_path) -> None:
        root = str(tmp_path / "ckpt")
        with CheckpointManager(root, storage=store, restore_mapped=False) as manager:
            manager.save(1, {"w": torch.arange(4096.0)}, blocking=True)
            restored = manager.restore()
        assert restored is not None
        path = tensor_file(root, 1)
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.write(b"\xff" * size)
            f.truncate(size // 2)
        assert torch.equal(restored.state["w"], torch.arange(4096.0))


class TestBlockingSaveWritesTheLiveTensors:
    """A blocking save without a deadline commits exactly the given CPU tensors without copying
    them into host buffers (none are allocated); one with a deadline, and an async save, take a
    snapshot. A non-contiguous tensor is saved with its values."""

    def test_no_snapshot(self, store: Storage, tmp_path) -> None:
        root = str(tmp_path / "ckpt")
        live = {"w": torch.randn(1000), "t": torch.randn(4, 3).t()}
        with CheckpointManager(root, storage=store) as manager:
            manager.save(1, live, blocking=True)
            assert manager._buffers.nbytes == 0
            restored = manager.restore()
            assert restored is not None
            assert torch.equal(restored.state["w"], live["w"])
            assert torch.equal(restored.state["t"], live["t"])
            manager.save(2, live, blocking=True, deadline_s=60.0)
            assert manager._buffers.nbytes > 0
            manager.save(3, live)
            manager.wait()
            assert manager.all_steps() == [1, 2, 3]


class TestWritebackFile:
    """WritebackFile writes every byte given, in order, whatever the buffer type and size, and
    its size and CRC32C match what was written (write-back is started on the way)."""

    def test_contents(self, tmp_path) -> None:
        path = str(tmp_path / "f")
        t = torch.arange(3_000_000, dtype=torch.int32)  # 12 MB: several write-back ranges
        pieces: list[bytes | bytearray | memoryview] = [
            b"head", bytearray(b"\x00\x01"), memoryview(t.numpy()), b"", memoryview(b"tail")]
        with WritebackFile(path, writeback_bytes=1 << 20) as f:
            for p in pieces:
                f.write(p)
            f.sync()
            assert f.tell() == os.path.getsize(path)
        expected = b"".join(bytes(p) for p in pieces)
        with open(path, "rb") as g:
            data = g.read()
        assert data == expected
        assert crc32c_bytes(data) == crc32c_bytes(expected)

    def test_map_file(self, tmp_path) -> None:
        path = str(tmp_path / "f")
        with open(path, "wb") as f:
            f.write(b"abc" * 1000)
        mapped = map_file(path)
        assert bytes(mapped) == b"abc" * 1000
        mapped[0:3] = b"xyz"  # private: the file keeps its bytes
        with open(path, "rb") as f:
            assert f.read(3) == b"abc"
        empty = str(tmp_path / "e")
        open(empty, "wb").close()
        assert len(map_file(empty)) == 0


class TestHostBuffers:
    """Async-save snapshots of CPU tensors land in page-aligned views of one memory map,
    reused while the state's layout stays the same and rebuilt when it changes; every dtype
    and shape (0-d, empty, non-contiguous) round-trips."""

    def test_reuse_and_relayout(self) -> None:
        buffers = HostBuffers()
        state = {"w": torch.randn(300, 70), "b": torch.arange(7, dtype=torch.int16),
                 "s": torch.tensor(3.5, dtype=torch.float64), "e": torch.empty(0, 4),
                 "t": torch.randn(40, 30).t(), "f": torch.tensor([True, False]),
                 "h": torch.randn(5, dtype=torch.bfloat16)}
        first = buffers.snapshot(state)
        for key, t in state.items():
            assert first[key].shape == t.shape and first[key].dtype == t.dtype
            assert torch.equal(first[key], t), key
            if t.numel():
                assert first[key].data_ptr() % mmap.PAGESIZE == 0, key
        pointers = {k: v.data_ptr() for k, v in first.items()}
        state["w"].add_(1.0)
        second = buffers.snapshot(state)
        assert {k: v.data_ptr() for k, v in second.items()} == pointers  # reused
        assert torch.equal(second["w"], state["w"])
        state["w"] = torch.randn(10, 10)  # a new layout: new buffers, same values
        third = buffers.snapshot(state)
        assert third["w"].shape == (10, 10) and torch.equal(third["w"], state["w"])
        assert torch.equal(third["b"], state["b"])
        del state["h"]
        assert "h" not in buffers.snapshot(state)


class TestDirectFile:
    """DirectFile (O_DIRECT through staging buffers) writes every byte given, in order, for
    any piece sizes, to exactly their length (the padded last block is truncated away); where
    the filesystem refuses O_DIRECT, checkpoint files still come out whole."""

    @pytest.mark.parametrize("total", [0, 1, 4095, 4096, 4097, DIRECT_CHUNK,
                                       2 * DIRECT_CHUNK + 12_345])
    def test_contents(self, tmp_path, total: int) -> None:
        path = str(tmp_path / "f")
        data = os.urandom(total)
        sizes = [1, 4095, 3, DIRECT_CHUNK - 5, 7, DIRECT_CHUNK + 1]
        try:
            f = DirectFile(path)
        except OSError:
            pytest.skip("this filesystem does not take O_DIRECT")
        with f:
            at, i = 0, 0
            while at < total:
                piece = memoryview(data)[at:at + sizes[i % len(sizes)]]
                assert f.write(piece) == len(piece)
                at += len(piece)
                i += 1
            f.sync()
            assert f.tell() == total
        assert os.path.getsize(path) == total
        with open(path, "rb") as g:
            assert g.read() == data

    def test_tensor_memory_and_second_file_reuse_buffers(self, tmp_path) -> None:
        t = torch.arange(5_000_000, dtype=torch.int32)  # 20 MB: several buffers in flight
        for name in ("a", "b"):
            path = str(tmp_path / name)
            f = open_for_checkpoint(path)
            with f:
                f.write(b"hdr")
                f.write(memoryview(t.numpy()))
                f.sync()
            with open(path, "rb") as g:
                assert g.read() == b"hdr" + t.numpy().tobytes()

    def test_tmpfs(self) -> None:
        """tmpfs takes O_DIRECT on some kernels and refuses it on others: either way the
        checkpoint file comes out whole."""
        if not os.path.isdir("/dev/shm"):
            pytest.skip("no /dev/shm here")
        d = tempfile.mkdtemp(dir="/dev/shm")
        try:
            path = os.path.join(d, "f")
            with open_for_checkpoint(path) as f:
                f.write(b"x" * 10_000)
                f.sync()
            with open(path, "rb") as g:
                assert g.read() == b"x" * 10_000
        finally:
            shutil.rmtree(d)

    def test_without_o_direct(self, tmp_path, monkeypatch) -> None:
        """Where the platform has no O_DIRECT, checkpoint files are WritebackFiles."""
        monkeypatch.setattr(diskio, "_O_DIRECT", 0)
        path = str(tmp_path / "f")
        with open_for_checkpoint(path) as f:
            assert isinstance(f, WritebackFile)
            f.write(b"y" * 5000)
            f.sync()
        with open(path, "rb") as g:
            assert g.read() == b"y" * 5000


class TestGcsRestoreReadsIntoMemory:
    """On GCS a restore reads each file into memory (nothing to map) and round-trips tensors of
    every element size in the aligned layout."""

    def test_gcs_round_trip(self, store: Storage, make_bucket) -> None:
        root = f"gs://{make_bucket('ckio')}/run"
        saved = mixed_state()
        with CheckpointManager(root, storage=store) as manager:
            manager.save(1, saved, blocking=True)
            restored = manager.restore()
        assert restored is not None
        assert restored.uri == join(root, step_dir_name(1))
        for key, t in restored.state.items():
            assert torch.equal(t, saved[key]), key
