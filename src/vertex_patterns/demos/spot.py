"""Demo: the Spot launcher alone, training across three regions on the local emulators.

What `vertex-patterns demo` runs after the replication part (the same flow inside a pipeline
is `vertex-patterns run spot_training --local`). It starts the GCS and Vertex AI
emulators with a fault scenario: region 1 has no Spot capacity (stockout), region 2 preempts
the job after a few seconds of training, region 3 is healthy. The launcher submits the real
trainer (`python -m vertex_patterns.train --workload digits`) as a Vertex AI custom job; each
attempt fans its checkpoints out to the other regions' buckets, so the attempt in region 3
resumes from region 2's newest checkpoint instead of starting over. It prints the launch
history, the trainer's held-out accuracy and the goodput ledger.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from vertex_patterns.emulators.gcs import EMULATOR_ENV as GCS_ENV
from vertex_patterns.emulators.gcs import GcsEmulator
from vertex_patterns.storage import Storage
from vertex_patterns.vertex_client import EMULATOR_ENV as VERTEX_ENV

REGIONS = ("us-central1", "us-east1", "europe-west4")
PROJECT = "demo-project"


@contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def run_spot_training_demo(*, max_steps: int = 12000, preempt_after_s: float = 12.0,
                           grace_s: float = 10.0) -> bool:
    """Runs the launch end to end on the emulators and prints what happened.

    Returns:
        True when the training completed (in whichever region).
    """
    from vertex_patterns.emulators.vertex import RegionFaults, Scenario, Timings, VertexEmulator
    from vertex_patterns.launcher import JobSpec, Launcher, LaunchPolicy

    scenario = Scenario(
        seed=1,
        regions={REGIONS[0]: RegionFaults(stockout_strategies=("SPOT",)),
                 REGIONS[1]: RegionFaults(preempt_after_seconds=(preempt_after_s,))},
        timings=Timings(queued_seconds=0.5, pending_seconds=0.5, restart_seconds=0.5,
                        grace_seconds=grace_s),
        max_preemption_restarts=0)
    with tempfile.TemporaryDirectory(prefix="vertex-patterns-spot-") as tmp, \
            GcsEmulator() as gcs, _env(GCS_ENV, gcs.url), \
            VertexEmulator(scenario=scenario, state_dir=os.path.join(tmp, "vertex")) as vertex, \
            _env(VERTEX_ENV, vertex.url), _env("OMP_NUM_THREADS", "1"):
        print(f"\n== Spot training across regions\nGCS emulator at {gcs.url}, Vertex AI "
              f"emulator at {vertex.url}\nscenario: {REGIONS[0]} stockout, {REGIONS[1]} "
              f"preempts after {preempt_after_s:.0f} s (grace {grace_s:.0f} s), {REGIONS[2]} "
              "healthy", flush=True)
        store = Storage()
        for region in REGIONS:
            store.gcs.client().create_bucket(f"demo-{region}")
        template = "gs://demo-{region}/runs/digits"
        command = ("python", "-m", "vertex_patterns.train", "--workload", "digits",
                   "--run-dir", "{run_dir}", "--max-steps", str(max_steps),
                   "--checkpoint-every-steps", "500", "--seed", "1", "--log-every-steps",
                   "2000", "--grace-seconds", str(grace_s), "--grace-margin-seconds", "2")
        spec = JobSpec(display_name="demo-digits", image="local/trainer:demo",
                       machine_type="n1-standard-4", command=command)
        policy = LaunchPolicy(project=PROJECT, regions=REGIONS, run_dir_template=template,
                              poll_seconds=0.5)
        history = Launcher(spec, policy).run()
        print(history.to_table(), end="", flush=True)
        if not history.succeeded:
            print(f"launch failed: {history.failure}")
            return False
        region = history.final_region or REGIONS[-1]
        run_dir = template.format(region=region)
        config = json.loads(store.read_bytes(f"{run_dir}/model/config.json"))
        ledger = json.loads(store.read_bytes(f"{run_dir}/goodput.json"))
        attempts = ledger["attempts"]
        resumed = attempts[0].get("resumed_from_step") if attempts else None
        print(f"\nfinished in {region}: resumed from step {resumed} (checkpoints fanned out "
              f"from the preempted region), {config['step']} steps, held-out accuracy "
              f"{config['eval'].get('accuracy', float('nan')):.3f}; model in {run_dir}/model")
        total = ledger["total"]
        print(f"goodput in {region}: {total['goodput_pct']:.1f}% of wall time "
              f"({total['goodput_after_startup_pct']:.1f}% after program startup)", flush=True)
        return True
