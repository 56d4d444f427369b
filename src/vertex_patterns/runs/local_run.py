"""`vertex-patterns run PIPELINE --local`: a whole pipeline on the embedded emulators.

Starts the GCS emulator and the Vertex AI emulator (with a fault scenario), creates the
regional buckets, writes a sample data set, compiles the pipeline afresh, submits it through
the real Vertex AI SDK, follows its tasks, then writes ``summary.json`` and ``report.html``
and prints the summary. The pipeline's tasks really run (the emulator executes the DAG with
kfp's local orchestrator), and so does the trainer they launch as Spot custom jobs, meeting
the scenario's stockout and preemption.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from vertex_patterns.errors import ConfigError
from vertex_patterns.storage import Storage

PROJECT = "local-project"
REGIONS = ("us-central1", "us-east1", "europe-west4")
REPORTS_BUCKET = "vp-local-reports"
PIPELINES_BUCKET = "vp-local-pipelines"


@dataclass(kw_only=True, frozen=True)
class LocalRunConfig:
    """What `run --local` does."""

    pipeline: str = "spot_training"
    """The pipeline to run (only `spot_training` runs locally end to end today)."""
    output_dir: str = "local-run"
    """Where `summary.json`, `report.html`, the compiled pipeline and emulator state go."""
    scenario_path: str | None = None
    """A Vertex AI emulator scenario file; the default has a stockout and a preemption."""
    max_steps: int = 12000
    """Trainer steps (the default preemption lands mid-run)."""
    poll_seconds: float = 0.5
    """How often the job and the trainer's custom jobs are polled."""
    regions: tuple[str, ...] = REGIONS

    def __post_init__(self) -> None:
        if self.pipeline != "spot_training":
            raise ConfigError(f"run --local: pipeline {self.pipeline!r} cannot run locally end "
                              "to end yet; use spot_training (data_replication and dr_drill run "
                              "on the emulators through `emulators up` + `submit`)")
        if self.max_steps < 1:
            raise ConfigError("--max-steps must be at least 1")
        if self.scenario_path is not None and not os.path.isfile(self.scenario_path):
            raise ConfigError(f"--scenario {self.scenario_path}: no such file")


def default_scenario(regions: tuple[str, ...] = REGIONS) -> Any:
    """Stockout of Spot capacity in the first region, a preemption after 12 s in the
    second, the third healthy: the run fails over twice and resumes from fanned-out
    checkpoints."""
    from vertex_patterns.emulators.vertex import RegionFaults, Scenario, Timings

    return Scenario(
        seed=1,
        regions={regions[0]: RegionFaults(stockout_strategies=("SPOT",)),
                 regions[1]: RegionFaults(preempt_after_seconds=(12.0,))},
        timings=Timings(queued_seconds=0.3, pending_seconds=0.3, restart_seconds=0.5,
                        grace_seconds=10.0),
        max_preemption_restarts=0)


@dataclass
class LocalRunResult:
    """The outcome of a local run."""

    state: str
    summary: dict[str, Any]
    summary_path: str
    report_path: str
    table: str
    failure: str | None = None

    @property
    def ok(self) -> bool:
        """The pipeline job succeeded."""
        return self.state == "PIPELINE_STATE_SUCCEEDED"


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _write_dataset(store: Storage, prefix: str) -> int:
    rng = random.Random(0)
    count = 0
    for i in range(48):
        store.write_bytes(f"{prefix}/shards/shard-{i:04d}.bin", rng.randbytes(64 * 1024))
        count += 1
    for i in range(2):
        store.write_bytes(f"{prefix}/embeddings-{i}.bin", rng.randbytes(4 * 1024 * 1024))
        count += 1
    return count


def _parameters(config: LocalRunConfig) -> dict[str, Any]:
    regions = list(config.regions)
    data = [f"gs://vp-data-{r}/datasets/demo" for r in regions]
    return {
        "project": PROJECT,
        "regions": regions,
        "data_source_uri": data[0],
        "data_replica_uris": data[1:],
        "run_dir_template": "gs://vp-ckpt-{region}/runs/demo",
        "report_dir": f"gs://{REPORTS_BUCKET}/spot-training",
        "machine_type": "n1-standard-4",
        "poll_seconds": config.poll_seconds,
        "train_command": [
            "python", "-m", "vertex_patterns.train", "--workload", "digits",
            "--run-dir", "{run_dir}", "--max-steps", str(config.max_steps),
            "--checkpoint-every-steps", "500", "--seed", "1", "--log-every-steps", "2000",
            "--grace-seconds", "10", "--grace-margin-seconds", "2"],
    }


def task_rows(job: Any) -> list[dict[str, Any]]:
    """The job's tasks as plain rows (the pipeline's own root task first)."""
    rows = []
    for task in job.task_details:
        start = task.start_time.timestamp() if task.start_time else None
        end = task.end_time.timestamp() if task.end_time else None
        rows.append({"name": task.task_name, "state": task.state.name,
                     "start_time": start, "end_time": end, "root": task.parent_task_id == 0,
                     "seconds": round(end - start, 3) if start and end else None,
                     "error": task.error.message or None})
    return rows


def _progress(started: float) -> Any:
    printed: dict[tuple[str, int], str] = {}

    def show(job: Any) -> None:
        for task in job.task_details:
            key = (task.task_name, task.task_id)
            if printed.get(key) != task.state.name and task.parent_task_id:
                printed[key] = task.state.name
                print(f"[{time.monotonic() - started:6.1f}s] {task.task_name}: "
                      f"{task.state.name.lower()}", flush=True)

    return show


def run_local(config: LocalRunConfig) -> LocalRunResult:
    """Runs `config.pipeline` on the embedded emulators; see the module docstring.

    Raises:
        ConfigError: Bad options or scenario file.
    """
    from vertex_patterns.emulators.gcs import EMULATOR_ENV as GCS_ENV
    from vertex_patterns.emulators.gcs import GcsEmulator
    from vertex_patterns.emulators.vertex import Scenario, VertexEmulator
    from vertex_patterns.pipelines.compile import compile_all
    from vertex_patterns.runs.submit import SubmitOptions, submit_pipeline, wait_for_job
    from vertex_patterns.vertex_client import EMULATOR_ENV as VERTEX_ENV

    scenario = (Scenario.from_file(config.scenario_path) if config.scenario_path
                else default_scenario(config.regions))
    out = os.path.abspath(config.output_dir)
    os.makedirs(out, exist_ok=True)
    started = time.monotonic()
    print(f"compiling {config.pipeline} into {out}/pipelines", flush=True)
    compile_all(out)
    path = os.path.join(out, "pipelines", f"{config.pipeline}.json")
    params = _parameters(config)
    with GcsEmulator() as gcs, _env({GCS_ENV: gcs.url, "OMP_NUM_THREADS": "1"}), \
            VertexEmulator(scenario=scenario, state_dir=os.path.join(out, "emulator"),
                           job_env={GCS_ENV: gcs.url, "OMP_NUM_THREADS": "1"}) as vertex, \
            _env({VERTEX_ENV: vertex.url}):
        print(f"GCS emulator at {gcs.url}, Vertex AI emulator at {vertex.url}", flush=True)
        store = Storage()
        client = store.gcs.client()
        for bucket in {*(f"vp-data-{r}" for r in config.regions),
                       *(f"vp-ckpt-{r}" for r in config.regions), REPORTS_BUCKET,
                       PIPELINES_BUCKET}:
            client.create_bucket(bucket)
        objects = _write_dataset(store, params["data_source_uri"])
        print(f"sample data: {objects} objects in {params['data_source_uri']}", flush=True)
        options = SubmitOptions(project=PROJECT, region=config.regions[0],
                                pipeline_root=f"gs://{PIPELINES_BUCKET}/root",
                                parameters=params, display_name=f"local-{config.pipeline}")
        job = submit_pipeline(path, options)
        print(f"submitted {job.resource_name}", flush=True)
        state = wait_for_job(job, poll_seconds=config.poll_seconds,
                             on_change=_progress(started))
        tasks = task_rows(job)
        return _finish(job, state, tasks, params, out, store)


def _finish(job: Any, state: str, tasks: list[dict[str, Any]], params: dict[str, Any],
            out: str, store: Storage) -> LocalRunResult:
    from vertex_patterns.report import collect_run_summary, render_html, render_table
    from vertex_patterns.runs.submit import failure_message
    from vertex_patterns.storage.local import atomic_write

    failure = None if state == "PIPELINE_STATE_SUCCEEDED" else failure_message(job)
    gca = job.gca_resource
    job_seconds = ((gca.end_time - gca.start_time).total_seconds()
                   if gca.start_time and gca.end_time else None)
    summary = collect_run_summary(f"{params['report_dir']}/history.json",
                                  params["run_dir_template"], params["regions"],
                                  tasks=[t for t in tasks if not t["root"]], state=state,
                                  error=failure, job_seconds=job_seconds)
    doc = summary.to_dict()
    summary_path = os.path.join(out, "summary.json")
    report_path = os.path.join(out, "report.html")
    with atomic_write(summary_path) as f:
        f.write((json.dumps(doc, indent=2) + "\n").encode())
    with atomic_write(report_path) as f:
        f.write(render_html(summary).encode())
    table = render_table(summary)
    sys.stdout.write(table)
    return LocalRunResult(state=state, summary=doc, summary_path=summary_path,
                          report_path=report_path, table=table, failure=failure)
