"""`vertex-patterns emulators up|logs`: run the local emulators, read a job's logs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1


def add_emulators(sub: Any) -> None:
    """The `emulators` command and its actions."""
    p = sub.add_parser("emulators", help="local stand-ins for GCS and Vertex AI")
    esub = p.add_subparsers(dest="emulators_command", metavar="ACTION")
    esub.required = True
    up = esub.add_parser(
        "up",
        help="run the emulators in the foreground until Ctrl-C",
        description="Start the GCS and Vertex AI emulators on loopback and print the export "
        "lines to paste into another shell. Jobs get STORAGE_EMULATOR_HOST (this GCS "
        "emulator) and VERTEX_AI_EMULATOR_HOST. Stops cleanly on Ctrl-C or SIGTERM.",
    )
    up.add_argument("--gcs-port", type=int, default=9023, help="GCS emulator port (9023)")
    up.add_argument("--data-dir", help="keep GCS objects on disk here (default: in memory, or "
                    "DIR/gcs with --state-dir)")
    up.add_argument("--vertex-port", type=int, default=9024,
                    help="Vertex AI emulator port (9024)")
    up.add_argument("--scenario", metavar="FILE",
                    help="Vertex AI fault scenario (JSON: seed, regions, timings)")
    up.add_argument("--only", choices=["gcs", "vertex"], help="start only this emulator")
    up.add_argument("--state-dir", metavar="DIR",
                    help="keep everything here after exit: job logs and work directories "
                    "(customJobs/ID/attempt-N/), GCS objects (gcs/); default: a temporary "
                    "directory removed on exit")
    up.add_argument("--gcs-emulator", choices=["fake-gcs-server", "gcp-storage-emulator"],
                    default="fake-gcs-server",
                    help="which GCS emulator serves behind the front (fake-gcs-server)")
    up.add_argument("--gcs-stock", action="store_true",
                    help="serve the GCS emulator as published, without the front that adds "
                    "preconditions, split rewrites and batches (for benchmarks)")
    up.set_defaults(handler=run_emulators_up)

    logs = esub.add_parser(
        "logs",
        help="print a custom job's stdout/stderr from the running Vertex AI emulator",
        description="Print what a replica of a custom job wrote to stdout and stderr, all "
        "attempts, read from the Vertex AI emulator at VERTEX_AI_EMULATOR_HOST. With --follow, "
        "keep printing until the job ends. Exit 0 (1 with --follow when the job did not "
        "succeed), 2 for an unknown job.",
    )
    logs.add_argument("job", metavar="JOB",
                      help="the job's resource name (projects/P/locations/L/customJobs/ID) or ID")
    logs.add_argument("--follow", "-f", action="store_true", help="wait for more until it ends")
    logs.add_argument("--replica", default="workerpool0-0",
                      help="which replica (workerpool0-0)")
    logs.set_defaults(handler=run_emulators_logs)


def run_emulators_up(args: argparse.Namespace) -> int:
    from vertex_patterns.emulators.serve import serve_forever

    serve_forever(gcs_port=args.gcs_port, data_dir=args.data_dir, vertex_port=args.vertex_port,
                  scenario_path=args.scenario, only=args.only, state_dir=args.state_dir,
                  gcs_emulator=args.gcs_emulator, gcs_stock=args.gcs_stock)
    return EXIT_OK


def run_emulators_logs(args: argparse.Namespace) -> int:
    from vertex_patterns.emulators.vertex.logs import stream_log
    from vertex_patterns.errors import ConfigError
    from vertex_patterns.vertex_client import EMULATOR_ENV, emulator_host

    host = emulator_host()
    if host is None:
        raise ConfigError(f"{EMULATOR_ENV} is not set: export the line `vertex-patterns "
                          "emulators up` prints (on Vertex AI, read logs in Cloud Logging)")

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    last = stream_log(host, args.job, write, replica=args.replica, follow=args.follow)
    if args.follow:
        ended = f"# {last['name']} ended {last['state']}"
        sys.stderr.write(f"{ended}: {last['error']}\n" if last["error"] else f"{ended}\n")
        return EXIT_OK if last["state"] == "JOB_STATE_SUCCEEDED" else EXIT_FAILED
    return EXIT_OK
