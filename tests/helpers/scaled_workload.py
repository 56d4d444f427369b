"""A user workload plugged in as `module:function`: digits with a loss scaler, to show the
scaler's state (its scale and growth tracker) travels through checkpoints."""

from __future__ import annotations

import torch

from vertex_patterns.training.workload import Workload, resolve_workload


def build(*, seed: int, device: torch.device) -> Workload:
    workload = resolve_workload("digits")(seed=seed, device=device)
    # growth_interval=3: the scale changes every few steps, so a lost scaler state shows.
    workload.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=3)
    workload.name = "digits-scaled"
    return workload
