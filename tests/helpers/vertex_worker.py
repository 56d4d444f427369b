"""A stand-in training container for Vertex AI emulator tests.

Each start appends one JSON line to RECORD/starts.jsonl (pid, the Vertex environment it saw);
a SIGTERM appends to RECORD/events.jsonl and exits 143 (or is ignored). Then, by the number of
starts so far, it exits with the code listed for that start, at once or after --sleep seconds.
Exiting 0 writes AIP_MODEL_DIR/model.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

ENV_KEYS = ("CLUSTER_SPEC", "TF_CONFIG", "CLOUD_ML_JOB_ID", "AIP_MODEL_DIR", "AIP_CHECKPOINT_DIR",
            "AIP_TENSORBOARD_LOG_DIR", "MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK",
            "EXTRA_VAR")


def append(path: str, record: dict) -> int:
    """Appends a JSON line; returns the number of lines now in the file."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--record", required=True)
    p.add_argument("--exit-codes", default="0",
                   help="comma-separated exit code per start (the last repeats)")
    p.add_argument("--sleep", type=float, default=0.0, help="seconds to run before exiting")
    p.add_argument("--sleep-starts", type=int, default=1_000_000,
                   help="only starts 1..N sleep; later starts exit at once")
    p.add_argument("--ignore-sigterm", action="store_true")
    p.add_argument("--wait-for-world", action="store_true",
                   help="rank 0 waits until every rank has recorded its start, then exits "
                   "without --sleep")
    args = p.parse_args()
    os.makedirs(args.record, exist_ok=True)
    events = os.path.join(args.record, "events.jsonl")

    def on_term(signum: int, frame: object) -> None:
        append(events, {"event": "sigterm", "pid": os.getpid()})
        sys.exit(143)

    signal.signal(signal.SIGTERM, signal.SIG_IGN if args.ignore_sigterm else on_term)
    env = {k: os.environ[k] for k in ENV_KEYS if k in os.environ}
    start = append(os.path.join(args.record, "starts.jsonl"),
                   {"pid": os.getpid(), "cwd": os.getcwd(), "argv": sys.argv[1:], "env": env})
    primary_waits = args.wait_for_world and os.environ.get("RANK", "0") == "0"
    if primary_waits:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with open(os.path.join(args.record, "starts.jsonl"), encoding="utf-8") as f:
                if len(f.readlines()) >= world:
                    break
            time.sleep(0.05)
    if start <= args.sleep_starts and not primary_waits:
        deadline = time.monotonic() + args.sleep
        while time.monotonic() < deadline:
            time.sleep(0.05)
    codes = [int(c) for c in args.exit_codes.split(",")]
    code = codes[min(start, len(codes)) - 1]
    if code == 0 and os.environ.get("AIP_MODEL_DIR"):
        os.makedirs(os.environ["AIP_MODEL_DIR"], exist_ok=True)
        with open(os.path.join(os.environ["AIP_MODEL_DIR"], "model.txt"), "w") as f:
            f.write(f"start {start}\n")
    print(f"worker start {start} exiting {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
