"""What running the work as a pipeline costs, side by side with the same work called directly.

    python bench/pipeline.py [--repeats 3] [--max-steps 6000]

Two ways to do the same thing on the embedded emulators, with the same fault scenario (a Spot
stockout in the first region, a preemption after 12 s in the second):

    pipeline: `vertex-patterns run spot_training --local` (what `make demo` runs): compile,
              submit through the SDK, the emulator executes the DAG task by task
    direct:   the same three steps as plain calls in one process: `replicate`, the Spot
              `Launcher`, `verify_checkpoints` (no orchestration, no per-task processes)

For the pipeline it reports, from the job's own task details: the command's wall time, the
job's wall time, the sum of the tasks' run times, and the orchestration overhead (job wall
time minus the tasks' own run time) as a share of the job. Targets (issue 10): `make demo`
<= 5 minutes on 2 cores after installation; orchestration overhead <= 15%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

REGIONS = ("us-central1", "us-east1", "europe-west4")


def run_pipeline(max_steps: int, out: str) -> dict[str, Any]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "vertex_patterns.cli", "run", "spot_training",
                           "--local", "--output-dir", out, "--max-steps", str(max_steps)],
                          capture_output=True, text=True, timeout=1200)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"run --local failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    overhead = summary["overhead"]  # from the job's own task details (summary.json)
    return {"wall_s": wall, "job_s": overhead["job_s"], "task_s": overhead["tasks_s"],
            "overhead_pct": overhead["overhead_pct"]}


def run_direct(max_steps: int) -> dict[str, Any]:
    """replicate -> launch -> verify as plain calls, same emulators, scenario and data."""
    from vertex_patterns.checkpoint.inspect import verify_checkpoints
    from vertex_patterns.emulators.gcs import EMULATOR_ENV, GcsEmulator
    from vertex_patterns.emulators.vertex import VertexEmulator
    from vertex_patterns.launcher import JobSpec, Launcher, LaunchPolicy
    from vertex_patterns.replication import replicate
    from vertex_patterns.runs import local_run
    from vertex_patterns.storage import Storage
    from vertex_patterns.vertex_client import EMULATOR_ENV as VERTEX_ENV

    t0 = time.monotonic()
    config = local_run.LocalRunConfig(max_steps=max_steps, output_dir="unused")
    params = local_run._parameters(config)
    with tempfile.TemporaryDirectory() as tmp, GcsEmulator() as gcs:
        os.environ[EMULATOR_ENV] = gcs.url
        with VertexEmulator(scenario=local_run.default_scenario(), state_dir=tmp,
                            job_env={EMULATOR_ENV: gcs.url, "OMP_NUM_THREADS": "1"}) as vertex:
            os.environ[VERTEX_ENV] = vertex.url
            store = Storage()
            for r in REGIONS:
                store.gcs.client().create_bucket(f"vp-data-{r}")
                store.gcs.client().create_bucket(f"vp-ckpt-{r}")
            local_run._write_dataset(store, params["data_source_uri"])
            setup_s = time.monotonic() - t0
            t1 = time.monotonic()
            report = replicate(params["data_source_uri"], params["data_replica_uris"],
                               progress=False)
            assert report.ok
            spec = JobSpec(display_name="direct", image="local/trainer:bench",
                           machine_type="n1-standard-4", command=tuple(params["train_command"]))
            policy = LaunchPolicy(project="bench-project", regions=REGIONS,
                                  run_dir_template=params["run_dir_template"],
                                  poll_seconds=0.5)
            history = Launcher(spec, policy).run()
            assert history.succeeded, history.failure
            verified = verify_checkpoints(policy.checkpoint_dir(history.final_region or ""))
            assert verified.ok
            work_s = time.monotonic() - t1
    return {"wall_s": time.monotonic() - t0, "setup_s": setup_s, "work_s": work_s}


def med(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=12000)
    args = parser.parse_args()
    pipeline: list[dict[str, Any]] = []
    direct: list[dict[str, Any]] = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            pipeline.append(run_pipeline(args.max_steps, out))
        direct.append(run_direct(args.max_steps))
        print(f"repeat {i + 1}: pipeline {pipeline[-1]}, direct {direct[-1]}", flush=True)
    p = {k: [r[k] for r in pipeline] for k in pipeline[0]}
    d = {k: [r[k] for r in direct] for k in direct[0]}
    print(f"\nspot_training, {args.max_steps} steps, median of {args.repeats} (min-max), "
          "seconds\n")
    print("| row | value |\n|---|---|")
    print(f"| pipeline: `run --local` command wall | {med(p['wall_s'])} |")
    print(f"| pipeline: job wall (submit to end) | {med(p['job_s'])} |")
    print(f"| pipeline: sum of the tasks' run time | {med(p['task_s'])} |")
    print(f"| pipeline: orchestration overhead % of the job | {med(p['overhead_pct'])} |")
    print(f"| direct: same work as plain calls (peer) | {med(d['work_s'])} |")
    print(f"| direct: whole process incl. emulator start | {med(d['wall_s'])} |")
    ratio = statistics.median(d["work_s"]) / statistics.median(p["job_s"])
    print(f"| ratio direct work / pipeline job | {ratio:7.2f} |")
    demo_ok = statistics.median(p["wall_s"]) <= 300
    overhead_ok = statistics.median(p["overhead_pct"]) <= 15
    print(f"\ntarget make demo <= 300 s: {'MET' if demo_ok else 'NOT MET'}; "
          f"overhead <= 15%: {'MET' if overhead_ok else 'NOT MET'}")


if __name__ == "__main__":
    main()
