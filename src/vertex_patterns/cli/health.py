"""`vertex-patterns health RUN_DIR [--follow] [--rpo TIER] [--json] [--cancel-job NAME]`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_HEALTHY = 0
"""Healthy, or warnings only."""
EXIT_CRITICAL = 1
"""A critical finding."""


def add_health(sub: Any) -> None:
    """Registers `health`."""
    from vertex_patterns.health.config import RPO_TIERS

    p = sub.add_parser(
        "health",
        help="check a training run's health from its metrics stream and checkpoints",
        description="Evaluate the health rules (non-finite loss, loss spike, divergence, "
        "stall, checkpoint staleness against an RPO tier, low utilisation, throughput "
        "regression, stragglers) over a trainer's run directory. Exit 0 healthy or warnings "
        "only, 1 critical, 2 bad input.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the trainer's --run-dir (gs:// or local)")
    p.add_argument("--follow", action="store_true",
                   help="check again every --poll-seconds until the run completes or turns "
                        "critical")
    p.add_argument("--rpo", metavar="TIER", default="production",
                   help=f"recovery-point objective tier for checkpoint staleness: "
                        f"{', '.join(f'{k} ({v / 3600:g} h)' for k, v in RPO_TIERS.items())}; "
                        "default production")
    p.add_argument("--rpo-seconds", type=float, metavar="S",
                   help="override the tier's RPO in seconds")
    p.add_argument("--poll-seconds", type=float, default=30.0, help="with --follow (30)")
    p.add_argument("--timeout-seconds", type=float, metavar="S",
                   help="with --follow: stop following after S seconds")
    p.add_argument("--cancel-job", metavar="NAME",
                   help="on a critical verdict, cancel this CustomJob "
                        "(projects/P/locations/R/customJobs/ID) through the Vertex AI SDK")
    p.add_argument("--dry-run", action="store_true",
                   help="with --cancel-job: report what would be done, send nothing")
    p.add_argument("--json", action="store_true",
                   help='print {"verdict", "findings": [{"rule", "severity", "step", '
                        '"evidence", "action"}]}')
    p.set_defaults(handler=run_health)


def run_health(args: argparse.Namespace) -> int:
    """Parses nothing further: builds the config, calls the core, prints."""
    from vertex_patterns.errors import ConfigError
    from vertex_patterns.health import HealthConfig, Verdict, check_run, follow_run, rpo_seconds
    from vertex_patterns.health.respond import cancel_on_critical, parse_job_name

    rpo = rpo_seconds(args.rpo)
    if args.rpo_seconds is not None:
        if args.rpo_seconds <= 0:
            raise ConfigError(f"--rpo-seconds must be > 0, got {args.rpo_seconds}")
        rpo = args.rpo_seconds
    config = HealthConfig(rpo_s=rpo)
    if args.cancel_job is not None:
        parse_job_name(args.cancel_job)  # bad input is found before anything is read
    elif args.dry_run:
        raise ConfigError("--dry-run only goes with --cancel-job")
    if args.follow:
        def progress(report: Any) -> None:
            if not args.json:
                sys.stderr.write(report.to_table().splitlines()[0] + "\n")

        report = follow_run(args.run_dir, config, poll_s=args.poll_seconds,
                            timeout_s=args.timeout_seconds, on_report=progress)
    else:
        report = check_run(args.run_dir, config)
    if args.cancel_job is not None:
        report = cancel_on_critical(report, args.cancel_job, dry_run=args.dry_run)
    sys.stdout.write(report.to_json() if args.json else report.to_table())
    return EXIT_CRITICAL if report.verdict == Verdict.CRITICAL else EXIT_HEALTHY
