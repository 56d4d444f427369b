"""Worker replicas as local processes, started with the environment Vertex AI gives them.

Each replica of each worker pool runs its container's command and args as a subprocess of the
current Python environment (the image is not pulled; ``python``/``python3`` mean
`sys.executable`), in its own process group so that a preemption or a cancel reaches every
process it started. The environment is Vertex AI's (see "Prepare training code" and
"Distributed training" in the Vertex AI docs): `CLUSTER_SPEC`, `TF_CONFIG`, `CLOUD_ML_JOB_ID`,
the `AIP_*` directories under `baseOutputDirectory`, and for more than one replica
`MASTER_ADDR`, `MASTER_PORT`, `WORLD_SIZE` and `RANK`; then the container's own `env`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

from vertex_patterns.emulators.gcs import free_port
from vertex_patterns.emulators.vertex.images import resolve_image

# TF_CONFIG names the pools as TensorFlow's distribution strategies know them.
_TF_TASK_TYPES = ("chief", "worker", "ps", "evaluator")
_PYTHON = re.compile(r"^python(3(\.\d+)?)?$")


@dataclass(frozen=True)
class Replica:
    """One worker: pool index, index in the pool, global rank and its name in job errors."""

    pool: int
    index: int
    rank: int
    port: int

    @property
    def name(self) -> str:
        """``workerpool0-0`` and so on, as Vertex AI names replicas in its errors."""
        return f"workerpool{self.pool}-{self.index}"


def plan_replicas(pools: list[dict[str, Any]]) -> list[Replica]:
    """The replicas of a job's worker pools (JSON dicts), primary first; empty pools skipped."""
    replicas: list[Replica] = []
    for pool_index, pool in enumerate(pools):
        for index in range(int(pool.get("replicaCount", 0) or 0) if pool else 0):
            replicas.append(Replica(pool=pool_index, index=index, rank=len(replicas),
                                    port=free_port()))
    return replicas


def command_of(pool: dict[str, Any]) -> list[str]:
    """The argv a pool's replicas run.

    A `containerSpec` without `command` runs its image's entrypoint as `images.resolve_image`
    maps it (the project's image: the ``vertex-patterns`` command).

    Raises:
        UnrunnableImageError: No command, and an image the emulator cannot stand in for.
    """
    if "containerSpec" in pool:
        spec = pool["containerSpec"]
        command = list(spec.get("command", []))
        if not command:
            # The image's own ENTRYPOINT, for the images the emulator can stand in for;
            # UnrunnableImageError (a ValueError) says which image and why not.
            command = list(resolve_image(spec.get("imageUri", "")).entrypoint)
        argv = [*command, *spec.get("args", [])]
    else:
        spec = pool["pythonPackageSpec"]
        argv = ["python", "-m", spec["pythonModule"], *spec.get("args", [])]
    if _PYTHON.match(argv[0]):
        argv[0] = sys.executable
    return argv


def worker_env(
    *,
    job_id: str,
    job_spec: dict[str, Any],
    job_spec_snake: dict[str, Any],
    replicas: list[Replica],
    replica: Replica,
    master_port: int,
) -> dict[str, str]:
    """The environment Vertex AI sets for `replica` (before the container's own `env`)."""
    cluster: dict[str, list[str]] = {}
    for r in replicas:
        cluster.setdefault(f"workerpool{r.pool}", []).append(f"127.0.0.1:{r.port}")
    env = {
        "CLOUD_ML_JOB_ID": job_id,
        "CLUSTER_SPEC": json.dumps({
            "cluster": cluster,
            "environment": "cloud",
            "task": {"type": f"workerpool{replica.pool}", "index": replica.index},
            "job": job_spec_snake,
        }),
        "TF_CONFIG": json.dumps({
            "cluster": {_TF_TASK_TYPES[int(k[-1])]: v for k, v in cluster.items()
                        if int(k[-1]) < len(_TF_TASK_TYPES)},
            "environment": "cloud",
            "task": {"type": _TF_TASK_TYPES[min(replica.pool, 3)], "index": replica.index},
        }),
    }
    prefix = job_spec.get("baseOutputDirectory", {}).get("outputUriPrefix", "")
    if prefix:
        base = prefix.rstrip("/")
        env["AIP_MODEL_DIR"] = f"{base}/model/"
        env["AIP_CHECKPOINT_DIR"] = f"{base}/checkpoints/"
        env["AIP_TENSORBOARD_LOG_DIR"] = f"{base}/logs/"
    if len(replicas) > 1:
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(master_port),
                   WORLD_SIZE=str(len(replicas)), RANK=str(replica.rank))
    pool = job_spec["workerPoolSpecs"][replica.pool]
    for var in pool.get("containerSpec", {}).get("env", []):
        env[var["name"]] = var.get("value", "")
    return env


@dataclass
class Worker:
    """A running replica: its process, log file and the argv it runs."""

    replica: Replica
    process: subprocess.Popen[bytes]
    log_path: str
    _log: IO[bytes]

    def close_log(self) -> None:
        """Closes this side's handle on the log file."""
        with contextlib.suppress(OSError):
            self._log.close()


class WorkerGroup:
    """The replicas of one attempt of a job, started together and stopped together."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers

    @classmethod
    def start(
        cls,
        *,
        job_id: str,
        job_spec: dict[str, Any],
        job_spec_snake: dict[str, Any],
        log_dir: str,
        work_dir: str,
        base_env: Mapping[str, str] | None = None,
    ) -> WorkerGroup:
        """Starts every replica of `job_spec` (a CustomJobSpec as JSON).

        Workers get the emulator's environment, then `base_env` (the emulator's `job_env`),
        then Vertex AI's variables and the container's own `env`.

        Raises:
            ValueError: A pool has no runnable command.
            OSError: A command could not be started (not found, not executable).
        """
        pools = job_spec["workerPoolSpecs"]
        replicas = plan_replicas(pools)
        argvs = {r.pool: command_of(pools[r.pool]) for r in replicas}
        master_port = free_port()
        os.makedirs(log_dir, exist_ok=True)
        os.makedirs(work_dir, exist_ok=True)
        group = cls([])
        try:
            for replica in replicas:
                env = {**os.environ, **(base_env or {})}
                env.update(worker_env(job_id=job_id, job_spec=job_spec,
                                      job_spec_snake=job_spec_snake, replicas=replicas,
                                      replica=replica, master_port=master_port))
                log_path = os.path.join(log_dir, f"{replica.name}.log")
                log = open(log_path, "ab")  # noqa: SIM115 - closed by Worker.close_log
                try:
                    process = subprocess.Popen(argvs[replica.pool], stdout=log,
                                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                               env=env, cwd=work_dir, start_new_session=True)
                except OSError:
                    log.close()
                    raise
                group.workers.append(Worker(replica, process, log_path, log))
        except (OSError, ValueError):
            group.stop(grace_seconds=0)
            raise
        return group

    @property
    def pids(self) -> dict[str, int]:
        """Replica name -> process id."""
        return {w.replica.name: w.process.pid for w in self.workers}

    def exit_codes(self) -> dict[str, int | None]:
        """Replica name -> exit code, None while running (negative: killed by that signal)."""
        return {w.replica.name: w.process.poll() for w in self.workers}

    def signal_all(self, signum: int) -> None:
        """Sends `signum` to the process group of every replica still running."""
        for w in self.workers:
            if w.process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(w.process.pid, signum)

    def stop(self, *, grace_seconds: float) -> None:
        """SIGTERM to every replica's process group, SIGKILL after `grace_seconds`, then reap.

        The groups are killed after the grace period even when their leader has exited, so
        that no child process outlives its replica (as with a VM that goes away).
        """
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline and any(
                w.process.poll() is None for w in self.workers):
            time.sleep(0.02)
        for w in self.workers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(w.process.pid, signal.SIGKILL)
            w.process.wait()
            w.close_log()

    def reap(self) -> None:
        """After every replica exited on its own: kill leftover children, close logs."""
        self.stop(grace_seconds=0)
