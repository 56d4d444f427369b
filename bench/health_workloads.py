"""Workloads for bench/health.py: tiny-lm with one poisoned step (`POISON_STEP=K`: the batch
of step K of epoch 0 gets a NaN loss)."""

from __future__ import annotations

import os

import torch

from vertex_patterns.training.sampler import EpochSampler, SamplerPosition
from vertex_patterns.training.workload import Workload, resolve_workload


def poisoned_tiny_lm(*, seed: int, device: torch.device) -> Workload:
    workload = resolve_workload("tiny-lm")(seed=seed, device=device)
    step = int(os.environ.get("POISON_STEP", "0"))
    sampler = EpochSampler(workload.dataset_size, workload.batch_size, seed)
    poison = int(sampler.batch_ids(SamplerPosition(epoch=0, batch_index=step - 1))[0]) \
        if step else -1
    get_batch, loss_fn = workload.get_batch, workload.loss_fn
    last: list[bool] = [False]

    def tagged(ids: torch.Tensor):  # type: ignore[no-untyped-def]
        last[0] = poison in ids.tolist()
        return get_batch(ids)

    def poisoned_loss(model, batch):  # type: ignore[no-untyped-def]
        loss = loss_fn(model, batch)
        return loss * float("nan") if last[0] else loss

    workload.get_batch, workload.loss_fn = tagged, poisoned_loss
    return workload
