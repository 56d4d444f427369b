"""One rank of a 2-rank training job that checkpoints through `CheckpointManager`.

Run under torchrun (gloo, CPU):

    python -m torch.distributed.run --standalone --nproc_per_node=2 \\
        tests/helpers/ddp_checkpoint_worker.py --mode ddp --dir CKPT --out OUT [--resume]

`--mode ddp`: a DDP model and its AdamW state, replicated on every rank (rank 0 writes them).
`--mode fsdp`: an FSDP2 (`fully_shard`) model: parameters and AdamW moments are DTensors and go
through torch.distributed.checkpoint; AdamW's step counters are plain tensors.

Trains steps 0..STEPS-1 (each rank its own deterministic batches) and saves at SAVES (async,
the one in BLOCKING blocking). With `--resume` it first restores the newest checkpoint into a
model initialised differently and continues from the step after it. With `--faults` it also
tries saves that fail on rank 0 only (FAULTS): in the caller's thread (an object that cannot be
saved) and in rank 0's background writer (a dtype safetensors lacks); every rank must raise,
and the later saves must still work. At the end each rank writes `OUT/rank{R}.json` (the
restored step, the steps it trained and saved, the errors its failed saves raised) and
`OUT/rank{R}.pt` (the full parameters, for `torch.equal` against another run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vertex_patterns.checkpoint import CheckpointManager

STEPS = 10
SAVES = (3, 5, 7)
BLOCKING = 5
FAULTS = {4: lambda: object(), 6: lambda: torch.zeros(2, dtype=torch.complex64)}


def build(mode: str, seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    model: nn.Module
    if mode == "ddp":
        model = nn.parallel.DistributedDataParallel(net)
    else:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        for layer in net:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        model = fully_shard(net, mesh=mesh)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def state_of(mode: str, model: nn.Module, optim: torch.optim.Optimizer) -> dict[str, Any]:
    if mode == "ddp":
        assert isinstance(model, nn.parallel.DistributedDataParallel)
        return {"model": model.module.state_dict(), "optim": optim.state_dict()}
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optim)
    return {"model": model_sd, "optim": optim_sd}


def load(mode: str, model: nn.Module, optim: torch.optim.Optimizer, state: Any) -> None:
    if mode == "ddp":
        assert isinstance(model, nn.parallel.DistributedDataParallel)
        model.module.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        return
    from torch.distributed.checkpoint.state_dict import set_state_dict

    set_state_dict(model, optim, model_state_dict=state["model"],
                   optim_state_dict=state["optim"])


def train_step(model: nn.Module, optim: torch.optim.Optimizer, step: int, rank: int) -> None:
    g = torch.Generator().manual_seed(1000 * step + rank)
    x, y = torch.randn(4, 8, generator=g), torch.randn(4, 4, generator=g)
    optim.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    optim.step()


def full_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in model.named_parameters():
        t = p.detach()
        if hasattr(t, "full_tensor"):  # a DTensor: all-gather (collective)
            t = t.full_tensor()
        out[name.removeprefix("module.")] = t.clone()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["ddp", "fsdp"], required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--faults", action="store_true")
    args = parser.parse_args()

    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank = dist.get_rank()
    # A resumed run starts from other weights: equality with the reference proves the restore.
    model, optim = build(args.mode, seed=1 if args.resume else 0)
    report: dict[str, Any] = {"rank": rank, "restored_step": None, "trained": [], "saved": [],
                              "errors": {}}
    start = 0
    with CheckpointManager(args.dir) as ckpt:
        if args.resume:
            restored = ckpt.restore(into=state_of(args.mode, model, optim))
            assert restored is not None, "nothing to resume from"
            load(args.mode, model, optim, restored.state)
            report["restored_step"] = restored.step
            start = restored.step + 1
        for step in range(start, STEPS):
            train_step(model, optim, step, rank)
            report["trained"].append(step)
            if step in SAVES:
                ckpt.save(step, state_of(args.mode, model, optim), blocking=step == BLOCKING)
                report["saved"].append(step)
            if args.faults and step in FAULTS:
                state = state_of(args.mode, model, optim)
                state["bad"] = FAULTS[step]() if rank == 0 else None
                try:
                    ckpt.save(step, state, blocking=True)
                except Exception as exc:
                    report["errors"][str(step)] = f"{type(exc).__name__}: {exc}"
    params = full_parameters(model)
    os.makedirs(args.out, exist_ok=True)
    torch.save(params, os.path.join(args.out, f"rank{rank}.pt"))
    with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
        json.dump(report, f)
    dist.barrier()
    dist.destroy_process_group()
    # Skip the interpreter's teardown of torch: seconds per rank on a loaded CI machine.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
