"""`vertex-patterns launch`: flags -> `JobSpec` + `LaunchPolicy` -> `launch` -> table, JSON.

Exit codes: 0 a job succeeded; 1 the launch failed (every region exhausted, a user error, a
cancel; the error lists each region's reason); 2 bad input, nothing sent.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

from vertex_patterns.errors import ConfigError

if TYPE_CHECKING:
    from vertex_patterns.launcher.spec import JobSpec, LaunchPolicy

EPILOG = ("exit codes: 0 succeeded; 1 failed (all regions exhausted, a user error or cancelled: "
          "the error lists each region's reason); 2 bad input (nothing was sent)")
STRATEGY_NAMES = {"spot": "SPOT", "standard": "STANDARD", "flex-start": "FLEX_START"}
FAILOVER_NAMES = {"eager-next-region": "EAGER_NEXT_REGION", "failover": "FAILOVER"}


def add_launch_arguments(p: argparse.ArgumentParser) -> None:
    """The launch command's flags."""
    p.add_argument("--project", required=True, help="Google Cloud project ID")
    p.add_argument("--regions", required=True, help="comma-separated regions, in order")
    p.add_argument("--image", required=True,
                   help="container image URI; {region} is filled in per region")
    p.add_argument("--machine-type", required=True, help="e.g. n1-standard-8, g2-standard-8")
    p.add_argument("--accelerator", metavar="TYPE:COUNT", help="e.g. T4:1, NVIDIA_L4:1")
    p.add_argument("--replica-count", type=int, default=1, help="replicas in all (1)")
    p.add_argument("--strategy", choices=sorted(STRATEGY_NAMES), default="spot")
    p.add_argument("--max-wait", metavar="DURATION", help="flex-start: wait for capacity")
    p.add_argument("--timeout", metavar="DURATION", help="per job, e.g. 3600s, 8h")
    p.add_argument("--run-dir-template", required=True,
                   help="per-region run directory, e.g. 'gs://bucket-{region}/runs/NAME'")
    p.add_argument("--display-name", help="job name prefix (default: the run dir's last part)")
    p.add_argument("--max-attempts", type=int, default=10, help="jobs in all (10)")
    p.add_argument("--failover", choices=sorted(FAILOVER_NAMES), default="eager-next-region")
    p.add_argument("--retries-per-region", type=int, default=1,
                   help="--failover failover: extra tries in a region (1)")
    p.add_argument("--preemption-budget", type=int, default=3,
                   help="preemptions before falling back from SPOT to STANDARD (3; -1 never)")
    p.add_argument("--retry-exit-codes", default="", metavar="N,N",
                   help="user exit codes to retry in place (others fail fast)")
    p.add_argument("--no-replica-args", action="store_true",
                   help="do not append --replica <other region's checkpoints> to the command")
    p.add_argument("--history", metavar="FILE", help="write the attempt history as JSON")
    p.add_argument("--state-file", metavar="FILE",
                   help="gcp_resources JSON recording the jobs: a restart re-attaches")
    p.add_argument("--poll-seconds", type=float, default=15.0, help="job poll interval (15)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--service-account", help="service account email")
    p.add_argument("--network", help="projects/NUMBER/global/networks/NAME")
    p.add_argument("--reserved-ip-range", action="append", default=[], metavar="NAME")
    p.add_argument("--kms-key", help="CMEK key, location {region}")
    p.add_argument("--boot-disk-type", default="pd-ssd")
    p.add_argument("--boot-disk-size-gb", type=int, default=100)
    p.add_argument("--restart-job-on-worker-restart", action="store_true")
    # Not `command`: that is the CLI's own sub-command name in the same namespace.
    p.add_argument("job_command", nargs="+", metavar="-- COMMAND ARGS",
                   help="container command; {run_dir} and {region} are filled in per region")


def _pairs(values: list[str], flag: str) -> tuple[tuple[str, str], ...]:
    out = []
    for value in values:
        key, sep, val = value.partition("=")
        if not sep:
            raise ConfigError(f"{flag} {value!r}: expected KEY=VALUE")
        out.append((key, val))
    return tuple(out)


def _codes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(c) for c in text.split(",") if c.strip())
    except ValueError as exc:
        raise ConfigError(f"--retry-exit-codes {text!r}: expected N,N,...") from exc


def spec_and_policy(args: argparse.Namespace) -> tuple[JobSpec, LaunchPolicy]:
    """The validated `(JobSpec, LaunchPolicy)` the flags describe (ConfigError otherwise)."""
    from vertex_patterns.launcher.spec import (
        JobSpec,
        LaunchPolicy,
        parse_accelerator,
        parse_duration,
    )

    accelerator, count = parse_accelerator(args.accelerator) if args.accelerator else (None, 0)
    regions = tuple(r.strip() for r in args.regions.split(",") if r.strip())
    name = args.display_name or args.run_dir_template.rstrip("/").rsplit("/", 1)[-1]
    spec = JobSpec(
        display_name=name.replace("{region}", "r"), image=args.image,
        command=tuple(args.job_command), machine_type=args.machine_type,
        accelerator_type=accelerator, accelerator_count=count,
        replica_count=args.replica_count, env=_pairs(args.env, "--env"),
        boot_disk_type=args.boot_disk_type, boot_disk_size_gb=args.boot_disk_size_gb,
        strategy=STRATEGY_NAMES[args.strategy],
        max_wait_duration_s=parse_duration(args.max_wait, "--max-wait") if args.max_wait
        else None,
        timeout_s=parse_duration(args.timeout, "--timeout") if args.timeout else None,
        restart_job_on_worker_restart=args.restart_job_on_worker_restart,
        service_account=args.service_account, network=args.network,
        reserved_ip_ranges=tuple(args.reserved_ip_range),
        encryption_spec_key_name=args.kms_key, labels=_pairs(args.label, "--label"))
    policy = LaunchPolicy(
        project=args.project, regions=regions, run_dir_template=args.run_dir_template,
        failover=FAILOVER_NAMES[args.failover], max_attempts=args.max_attempts,
        retries_per_region=args.retries_per_region,
        spot_preemption_budget=None if args.preemption_budget < 0 else args.preemption_budget,
        retry_exit_codes=_codes(args.retry_exit_codes),
        replica_flag=None if args.no_replica_args else "--replica",
        poll_seconds=args.poll_seconds)
    return spec, policy


def run_launch(args: argparse.Namespace) -> int:
    """Validates everything, launches, prints the history table; 0 / 1 / 2 (via ConfigError)."""
    from vertex_patterns.launcher.launcher import Launcher
    from vertex_patterns.storage.local import atomic_write

    spec, policy = spec_and_policy(args)
    if args.history:
        directory = os.path.dirname(os.path.abspath(args.history))
        if not os.path.isdir(directory):
            raise ConfigError(f"--history: directory {directory} does not exist")
    logging.getLogger("vertex_patterns.launcher").setLevel(logging.INFO)
    history = Launcher(spec, policy, state_path=args.state_file).run()
    sys.stdout.write(history.to_table())
    if args.history:
        with atomic_write(os.path.abspath(args.history)) as f:
            f.write(history.to_json().encode())
    if history.succeeded:
        return 0
    sys.stderr.write(f"vertex-patterns launch: failed: {history.failure or history.final_outcome}"
                     "\n")
    return 1
