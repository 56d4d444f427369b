"""Sub-commands: each adds its parser and a handler that calls one core function."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1


def add_replicate(sub: Any) -> None:
    p = sub.add_parser(
        "replicate",
        help="copy a prefix to one or more regional buckets or directories",
        description="Copy every object below SRC to each DST: incremental (size + CRC32C), "
        "verified, parallel. Exit 0 when all copied and verified, 1 when any failed, 2 for "
        "bad input.",
    )
    p.add_argument("source", metavar="SRC", help="gs://bucket/prefix or a local directory")
    p.add_argument("destinations", metavar="DST", nargs="+",
                   help="one or more gs://bucket/prefix or local directories")
    p.add_argument("--workers", type=int, default=8, help="objects copied in parallel (8)")
    p.add_argument("--delete", action="store_true",
                   help="delete destination objects the source does not have")
    p.add_argument("--allow-empty-source", action="store_true",
                   help="let --delete run when the source lists no objects")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument("--report", metavar="FILE", help="also write the report as JSON to FILE")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="always draw a progress bar")
    bar.add_argument("--no-progress", dest="progress", action="store_false",
                     help="log progress lines instead of a bar")
    p.set_defaults(handler=run_replicate)


def run_replicate(args: argparse.Namespace) -> int:
    from vertex_patterns.errors import ConfigError
    from vertex_patterns.replication import replicate
    from vertex_patterns.storage.local import atomic_write

    if args.report:
        report_dir = os.path.dirname(os.path.abspath(args.report))
        if not os.path.isdir(report_dir):
            raise ConfigError(f"--report: directory {report_dir} does not exist")
    report = replicate(
        args.source,
        args.destinations,
        workers=args.workers,
        delete=args.delete,
        allow_empty_source=args.allow_empty_source,
        dry_run=args.dry_run,
        progress=args.progress,
    )
    sys.stdout.write(report.to_table())
    if args.report:
        with atomic_write(os.path.abspath(args.report)) as f:
            f.write(report.to_json().encode())
    return EXIT_OK if report.ok else EXIT_FAILED


def add_emulators(sub: Any) -> None:
    p = sub.add_parser("emulators", help="local stand-ins for GCS (and Vertex AI)")
    esub = p.add_subparsers(dest="emulators_command", metavar="ACTION")
    esub.required = True
    up = esub.add_parser(
        "up",
        help="run the emulators in the foreground until Ctrl-C",
        description="Start the GCS emulator on loopback and print the export line(s) to "
        "paste into another shell. Stops cleanly on Ctrl-C or SIGTERM.",
    )
    up.add_argument("--gcs-port", type=int, default=9023, help="GCS emulator port (9023)")
    up.add_argument("--data-dir", help="keep GCS objects on disk here (default: in memory)")
    up.add_argument("--only", choices=["gcs"], help="start only this emulator")
    up.set_defaults(handler=run_emulators_up)


def run_emulators_up(args: argparse.Namespace) -> int:
    from vertex_patterns.emulators.serve import serve_forever

    serve_forever(gcs_port=args.gcs_port, data_dir=args.data_dir)
    return EXIT_OK


def add_compile(sub: Any) -> None:
    p = sub.add_parser(
        "compile",
        help="regenerate components/*.yaml (and pipelines/*.json)",
        description="Compile every KFP component and pipeline of the project.",
    )
    p.add_argument("--output-dir", default=".",
                   help="root under which components/ and pipelines/ are written (.)")
    p.set_defaults(handler=run_compile)


def run_compile(args: argparse.Namespace) -> int:
    from vertex_patterns.pipelines.compile import compile_all

    for path in compile_all(args.output_dir):
        print(f"wrote {path}")
    return EXIT_OK


def add_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="replicate a sample data set across regional buckets on the embedded emulator",
        description="Starts the GCS emulator, writes a sample data set, replicates it to "
        "three regional buckets, re-runs incrementally and restores it, printing each report.",
    )
    p.add_argument("--objects", type=int, default=200, help="small objects to generate (200)")
    p.add_argument("--large-objects", type=int, default=4,
                   help="16 MiB objects to generate (4)")
    p.add_argument("--workers", type=int, default=8, help="objects copied in parallel (8)")
    p.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from vertex_patterns.demo import run_replication_demo

    ok = run_replication_demo(objects=args.objects, large_objects=args.large_objects,
                              workers=args.workers)
    return EXIT_OK if ok else EXIT_FAILED
