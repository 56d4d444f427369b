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


def add_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job on the embedded emulators: data replication, then Spot training "
        "across regions with a stockout and a preemption",
        description="Starts the GCS emulator, writes a sample data set, replicates it to "
        "three regional buckets, re-runs incrementally and restores it, printing each report. "
        "Then starts the Vertex AI emulator with a fault scenario (stockout in one region, a "
        "preemption in the next) and launches the real trainer as a Spot custom job, which "
        "fails over and resumes from the fanned-out checkpoints.",
    )
    p.add_argument("--skip-training", action="store_true",
                   help="only the replication part")
    p.add_argument("--objects", type=int, default=200, help="small objects to generate (200)")
    p.add_argument("--large-objects", type=int, default=4,
                   help="16 MiB objects to generate (4)")
    p.add_argument("--workers", type=int, default=8, help="objects copied in parallel (8)")
    p.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from vertex_patterns.demos.replication import run_replication_demo

    ok = run_replication_demo(objects=args.objects, large_objects=args.large_objects,
                              workers=args.workers)
    if not args.skip_training:
        from vertex_patterns.demos.spot import run_spot_training_demo

        ok = run_spot_training_demo() and ok
    return EXIT_OK if ok else EXIT_FAILED


def add_checkpoints(sub: Any) -> None:
    p = sub.add_parser(
        "checkpoints",
        help="list, verify and fan out checkpoints written by CheckpointManager",
        description="Inspect a checkpoint directory (gs://bucket/prefix or local) from outside "
        "the training job.",
    )
    csub = p.add_subparsers(dest="checkpoints_command", metavar="ACTION")
    csub.required = True

    ls = csub.add_parser(
        "list",
        help="committed steps with size, commit time, files, metrics and replica lag",
        description="List the committed checkpoints of URI, whether each --replica holds them, "
        "and how many steps and seconds each replica trails.",
    )
    ls.add_argument("uri", metavar="URI", help="the checkpoint directory")
    ls.add_argument("--replica", metavar="URI", action="append", default=[],
                    help="a backup directory to compare with (repeatable)")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(handler=run_checkpoints_list)

    verify = csub.add_parser(
        "verify",
        help="check every file of every committed checkpoint against its manifest",
        description="Read every committed checkpoint (or only --step) and check each file's "
        "size and CRC32C against the manifest. Read-only: nothing is moved aside. Exit 0 when "
        "all verify, 1 when any is damaged (one line per damaged file), 2 for bad input.",
    )
    verify.add_argument("uri", metavar="URI", help="the checkpoint directory")
    verify.add_argument("--step", type=int, help="only this committed step")
    verify.set_defaults(handler=run_checkpoints_verify)

    fan = csub.add_parser(
        "fan-out",
        help="copy committed checkpoints to backup directories, once or until a marker appears",
        description="Copy every committed checkpoint of SRC missing from each DST (data files "
        "first, manifest last; gs→gs copies are server-side). With --follow, repeat every "
        "--poll-seconds until the --until-marker object exists, then make a final pass. "
        "Exit 0 when every replica is reached, 1 otherwise, 2 for bad input.",
    )
    fan.add_argument("source", metavar="SRC", help="the checkpoint directory")
    fan.add_argument("replicas", metavar="DST", nargs="+", help="one or more backup directories")
    fan.add_argument("--follow", action="store_true",
                     help="keep fanning out until --until-marker exists")
    fan.add_argument("--until-marker", metavar="URI",
                     help="object whose existence ends --follow (e.g. written when training ends)")
    fan.add_argument("--poll-seconds", type=float, metavar="S", help="seconds between passes (30)")
    fan.add_argument("--timeout-seconds", type=float, metavar="T",
                     help="stop following after this long (default: wait for the marker)")
    fan.set_defaults(handler=run_checkpoints_fan_out)


def run_checkpoints_list(args: argparse.Namespace) -> int:
    from vertex_patterns.checkpoint.inspect import list_checkpoints

    listing = list_checkpoints(args.uri, args.replica)
    sys.stdout.write(listing.to_json() if args.json else listing.to_table())
    return EXIT_OK


def run_checkpoints_verify(args: argparse.Namespace) -> int:
    from vertex_patterns.checkpoint.inspect import verify_checkpoints

    report = verify_checkpoints(args.uri, args.step)
    sys.stdout.write(report.to_table())
    return EXIT_OK if report.ok else EXIT_FAILED


def run_checkpoints_fan_out(args: argparse.Namespace) -> int:
    from vertex_patterns.checkpoint.follow import follow_fan_out
    from vertex_patterns.errors import ConfigError

    if args.follow != (args.until_marker is not None):
        raise ConfigError("--follow and --until-marker go together: give both or neither")
    if not args.follow and (args.poll_seconds is not None or args.timeout_seconds is not None):
        raise ConfigError("--poll-seconds and --timeout-seconds need --follow")
    summary = follow_fan_out(
        args.source,
        args.replicas,
        until_marker=args.until_marker,
        poll_seconds=30 if args.poll_seconds is None else args.poll_seconds,
        timeout_seconds=args.timeout_seconds,
    )
    sys.stdout.write(summary.to_table())
    return EXIT_OK if summary.ok else EXIT_FAILED


def add_train(sub: Any) -> None:
    from vertex_patterns.cli.train import EPILOG, add_train_arguments

    p = sub.add_parser(
        "train",
        help="preemption-safe training with checkpoint-resume (the Spot VM trainer)",
        description="Trains a workload, checkpointing to RUN_DIR/checkpoints; on SIGTERM it "
        "commits a checkpoint inside the grace period and exits to be restarted.",
        epilog=EPILOG,
    )
    add_train_arguments(p)
    p.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from vertex_patterns.cli.train import run_train as run

    return run(args)


def add_launch(sub: Any) -> None:
    from vertex_patterns.cli.launch import EPILOG, add_launch_arguments

    p = sub.add_parser(
        "launch",
        help="run a training job on Spot capacity, failing over between regions",
        description="Creates a Vertex AI CustomJob in the first region, classifies how it "
        "ends, and retries or moves to the next region until it succeeds. Give the container "
        "command after `--`.",
        epilog=EPILOG,
    )
    add_launch_arguments(p)
    p.set_defaults(handler=run_launch)


def run_launch(args: argparse.Namespace) -> int:
    from vertex_patterns.cli.launch import run_launch as run

    return run(args)
