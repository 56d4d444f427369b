"""Goodput of the spot trainer under frequent preemption, side by side with an uninterrupted run.

    python bench/goodput.py [--quick] [--seconds 180] [--every 30] [--workload tiny-lm]

Three runs of the same `tiny-lm` training (same seed, same number of steps, sized so the
uninterrupted run trains for about --seconds), each as real `python -m vertex_patterns.train`
processes on this machine:

    (a) uninterrupted
    (b) SIGTERM every --every seconds of each attempt (the Spot notice), --grace-seconds grace;
        the trainer commits a checkpoint and exits 75; the bench restarts it at once
    (c) SIGKILL at the same times (a hard kill: work since the last checkpoint is redone)

Checkpoints every --checkpoint-seconds of training (converted to steps from a calibration run),
async. Figures come from the trainer's own goodput ledger (`<run-dir>/goodput.json`, the
categories of ml-goodput-measurement) and its metrics stream (checkpoint blocking times).

Targets (issue 4, read per shared/TARGETS.md): (b) loses 0 steps per preemption and reaches
>= 95% of (a)'s goodput, counted over the time after process start (restore + checkpoint
blocking + lost work <= 5% of it); (c) loses at most one checkpoint interval per kill.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from vertex_patterns.training.metrics import read_metrics

EXIT_OK, EXIT_PREEMPTED, EXIT_PREEMPTED_UNSAVED = 0, 75, 76


@dataclass
class RunResult:
    name: str
    wall_s: float
    attempts: list[dict[str, Any]]
    total: dict[str, Any]
    codes: list[int]
    blocking: list[float] = field(default_factory=list)
    preemptions: int = 0
    lost: list[int] = field(default_factory=list)
    """Per preemption: the last step the attempt logged minus the step the next resumed at."""


def follow_steps(proc: subprocess.Popen[bytes], seen: list[int], resumed: list[int]) -> None:
    """Collects the step of every progress line the trainer logs (JSON lines on stdout), and
    the step it resumed from."""
    assert proc.stdout is not None
    for raw in proc.stdout:
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(line, dict) or not isinstance(line.get("step"), int):
            continue
        if line.get("event") == "resume":
            resumed.append(int(line["step"]))
        elif str(line.get("message", "")).startswith("step "):
            seen.append(int(line["step"]))


def train_cmd(args: argparse.Namespace, run_dir: str, max_steps: int, every_steps: int
              ) -> list[str]:
    return [sys.executable, "-m", "vertex_patterns.train", "--workload", args.workload,
            "--run-dir", run_dir, "--max-steps", str(max_steps), "--seed", "1",
            "--checkpoint-every-steps", str(every_steps), "--log-every-steps", "1",
            "--grace-seconds", str(args.grace_seconds), "--grace-margin-seconds", "5"]


def run_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(os.cpu_count() or 1)}


def run(name: str, args: argparse.Namespace, run_dir: str, max_steps: int, every_steps: int,
        sig: signal.Signals | None) -> RunResult:
    """Runs attempts until one exits 0; `sig` is sent `args.every` s after each start."""
    codes: list[int] = []
    started = time.monotonic()
    preemptions = 0
    last_steps: list[int | None] = []
    starts: list[int | None] = []
    while True:
        proc = subprocess.Popen(train_cmd(args, run_dir, max_steps, every_steps),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=run_env())
        seen: list[int] = []
        resumed: list[int] = []
        reader = threading.Thread(target=follow_steps, args=(proc, seen, resumed), daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=args.every) if sig is not None else proc.wait()
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)  # type: ignore[arg-type]
            preemptions += 1
            code = proc.wait(timeout=args.grace_seconds + 30)
        reader.join(timeout=30)
        codes.append(code)
        # An attempt killed before it logged anything did no work (and resumed nothing new).
        starts.append(resumed[0] if resumed else (0 if seen else None))
        last_steps.append(max(seen) if seen else None)
        if code == EXIT_OK:
            break
        # 76: the notice came before any training state existed (start-up), or no new
        # checkpoint could be committed; both are documented "restart" exits.
        if code not in (EXIT_PREEMPTED, EXIT_PREEMPTED_UNSAVED, -signal.SIGKILL):
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"{name}: trainer failed with exit {code}:\n{err[-3000:]}")
        if len(codes) > 100:
            raise SystemExit(f"{name}: more than 100 attempts; giving up")
        print(f"  {name}: attempt {len(codes)} ended with {code}; restarting", flush=True)
    wall = time.monotonic() - started
    with open(os.path.join(run_dir, "goodput.json")) as f:
        ledger = json.load(f)
    blocking = [float(r["blocking_s"]) for r in read_metrics(os.path.join(run_dir, "metrics"))
                if r.get("event") == "checkpoint" and not r.get("blocking")]
    # Lost work per preemption: steps the attempt ran beyond where the next working attempt
    # resumed (attempts killed during startup did no work and are skipped).
    worked = [(s, last) for s, last in zip(starts, last_steps, strict=True)
              if s is not None and last is not None]
    lost = [last - nxt for (_, last), (nxt, _) in itertools.pairwise(worked)]
    return RunResult(name, wall, ledger["attempts"], ledger["total"], codes, blocking,
                     preemptions, lost)


def calibrate(args: argparse.Namespace, tmp: str) -> tuple[float, float]:
    """Seconds per training step, from a short run's metrics stream, and seconds from process
    start to the first step (program startup + training prep + restore, from its ledger)."""
    run_dir = os.path.join(tmp, "calibrate")
    subprocess.run(train_cmd(args, run_dir, 30, 1000), check=True, env=run_env(),
                   stdout=subprocess.DEVNULL)
    times = [float(r["step_time_s"]) for r in read_metrics(os.path.join(run_dir, "metrics"))
             if "step_time_s" in r][5:]
    with open(os.path.join(run_dir, "goodput.json")) as f:
        total = json.load(f)["total"]
    startup = sum(float(total[k]) for k in ("program_startup_s", "training_prep_s",
                                            "checkpoint_restore_s"))
    return statistics.median(times), startup


def fmt(x: float, digits: int = 1) -> str:
    return f"{x:.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                     for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="~40 s runs, preempt every 12 s")
    ap.add_argument("--workload", default="tiny-lm")
    ap.add_argument("--seconds", type=float, default=180.0, help="uninterrupted training time")
    ap.add_argument("--every", type=float, default=30.0, help="seconds between preemptions")
    ap.add_argument("--grace-seconds", type=float, default=30.0)
    ap.add_argument("--checkpoint-seconds", type=float, default=10.0,
                    help="training seconds between checkpoints")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.every, args.checkpoint_seconds = 40.0, 12.0, 4.0
    bench_started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vp-goodput-") as tmp:
        step_s, startup_s = calibrate(args, tmp)
        if args.every < 2 * startup_s:
            # A notice during start-up ends the attempt at once with 76 (nothing to save): on
            # a machine so busy that start-up takes half the interval, attempts would rarely
            # train. Real Spot notices come minutes to hours apart.
            print(f"start-up took {startup_s:.1f} s here: preempting every "
                  f"{2 * startup_s:.0f} s instead of {args.every:.0f} s", flush=True)
            args.every = 2 * startup_s
        max_steps = max(20, round(args.seconds / step_s))
        every_steps = max(1, round(args.checkpoint_seconds / step_s))
        print(f"step {step_s * 1000:.0f} ms -> {max_steps} steps, checkpoint every "
              f"{every_steps} steps ({every_steps * step_s:.1f} s); preempt every "
              f"{args.every:.0f} s of each attempt, grace {args.grace_seconds:.0f} s", flush=True)
        results = [
            run("(a) uninterrupted", args, os.path.join(tmp, "a"), max_steps, every_steps, None),
            run("(b) SIGTERM", args, os.path.join(tmp, "b"), max_steps, every_steps,
                signal.SIGTERM),
            run("(c) SIGKILL", args, os.path.join(tmp, "c"), max_steps, every_steps,
                signal.SIGKILL),
        ]
    base = results[0].total
    rows = []
    for r in results:
        t = r.total
        lost = r.lost
        restores = [float(a["checkpoint_restore_s"]) for a in r.attempts
                    if a.get("resumed_from_step") is not None]
        after = float(t["goodput_after_startup_pct"])
        rows.append([
            r.name, str(len(r.attempts)), fmt(r.wall_s), fmt(float(t["productive_s"])),
            fmt(float(t["program_startup_s"]) + float(t["training_prep_s"])),
            fmt(float(t["goodput_pct"])), fmt(after),
            fmt(after / float(base["goodput_after_startup_pct"]), 3),
            f"{statistics.mean(lost):.1f}/{max(lost)}" if lost else "-",
            f"{statistics.median(restores):.2f}" if restores else "-",
            f"{statistics.median(r.blocking):.3f}/{max(r.blocking):.3f}" if r.blocking else "-",
            fmt(float(t["checkpoint_save_s"]), 2), fmt(float(t["wasted_progress_s"])),
        ])
    print()
    print(table(["run", "attempts", "wall s", "productive s", "startup+prep s", "goodput %",
                 "after start %", "vs (a)", "steps lost mean/max", "restore s med",
                 "ckpt block s med/max", "ckpt block s sum", "wasted s"], rows))
    print("goodput % = productive / wall; after start % = productive / (wall - program "
          "startup - time between attempts) (TARGETS.md: process start is its own category). "
          "'vs (a)' = after-start goodput / (a)'s. Steps lost: per preemption, from the "
          "trainer's log (the last step an attempt logged minus the step the next attempt "
          "resumed from).")
    term, kill = results[1], results[2]
    term_lost, kill_lost = term.lost, kill.lost
    ratio = float(term.total["goodput_after_startup_pct"]) / \
        float(base["goodput_after_startup_pct"])

    def badput_share(r: RunResult) -> tuple[float, float]:
        """(restore + checkpoint blocking + lost work) / time after process start, and that
        time: wall - program startup (interpreter, imports) - training prep (model build)
        - time between attempts, each its own category in the ledger."""
        t = r.total
        after = float(t["wall_s"]) - float(t["program_startup_s"]) - \
            float(t["training_prep_s"]) - float(t["infrastructure_recovery_s"])
        bad = float(t["checkpoint_restore_s"]) + float(t["checkpoint_save_s"]) + \
            float(t["wasted_progress_s"])
        return bad / after, after
    print("\n== Targets")
    verdict = "MET" if term_lost and max(term_lost) == 0 else "NOT MET"
    print(f"[{verdict}] SIGTERM loses 0 steps per preemption: lost {term_lost} over "
          f"{term.preemptions} preemptions")
    share, after = badput_share(term)
    print(f"[{'MET' if share <= 0.05 else 'NOT MET'}] SIGTERM: restore + checkpoint blocking + "
          f"lost work <= 5% of the time after process start: {share * 100:.2f}% of {after:.1f} s "
          f"(restore {float(term.total['checkpoint_restore_s']):.2f} s, blocking "
          f"{float(term.total['checkpoint_save_s']):.2f} s, lost "
          f"{float(term.total['wasted_progress_s']):.2f} s)")
    print(f"[{'MET' if ratio >= 0.95 else 'NOT MET'}] (ledger reading) SIGTERM goodput after "
          f"program startup >= 95% of uninterrupted: {ratio * 100:.1f}% "
          f"({float(term.total['goodput_after_startup_pct']):.1f}% vs "
          f"{float(base['goodput_after_startup_pct']):.1f}%; counts training prep, eval, "
          "model export and process exit of every attempt as badput)")
    ok = bool(kill_lost) and max(kill_lost) <= every_steps
    print(f"[{'MET' if ok else 'NOT MET'}] SIGKILL loses <= one checkpoint interval "
          f"({every_steps} steps) per kill: lost {kill_lost} over {kill.preemptions} kills")
    load = os.getloadavg()[0]
    print(f"# bench took {time.monotonic() - bench_started:.0f} s; load average at end "
          f"{load:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
