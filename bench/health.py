"""Health checking's cost on the `tiny-lm` workload, measured side by side in one run.

1. Overhead: the trainer with health checking (default) against `--no-health`, the same
   steps, runs alternated; per-step wall time is the median gap between consecutive step
   records of the metrics stream (it includes everything the loop does per step, the health
   hook too). Also the hook's own work per step (loss rules + watchdog beat), timed in
   isolation, as a share of the median step.
2. Rewind: a run whose step `--poison-step` has a NaN loss rewinds to the checkpoint before
   it; its extra wall time over a clean run is printed beside what a rewind should cost at
   most: the restore plus the replayed steps at the median step time.

    python bench/health.py                 # ~5 min on 2 busy cores
    python bench/health.py --steps 120 --repeats 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def run_trainer(run_dir: Path, steps: int, every: int, *extra: str,
                env: dict[str, str] | None = None) -> dict:
    """One trainer process; returns its step records and events."""
    argv = [sys.executable, "-m", "vertex_patterns.train", "--run-dir", str(run_dir),
            "--max-steps", str(steps), "--checkpoint-every-steps", str(every), "--seed", "1",
            "--log-every-steps", "1000", *extra]
    full_env = {**os.environ, "OMP_NUM_THREADS": "2",
                "PYTHONPATH": os.pathsep.join(p for p in (str(BENCH),
                                                          os.environ.get("PYTHONPATH")) if p),
                **(env or {})}
    proc = subprocess.run(argv, capture_output=True, text=True, env=full_env, timeout=1800)
    if proc.returncode != 0:
        sys.exit(f"trainer exited {proc.returncode}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    from vertex_patterns.training.metrics import read_metrics

    records = read_metrics(str(run_dir / "metrics"))
    steps_ = [r for r in records if "loss" in r and "event" not in r]
    times = [float(r["time"]) for r in steps_]
    gaps = [b - a for a, b in itertools.pairwise(times[5:])]
    return {"step_s": statistics.median(gaps), "wall_s": times[-1] - times[0],
            "steps": len(steps_), "rewinds": [r for r in records if r.get("event") == "rewind"]}


def hook_cost_s(n: int = 20000) -> float:
    """Seconds per step of the hook's own work: the loss rules and the watchdog beat."""
    from vertex_patterns.health import HealthConfig, LossMonitor
    from vertex_patterns.training.health_hook import HangWatchdog

    monitor = LossMonitor(HealthConfig())
    watchdog = HangWatchdog(None, 600.0, 50.0, lambda idle, limit: None)
    losses = [2.0 + 0.1 * math.sin(i) for i in range(n)]
    started = time.perf_counter()
    for i, loss in enumerate(losses):
        monitor.observe(i, loss, 1.0)
        watchdog.beat()
    cost = (time.perf_counter() - started) / n
    watchdog.close()
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--every", type=int, default=20, help="checkpoint every N steps")
    parser.add_argument("--poison-step", type=int, default=59)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rows: dict[str, list[dict]] = {"health": [], "no-health": [], "rewind": []}
    with tempfile.TemporaryDirectory(prefix="bench-health-") as tmp:
        for i in range(args.repeats):
            for name, extra, workload, env in (
                    ("health", (), "tiny-lm", None),
                    ("no-health", ("--no-health",), "tiny-lm", None),
                    ("rewind", (), "health_workloads:poisoned_tiny_lm",
                     {"POISON_STEP": str(args.poison_step)})):
                run_dir = Path(tmp) / f"{name}-{i}"
                rows[name].append(run_trainer(run_dir, args.steps, args.every, "--workload",
                                              workload, *extra, env=env))
                print(f"  {name} #{i + 1}: median step {rows[name][-1]['step_s'] * 1000:.1f} ms,"
                      f" loop wall {rows[name][-1]['wall_s']:.2f} s", flush=True)

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[name])

    def spread(name: str, key: str) -> str:
        values = [r[key] for r in rows[name]]
        return f"{min(values):.4g}..{max(values):.4g}"

    health, bare = med("health", "step_s"), med("no-health", "step_s")
    hook = hook_cost_s()
    print(f"\ntiny-lm, {args.steps} steps, {args.repeats} runs each, medians (spread)")
    print(f"{'row':<44}{'ours':>12}{'peer':>12}{'ratio':>9}")
    print(f"{'step wall, health on vs --no-health (ms)':<44}{health * 1000:>12.2f}"
          f"{bare * 1000:>12.2f}{health / bare:>9.3f}")
    print(f"  spread: health {spread('health', 'step_s')} s, no-health "
          f"{spread('no-health', 'step_s')} s")
    print(f"{'hook work per step vs median step (us)':<44}{hook * 1e6:>12.1f}"
          f"{bare * 1e6:>12.0f}{hook / bare:>9.5f}")
    rewind = [r["rewinds"][0] for r in rows["rewind"] if r["rewinds"]]
    if len(rewind) != args.repeats:
        sys.exit("a poisoned run did not rewind")
    extra_wall = [p["wall_s"] - statistics.median(r["wall_s"] for r in rows["health"])
                  for p in rows["rewind"]]
    replayed = [r["step"] - r["to_step"] for r in rewind]
    bound = [r["restore_s"] + n * health for r, n in zip(rewind, replayed, strict=True)]
    print(f"{'rewind: extra wall vs restore + replayed (s)':<44}"
          f"{statistics.median(extra_wall):>12.3f}{statistics.median(bound):>12.3f}"
          f"{statistics.median(extra_wall) / statistics.median(bound):>9.3f}")
    print(f"  restore {statistics.median(r['restore_s'] for r in rewind):.3f} s, replayed "
          f"{statistics.median(replayed)} step(s), skipped "
          f"{statistics.median(r['skipped_batches'] for r in rewind)} batch(es); extra wall "
          f"spread {min(extra_wall):.3f}..{max(extra_wall):.3f} s")
    overhead_ok = health / bare <= 1.01
    print(f"\ntarget: health checking <= 1% of step time: "
          f"{'met' if overhead_ok else 'NOT met'} end to end ({(health / bare - 1) * 100:+.2f}%),"
          f" hook work alone {hook / bare * 100:.3f}%")
    print(f"target: a rewind costs at most restore + replayed steps: "
          f"{'met' if statistics.median(extra_wall) <= statistics.median(bound) else 'NOT met'}")
    print(json.dumps({"step_s": {"health": health, "no_health": bare}, "hook_s": hook,
                      "rewind_extra_wall_s": extra_wall, "rewind_bound_s": bound}))


if __name__ == "__main__":
    main()
