"""digits with faults for the health tests, chosen by environment variables:

- `POISON_STEP=K`: the first sample of the batch that step K (of epoch 0) trains on gets NaN
  inputs: a poisoned batch, hit once.
- `POISON_AFTER_CALLS=N`: every batch after the N-th `get_batch` call is NaN, however often
  the run rewinds: a NaN that keeps coming back.
- `HANG_AT_CALL=N`: the N-th `get_batch` call never returns: a hang.
"""

from __future__ import annotations

import os
import time

import torch

from vertex_patterns.training.sampler import EpochSampler, SamplerPosition
from vertex_patterns.training.workload import Workload, resolve_workload


def poisoned_id(workload: Workload, seed: int, step: int) -> int:
    """The sample id `POISON_STEP=step` poisons (the first of that step's batch)."""
    sampler = EpochSampler(workload.dataset_size, workload.batch_size, seed)
    return int(sampler.batch_ids(SamplerPosition(epoch=0, batch_index=step - 1))[0])


def build(*, seed: int, device: torch.device) -> Workload:
    workload = resolve_workload("digits")(seed=seed, device=device)
    step = int(os.environ.get("POISON_STEP", "0"))
    poison = {poisoned_id(workload, seed, step)} if step else set()
    after = int(os.environ.get("POISON_AFTER_CALLS", "0"))
    hang = int(os.environ.get("HANG_AT_CALL", "0"))
    inner = workload.get_batch
    calls = [0]

    def get_batch(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls[0] += 1
        if hang and calls[0] == hang:
            time.sleep(3600)
        x, y = inner(ids)
        if after and calls[0] > after:
            return torch.full_like(x, float("nan")), y
        bad = [i for i, sample in enumerate(ids.tolist()) if sample in poison]
        if bad:
            x = x.clone()
            x[bad] = float("nan")
        return x, y

    workload.get_batch = get_batch
    return workload
