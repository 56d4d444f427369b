"""`digits`: an MLP classifier on scikit-learn's bundled 8x8 handwritten digits.

The 1,797 images ship inside scikit-learn, so nothing is downloaded. A fixed permutation (seeded
independently of the training seed) holds out the last 20% for evaluation; every training seed
sees the same split. Pixels are scaled to [0, 1]. Held-out accuracy passes 0.9 within a few
hundred steps on one CPU core.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from vertex_patterns.training.workload import Workload
from vertex_patterns.training.workloads.lr_schedule import warmup_cosine

NAME = "digits"
SPLIT_SEED = 20_240_501
"""Seeds the train/held-out split; fixed so that every training seed sees the same split."""
HELD_OUT_FRACTION = 0.2
NUM_FEATURES = 64
NUM_CLASSES = 10
GRAD_CLIP = 1.0


def load_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The digits as (train_x, train_y, held_out_x, held_out_y), float32 features in [0, 1]."""
    from sklearn.datasets import load_digits  # heavy import, only for this workload

    digits = load_digits()
    x = torch.from_numpy(digits.data).to(torch.float32) / 16.0
    y = torch.from_numpy(digits.target).to(torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    num_train = len(y) - round(len(y) * HELD_OUT_FRACTION)
    train, held_out = order[:num_train], order[num_train:]
    return x[train], y[train], x[held_out], y[held_out]


def make_model(hidden: int, layers: int) -> nn.Sequential:
    """An MLP: `layers` hidden layers of width `hidden` with ReLU, then 10 logits."""
    modules: list[nn.Module] = []
    width = NUM_FEATURES
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    modules.append(nn.Linear(width, NUM_CLASSES))
    return nn.Sequential(*modules)


def build(*, seed: int, device: torch.device, batch_size: int = 64, lr: float = 3e-3,
          weight_decay: float = 1e-4, hidden: int = 128, layers: int = 2,
          warmup_steps: int = 20, decay_steps: int = 600,
          min_lr_ratio: float = 0.05) -> Workload:
    """Builds the digits workload.

    Args:
        seed: Seeds the model's initial parameters (the data split does not depend on it).
        device: Where the model and the data live.
        batch_size: Images per step on each rank.
        lr: AdamW's peak learning rate.
        weight_decay: AdamW's decoupled weight decay.
        hidden: Width of each hidden layer.
        layers: Number of hidden layers.
        warmup_steps: Steps of linear LR warmup.
        decay_steps: Step at which the cosine decay reaches its floor.
        min_lr_ratio: The LR floor as a fraction of `lr`.

    Returns:
        The workload; its config records every argument but `seed` and `device`.
    """
    train_x, train_y, held_x, held_y = (t.to(device) for t in load_split())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model(hidden, layers)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = warmup_cosine(optimizer, warmup_steps=warmup_steps, decay_steps=decay_steps,
                              min_lr_ratio=min_lr_ratio)

    def get_batch(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = ids.to(device=device, dtype=torch.int64)
        return train_x.index_select(0, ids), train_y.index_select(0, ids)

    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y)

    def evaluate(model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                logits = model(held_x)
                loss = F.cross_entropy(logits, held_y).item()
                accuracy = (logits.argmax(dim=1) == held_y).float().mean().item()
        finally:
            model.train(was_training)
        return {"accuracy": accuracy, "loss": loss}

    config: dict[str, Any] = {
        "dataset": "sklearn.datasets.load_digits", "split_seed": SPLIT_SEED,
        "held_out_fraction": HELD_OUT_FRACTION, "num_train": len(train_y),
        "num_held_out": len(held_y), "model": "mlp", "in_features": NUM_FEATURES,
        "hidden": hidden, "layers": layers, "num_classes": NUM_CLASSES,
        "optimizer": "adamw", "lr": lr, "weight_decay": weight_decay,
        "batch_size": batch_size, "schedule": "warmup_cosine", "warmup_steps": warmup_steps,
        "decay_steps": decay_steps, "min_lr_ratio": min_lr_ratio, "grad_clip": GRAD_CLIP,
    }
    return Workload(name=NAME, model=model, optimizer=optimizer, scheduler=scheduler,
                    dataset_size=len(train_y), batch_size=batch_size, get_batch=get_batch,
                    loss_fn=loss_fn, evaluate=evaluate, config=config, grad_clip=GRAD_CLIP)
