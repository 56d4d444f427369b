"""The learning-rate schedule the built-in workloads share: linear warmup, cosine decay, floor.

The schedule ends at a fixed `decay_steps` from the workload's config rather than at the run's
`--max-steps`, so a factory needs only a seed and a device, and the same config gives the same
rates whatever length of run it is driven for.
"""

from __future__ import annotations

import math

import torch


def warmup_cosine(optimizer: torch.optim.Optimizer, *, warmup_steps: int, decay_steps: int,
                  min_lr_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """A schedule that warms up linearly, decays by a cosine, then stays at a floor.

    Args:
        optimizer: The optimizer whose base rates are scaled.
        warmup_steps: Steps of linear warmup from `1 / warmup_steps` of the base rate.
        decay_steps: The step at which the cosine reaches the floor (>= warmup_steps).
        min_lr_ratio: The floor, as a fraction of the base rate, held after `decay_steps`.

    Returns:
        A `LambdaLR`, stepped once per optimizer step. Its state dict holds only the step
        count and the rates, so it checkpoints without pickling.

    Raises:
        ValueError: Negative steps, `decay_steps < warmup_steps`, or a ratio outside [0, 1].
    """
    if warmup_steps < 0 or decay_steps < warmup_steps:
        raise ValueError(f"need 0 <= warmup_steps <= decay_steps, got {warmup_steps}, "
                         f"{decay_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if step >= decay_steps or decay_steps == warmup_steps:
            return min_lr_ratio
        progress = (step - warmup_steps) / (decay_steps - warmup_steps)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
