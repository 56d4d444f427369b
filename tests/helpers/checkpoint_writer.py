"""A checkpoint writer to SIGKILL, and the state it saves at each step.

Run as a process it is a small fork server: it imports torch once (2-3 s) and then, for each
`run DIRECTORY` line on stdin, forks a writer that restores the newest checkpoint and saves
`expected_state(step)` for step after step, blocking, until it is killed. Forking keeps 50 kills
in seconds; each writer is still a real process that dies by a real SIGKILL.

Lines on stdout (each one `os.write`, so the server's and the writers' lines never mix; the
writer names its own pid, so nothing depends on who of the two prints first):

    ready PID STEP     writer PID restored and starts saving at STEP
    saved STEP         save(STEP, blocking=True) returned: STEP is committed
    exit PID STATUS    writer PID ended (os.waitpid status)
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Any

import torch

from vertex_patterns.checkpoint import CheckpointManager  # imported once, before the forks

TENSORS = 4
"""Tensors per state; with `SHARD_BYTES` each goes to its own file, so saves have several
data files before the manifest."""

ELEMENTS = 256 * 1024
"""float32 elements per tensor (1 MiB)."""

SHARD_BYTES = 1024 * 1024
"""Target tensor-file size of the writer's saves."""


def expected_state(step: int) -> dict[str, Any]:
    """The state saved at `step`: every tensor and value differs from step to step."""
    g = torch.Generator().manual_seed(step)
    return {
        "model": {f"layer{i}": torch.randn(ELEMENTS, generator=g) for i in range(TENSORS)},
        "optim": {"state": {0: {"step": torch.tensor(float(step))}},
                  "param_groups": [{"lr": 1.0 / (step + 1), "betas": (0.9, 0.999)}]},
        "data": {"step": step, "tag": f"step-{step}"},
    }


def assert_same_state(got: Any, want: Any, path: str = "state") -> None:
    """Asserts `got` equals `want` exactly: container types, key types, tensor dtype/values."""
    assert type(got) is type(want), f"{path}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, dict):
        assert [(type(k), k) for k in got] == [(type(k), k) for k in want], \
            f"{path}: keys {list(got)} != {list(want)}"
        for k in want:
            assert_same_state(got[k], want[k], f"{path}/{k}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), f"{path}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same_state(g, w, f"{path}/{i}")
    elif isinstance(want, torch.Tensor):
        assert got.device.type == "cpu", f"{path}: on {got.device}"
        assert (got.dtype, got.shape) == (want.dtype, want.shape), \
            f"{path}: {got.dtype}{list(got.shape)} != {want.dtype}{list(want.shape)}"
        assert torch.equal(got, want), f"{path}: tensor values differ"
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


def _emit(line: str) -> None:
    os.write(1, (line + "\n").encode())


def _write_forever(directory: str) -> None:
    manager = CheckpointManager(directory, keep_last=2, shard_bytes=SHARD_BYTES)
    restored = manager.restore()
    step = restored.step + 1 if restored is not None else 0
    _emit(f"ready {os.getpid()} {step}")
    while True:
        manager.save(step, expected_state(step), blocking=True)
        _emit(f"saved {step}")
        step += 1


def main() -> None:
    """Serves `run DIRECTORY` lines until stdin closes."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    torch.set_num_threads(1)  # small copies; leaves the CPUs to the test and the emulator
    for line in sys.stdin:
        command, _, directory = line.strip().partition(" ")
        if command != "run":
            continue
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                _write_forever(directory)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        _emit(f"exit {pid} {status}")


if __name__ == "__main__":
    main()
