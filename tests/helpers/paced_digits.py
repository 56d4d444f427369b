"""The digits workload, slow in one region: a test's stand-in for a job that is still training
when its Spot VM is reclaimed.

With `PACED_SLOW_REGION=R` in the environment, a job whose run directory (Vertex AI's
`AIP_MODEL_DIR`, under `baseOutputDirectory`) names region R pauses `PACED_PAUSE_S` seconds
(default 0.25) per batch, so it cannot finish `--max-steps` before a preemption a few seconds
in, however fast the machine; elsewhere it runs at full speed. The pause is not part of the
workload's config, so checkpoints taken in the slow region resume anywhere.
"""

from __future__ import annotations

import os
import time

import torch

from vertex_patterns.training.workload import Workload, resolve_workload


def build(*, seed: int, device: torch.device) -> Workload:
    workload = resolve_workload("digits")(seed=seed, device=device)
    region = os.environ.get("PACED_SLOW_REGION")
    if region and f"-{region}/" in os.environ.get("AIP_MODEL_DIR", ""):
        get_batch = workload.get_batch
        pause = float(os.environ.get("PACED_PAUSE_S", "0.25"))

        def paced(ids: torch.Tensor):
            time.sleep(pause)
            return get_batch(ids)

        workload.get_batch = paced
    return workload
