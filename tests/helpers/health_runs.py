"""Run directories as the trainer leaves them, for health-check tests."""

from __future__ import annotations

import time

import torch

from vertex_patterns.checkpoint import CheckpointManager
from vertex_patterns.storage import Storage
from vertex_patterns.training.metrics import MetricsStream


def write_run(run_dir: str, losses: list[float], *, checkpoint: bool = True,
              completed: bool = False, store: Storage | None = None) -> None:
    """Metrics chunks (one record a second, ending now), a checkpoint of the last step, and
    with `completed` the final model's config.json, through the trainer's own writers."""
    store = store or Storage()
    now = time.time()
    with MetricsStream(f"{run_dir}/metrics", attempt="20261201T000000Z-aaaa",
                       storage=store) as stream:
        for i, loss in enumerate(losses):
            stream.write({"step": i + 1, "loss": loss, "grad_norm": 1.0,
                          "time": now - len(losses) + i})
    if checkpoint:
        with CheckpointManager(f"{run_dir}/checkpoints", storage=store) as ckpt:
            ckpt.save(len(losses), {"w": torch.zeros(2), "step": len(losses)}, blocking=True)
    if completed:
        store.write_bytes(f"{run_dir}/model/config.json", b"{}")
