"""Which rank this process is, from torchrun's environment or Vertex AI's CLUSTER_SPEC.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT. Vertex AI sets
CLUSTER_SPEC on every replica (`{"cluster": {"workerpool0": ["host:port"], "workerpool1":
[...]}, "task": {"type": "workerpool1", "index": 0}}`) and, for PyTorch jobs, MASTER_ADDR,
MASTER_PORT, WORLD_SIZE and RANK; an explicit RANK/WORLD_SIZE wins over CLUSTER_SPEC.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from vertex_patterns.errors import ConfigError

log = logging.getLogger("vertex_patterns.training")

POOLS = ("workerpool0", "workerpool1", "workerpool2", "workerpool3")


@dataclass(frozen=True)
class Cluster:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        """More than one rank."""
        return self.world_size > 1

    @property
    def is_leader(self) -> bool:
        """Rank 0: writes the model, logs progress, aggregates the ledger."""
        return self.rank == 0


def env_from_cluster_spec(env: Mapping[str, str]) -> dict[str, str]:
    """RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT derived from CLUSTER_SPEC.

    Ranks are numbered pool by pool (workerpool0 first), replica by replica.

    Raises:
        ConfigError: CLUSTER_SPEC is not the JSON Vertex AI sets.
    """
    try:
        spec = json.loads(env["CLUSTER_SPEC"])
        cluster = spec["cluster"]
        task = spec["task"]
        members = [(pool, i, addr) for pool in POOLS
                   for i, addr in enumerate(cluster.get(pool, []))]
        rank = next(n for n, (pool, i, _) in enumerate(members)
                    if pool == task["type"] and i == int(task["index"]))
        host, _, port = members[0][2].rpartition(":")
    except (KeyError, ValueError, TypeError, StopIteration) as exc:
        raise ConfigError(f"CLUSTER_SPEC is not Vertex AI's cluster spec ({exc}); unset it or "
                          "fix it") from exc
    return {"RANK": str(rank), "WORLD_SIZE": str(len(members)),
            "MASTER_ADDR": env.get("MASTER_ADDR", host),
            "MASTER_PORT": env.get("MASTER_PORT", port)}


def init_cluster(env: MutableMapping[str, str] | None = None,
                 timeout_s: float = 600.0) -> Cluster:
    """Initialises torch.distributed when the job has more than one rank.

    gloo on CPU, nccl on GPU. A single process (no RANK/WORLD_SIZE/CLUSTER_SPEC, or a
    CLUSTER_SPEC with one replica) is not distributed and needs no process group.
    """
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env and "CLUSTER_SPEC" in env:
        env.update(env_from_cluster_spec(env))
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", "0"))
    except ValueError as exc:
        raise ConfigError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers: {exc}") from exc
    if not 0 <= rank < max(world, 1):
        raise ConfigError(f"RANK {rank} is outside WORLD_SIZE {world}")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in env:
                raise ConfigError(f"{var} is not set for a {world}-rank job: start it with "
                                  "torchrun or on Vertex AI")
        os.environ.update({k: env[k] for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                "MASTER_PORT")})
        dist.init_process_group(backend="nccl" if cuda else "gloo", init_method="env://",
                                rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s))
        log.info("rank %d of %d joined the process group (%s)", rank, world,
                 dist.get_backend())
    return Cluster(rank=rank, world_size=world, local_rank=local_rank, device=device)


def agree(flags: list[bool], cluster: Cluster) -> list[bool]:
    """Each flag OR-ed over all ranks (one small all-reduce), so every rank acts alike."""
    if not cluster.distributed:
        return flags
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=cluster.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]
