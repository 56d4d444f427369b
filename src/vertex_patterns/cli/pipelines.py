"""`compile`, `run`, `submit` and `schedule`: the pipeline commands (parse, call, print)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from vertex_patterns.errors import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1


def add_compile(sub: Any) -> None:
    p = sub.add_parser(
        "compile",
        help="regenerate components/*.yaml and pipelines/*.json",
        description="Compile every KFP component to components/NAME.yaml and every pipeline "
        "to pipelines/NAME.json under --output-dir.",
    )
    p.add_argument("--output-dir", default=".",
                   help="root under which components/ and pipelines/ are written (.)")
    p.add_argument("--image", help="the image every component runs in, e.g. your own "
                   "registry's copy (default: the package version's image)")
    p.set_defaults(handler=run_compile)


def run_compile(args: argparse.Namespace) -> int:
    from vertex_patterns.pipelines.compile import compile_all
    from vertex_patterns.pipelines.image import IMAGE

    for path in compile_all(args.output_dir, image=args.image or IMAGE):
        print(f"wrote {path}")
    return EXIT_OK


def add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run a pipeline end to end on the embedded emulators (--local)",
        description="Start the GCS and Vertex AI emulators, submit the compiled pipeline "
        "through the real Vertex AI SDK, follow its tasks, print a summary and write "
        "DIR/summary.json and DIR/report.html. Exit 0 when the pipeline succeeded, 1 when it "
        "failed, 2 for bad input.",
    )
    p.add_argument("pipeline", metavar="PIPELINE", help="spot_training")
    p.add_argument("--local", action="store_true", required=True,
                   help="on the embedded emulators (required: the cloud is `submit`)")
    p.add_argument("--scenario", metavar="FILE",
                   help="Vertex AI emulator fault scenario (JSON; default: a stockout in the "
                   "first region, a preemption in the second)")
    p.add_argument("--output-dir", metavar="DIR", default="local-run",
                   help="where summary.json, report.html and the run's state go (local-run)")
    p.add_argument("--max-steps", type=int, default=12000, help="trainer steps (12000)")
    p.set_defaults(handler=run_run)


def run_run(args: argparse.Namespace) -> int:
    from vertex_patterns.runs.local_run import LocalRunConfig, run_local

    result = run_local(LocalRunConfig(pipeline=args.pipeline.replace("-", "_"),
                                      output_dir=args.output_dir,
                                      scenario_path=args.scenario, max_steps=args.max_steps))
    print(f"\nwrote {result.summary_path} and {result.report_path}")
    if not result.ok:
        sys.stderr.write(f"vertex-patterns run: pipeline {result.state}: {result.failure}\n")
    return EXIT_OK if result.ok else EXIT_FAILED


def _add_target_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pipeline", metavar="PIPELINE_JSON", help="a compiled pipeline "
                   "(pipelines/NAME.json)")
    p.add_argument("--project", required=True, help="Google Cloud project ID")
    p.add_argument("--region", required=True, help="Vertex AI region, e.g. us-central1")
    p.add_argument("--pipeline-root", required=True, metavar="GS_URI",
                   help="gs://BUCKET/PREFIX for the run's artifacts")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a pipeline parameter (repeatable); lists and numbers as JSON")
    p.add_argument("--service-account", help="service account the tasks run as")
    p.add_argument("--network", help="VPC: projects/NUMBER/global/networks/NAME")
    p.add_argument("--encryption-key", metavar="KMS_KEY",
                   help="Cloud KMS key in --region for the run's resources")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="a label on the job (repeatable)")
    p.add_argument("--display-name", default="", help="name shown in the console")


def _options(args: argparse.Namespace) -> Any:
    from vertex_patterns.runs.params import declared_parameters, parse_assignment
    from vertex_patterns.runs.submit import SubmitOptions, load_pipeline

    declared = declared_parameters(load_pipeline(args.pipeline))
    params = dict(parse_assignment(text, declared) for text in args.param)
    labels = {}
    for text in args.label:
        key, sep, value = text.partition("=")
        if not sep:
            raise ConfigError(f"--label {text!r}: expected KEY=VALUE")
        labels[key] = value
    return SubmitOptions(project=args.project, region=args.region,
                         pipeline_root=args.pipeline_root, parameters=params,
                         service_account=args.service_account, network=args.network,
                         encryption_key=args.encryption_key, labels=labels,
                         display_name=args.display_name)


def add_submit(sub: Any) -> None:
    p = sub.add_parser(
        "submit",
        help="submit a compiled pipeline to Vertex AI Pipelines (or the emulator)",
        description="Validate the parameters against the compiled pipeline, submit it and "
        "print the job's resource name. With --wait, follow it: exit 0 when it succeeded, 1 "
        "when it failed (with the failing task's error). Bad input: exit 2, nothing "
        "submitted. With VERTEX_AI_EMULATOR_HOST set it goes to the local emulator.",
    )
    _add_target_arguments(p)
    p.add_argument("--wait", action="store_true", help="wait for the job to end")
    p.add_argument("--poll-seconds", type=float, default=10.0,
                   help="with --wait, how often to poll (10)")
    p.set_defaults(handler=run_submit)


def run_submit(args: argparse.Namespace) -> int:
    from vertex_patterns.runs.submit import failure_message, submit_pipeline, wait_for_job

    if args.poll_seconds <= 0:
        raise ConfigError("--poll-seconds must be positive")
    job = submit_pipeline(args.pipeline, _options(args))
    print(job.resource_name, flush=True)
    if not args.wait:
        return EXIT_OK
    state = wait_for_job(job, poll_seconds=args.poll_seconds)
    print(state)
    if state == "PIPELINE_STATE_SUCCEEDED":
        return EXIT_OK
    sys.stderr.write(f"vertex-patterns submit: {failure_message(job)}\n")
    return EXIT_FAILED


def add_schedule(sub: Any) -> None:
    p = sub.add_parser("schedule", help="recurring pipeline runs: create, list, pause, "
                       "resume, delete")
    ssub = p.add_subparsers(dest="schedule_command", metavar="ACTION")
    ssub.required = True
    create = ssub.add_parser(
        "create", help="run a compiled pipeline on a cron schedule",
        description="Validate the pipeline's parameters and the cron expression locally, then "
        "create a Vertex AI pipeline schedule and print its resource name.")
    _add_target_arguments(create)
    create.add_argument("--cron", required=True,
                        help='cron, optionally with a time zone: "TZ=Europe/Berlin 0 3 * * *"')
    create.add_argument("--max-concurrent-runs", type=int, default=1,
                        help="runs allowed at once (1)")
    create.add_argument("--start", help="first possible run, ISO 8601 (default: now)")
    create.add_argument("--end", help="no runs after this time, ISO 8601")
    create.add_argument("--max-runs", type=int, help="stop after this many runs")
    create.set_defaults(handler=run_schedule_create)
    ls = ssub.add_parser("list", help="the schedules of a project and region")
    ls.add_argument("--project", required=True)
    ls.add_argument("--region", required=True)
    ls.set_defaults(handler=run_schedule_list)
    for action in ("pause", "resume", "delete"):
        a = ssub.add_parser(action, help=f"{action} a schedule")
        a.add_argument("schedule", metavar="SCHEDULE", help="its ID or resource name")
        a.add_argument("--project", required=True)
        a.add_argument("--region", required=True)
        a.set_defaults(handler=run_schedule_action, action=action)


def run_schedule_create(args: argparse.Namespace) -> int:
    from vertex_patterns.runs.submit import ScheduleOptions, create_schedule, parse_time

    schedule = ScheduleOptions(
        cron=args.cron, max_concurrent_runs=args.max_concurrent_runs,
        start=parse_time(args.start, "--start") if args.start else None,
        end=parse_time(args.end, "--end") if args.end else None,
        max_runs=args.max_runs, display_name=args.display_name)
    created = create_schedule(args.pipeline, _options(args), schedule)
    print(created.resource_name)
    return EXIT_OK


def run_schedule_list(args: argparse.Namespace) -> int:
    from vertex_patterns.runs.submit import list_schedules

    for s in list_schedules(args.project, args.region):
        gca = s.gca_resource
        next_run = gca.next_run_time.isoformat() if gca.next_run_time else "-"
        print(f"{s.resource_name}  {s.state.name}  cron={gca.cron!r}  next={next_run}  "
              f"runs={gca.started_run_count}  {gca.display_name}")
    return EXIT_OK


def run_schedule_action(args: argparse.Namespace) -> int:
    from vertex_patterns.runs.submit import get_schedule

    schedule = get_schedule(args.schedule, args.project, args.region)
    getattr(schedule, args.action)()
    print(f"{args.action}d {schedule.resource_name}" if args.action != "resume"
          else f"resumed {schedule.resource_name}")
    return EXIT_OK
