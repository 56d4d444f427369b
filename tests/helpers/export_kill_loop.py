"""Exports a model over and over into one directory, and SIGKILLs the exporter at seeded random
instants; after each kill, reports what the directory holds.

    python export_kill_loop.py MODEL_DIR ROUNDS SEED

Each round forks a child that exports step 1, 2, 3, ... (weights filled with the step
number, so a `config.json` naming step s must sit beside weights of step s), telling the parent
after each; the parent lets it finish two exports, timing the second, then SIGKILLs it at a
random fraction of an export's duration into the next. The parent then reads the directory
and prints one JSON line per round:
`{"config_step": s | null, "weights_step": s | null, "complete": bool}`. Importing torch once
and forking keeps each kill cheap.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time

import torch
from safetensors.torch import load_file

from vertex_patterns.storage import Storage
from vertex_patterns.training.export import export_model
from vertex_patterns.training.workload import Workload

SHAPES = {"a": (512, 1024), "b": (1024,), "c": (256, 256)}


def workload(step: int) -> Workload:
    model = torch.nn.Module()
    for name, shape in SHAPES.items():
        model.register_buffer(name, torch.full(shape, float(step)))
    return Workload(name="kill-loop", model=model, optimizer=torch.optim.SGD([torch.zeros(1)]),
                    scheduler=None, dataset_size=1, batch_size=1, get_batch=lambda ids: ids,
                    loss_fn=lambda m, b: torch.zeros(()), evaluate=None, config={})


def child(model_dir: str, first_step: int, done_fd: int) -> None:
    store = Storage()
    step = first_step
    while True:
        export_model(store, model_dir, workload(step), step, {})
        os.write(done_fd, b".")
        step += 1


def inspect(model_dir: str) -> dict[str, object]:
    config_path = os.path.join(model_dir, "config.json")
    weights_path = os.path.join(model_dir, "model.safetensors")
    config_step = None
    if os.path.exists(config_path):
        with open(config_path) as f:
            config_step = json.load(f)["step"]
    weights_step, complete = None, False
    try:
        tensors = load_file(weights_path)
        complete = {k: tuple(v.shape) for k, v in tensors.items()} == SHAPES
        values = {float(v.flatten()[0]) for v in tensors.values()}
        uniform = all(bool((v == v.flatten()[0]).all()) for v in tensors.values())
        if complete and uniform and len(values) == 1:
            weights_step = int(values.pop())
    except (OSError, ValueError, RuntimeError) as exc:  # missing or truncated file
        complete = False
        print(json.dumps({"note": f"weights unreadable: {type(exc).__name__}"}), file=sys.stderr)
    return {"config_step": config_step, "weights_step": weights_step, "complete": complete}


def main() -> None:
    model_dir, rounds, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    rng = random.Random(seed)
    for number in range(rounds):
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read_fd)
                child(model_dir, 1000 * number + 1, write_fd)
            finally:
                os._exit(1)
        os.close(write_fd)
        os.read(read_fd, 1)  # the first export (it also sets up the storage client)
        started = time.monotonic()
        os.read(read_fd, 1)
        took = time.monotonic() - started  # one export, steady state
        time.sleep(rng.uniform(0.0, took))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_fd)
        print(json.dumps(inspect(model_dir)), flush=True)


if __name__ == "__main__":
    main()
