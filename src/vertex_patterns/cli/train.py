"""`vertex-patterns train` and `python -m vertex_patterns.train`: the same flags, one runner."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from vertex_patterns.errors import ConfigError
from vertex_patterns.training.config import (
    EXIT_BAD_INPUT,
    EXIT_ERROR,
    EXIT_HUNG,
    EXIT_PREEMPTED,
    EXIT_PREEMPTED_UNSAVED,
    EXIT_UNHEALTHY,
    TrainConfig,
)
from vertex_patterns.training.health_config import add_health_arguments, health_from_args

log = logging.getLogger("vertex_patterns.training")

EPILOG = (f"exit codes: 0 completed; {EXIT_PREEMPTED} preempted after committing a checkpoint "
          f"(restart to resume); {EXIT_PREEMPTED_UNSAVED} preempted without a new checkpoint "
          f"(the previous one is intact); {EXIT_ERROR} failed; {EXIT_BAD_INPUT} bad input; "
          f"{EXIT_UNHEALTHY} unhealthy (health incident); {EXIT_HUNG} hung")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The trainer's flags (shared by both entry points)."""
    p.add_argument("--workload", required=True,
                   help="built-in workload (digits, tiny-lm) or package.module:function")
    p.add_argument("--run-dir",
                   help="base output directory, local or gs:// (AIP_* variables win; under "
                        "Vertex AI it defaults to their common parent, the job's base output "
                        "directory)")
    p.add_argument("--max-steps", type=int, required=True, help="optimizer steps in all")
    every = p.add_mutually_exclusive_group()
    every.add_argument("--checkpoint-every-steps", type=int, metavar="K")
    every.add_argument("--checkpoint-every-seconds", type=_seconds_or_auto, metavar="S",
                       help="default 300 when neither interval is given; 'auto': Young/Daly "
                            "from the measured save cost and the MTBF")
    p.add_argument("--mtbf-hours", type=float, metavar="H",
                   help="with 'auto': mean time between preemptions (default: estimated "
                        "from the run's earlier attempts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms: resumed runs match uninterrupted ones")
    p.add_argument("--replica", action="append", default=[], metavar="URI",
                   help="backup checkpoint directory (repeatable)")
    p.add_argument("--keep-last", type=int, default=3)
    p.add_argument("--grace-seconds", type=float, default=30.0,
                   help="preemption notice to SIGKILL (Spot: 30)")
    p.add_argument("--grace-margin-seconds", type=float, default=5.0,
                   help="the emergency save must finish this long before the grace ends")
    p.add_argument("--metadata-url", metavar="URL",
                   help="poll URL/computeMetadata/v1/instance/preempted "
                        "(on GCE: http://metadata.google.internal)")
    p.add_argument("--metadata-poll-seconds", type=float, default=1.0)
    p.add_argument("--eval-every-steps", type=int, default=0)
    p.add_argument("--log-every-steps", type=int, default=10)
    p.add_argument("--record-samples", action="store_true",
                   help="write each step's sample ids into the metrics stream")
    p.add_argument("--wandb-project", metavar="NAME", help="mirror metrics to W&B")
    p.add_argument("--tensorboard-flush-seconds", type=float, default=30.0, metavar="S",
                   help="flush/upload TensorBoard event files this often (30)")
    p.add_argument("--publish-metrics", metavar="PROJECT",
                   help="publish metrics and goodput as Cloud Monitoring time series")
    add_health_arguments(p)


def _seconds_or_auto(text: str) -> float | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds or 'auto'") \
            from None


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the flags describe (raises ConfigError on bad values)."""
    from vertex_patterns.training.config import run_dir_from_environment

    return TrainConfig(
        workload=args.workload, run_dir=args.run_dir or run_dir_from_environment(),
        max_steps=args.max_steps, seed=args.seed,
        checkpoint_every_steps=args.checkpoint_every_steps,
        checkpoint_every_seconds=None if args.checkpoint_every_seconds == "auto"
        else args.checkpoint_every_seconds,
        checkpoint_auto=args.checkpoint_every_seconds == "auto", mtbf_hours=args.mtbf_hours,
        deterministic=args.deterministic, replicas=tuple(args.replica),
        keep_last=args.keep_last, grace_seconds=args.grace_seconds,
        grace_margin_seconds=args.grace_margin_seconds, metadata_url=args.metadata_url,
        metadata_poll_seconds=args.metadata_poll_seconds,
        eval_every_steps=args.eval_every_steps, log_every_steps=args.log_every_steps,
        record_samples=args.record_samples, wandb_project=args.wandb_project,
        tensorboard_flush_seconds=args.tensorboard_flush_seconds,
        publish_metrics=args.publish_metrics, health=health_from_args(args))


def run_train(args: argparse.Namespace) -> int:
    """Runs one attempt; logs are Cloud Logging JSON lines on stdout.

    The preemption handler is installed first and stays to the end of the process: the exit
    code of a SIGTERM is decided by how far the attempt got (see `training.preemption`).
    When a notice came, the process ends here (`os._exit`) once the streams are flushed:
    background work left on purpose (the fan-out of committed checkpoints, which the next
    attempt resumes) must not hold the exit past the grace period.
    """
    from vertex_patterns.training.preemption import PreemptionNotice

    notice = PreemptionNotice().install()  # starting: a signal exits 76 at once
    from vertex_patterns.training.goodput import process_start_time
    from vertex_patterns.training.logs import report_error, setup_logging

    started = process_start_time()
    setup_logging("DEBUG" if getattr(args, "verbose", 0) >= 2 else "INFO")
    try:
        from vertex_patterns.training.loop import Trainer

        code = Trainer(config_from_args(args), notice, process_start=started).run()
    except ConfigError:
        notice.settle(EXIT_BAD_INPUT)
        raise
    except Exception as exc:  # reported as an Error Reporting event, then exit 1
        report_error(exc)
        code = EXIT_ERROR
    notice.settle(code)
    if notice:
        _end_process(code)
    return code


def _end_process(code: int) -> NoReturn:
    """Flushes the logs and standard streams, then exits without joining other threads."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m vertex_patterns.train`."""
    from vertex_patterns.cli.parser import OneLineParser

    parser = OneLineParser(prog="python -m vertex_patterns.train", epilog=EPILOG,
                           description="Preemption-safe training with checkpoint-resume.")
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_train(args)
    except ConfigError as exc:
        sys.stderr.write(f"train: error: {exc}\n")
        return EXIT_BAD_INPUT
