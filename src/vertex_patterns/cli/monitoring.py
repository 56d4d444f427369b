"""`vertex-patterns monitoring render|apply`: alerting, log metrics, dashboard, budget as code."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", required=True, help="the project the training jobs run in")
    p.add_argument("--rpo", default="production",
                   help="RPO tier for the checkpoint-staleness alert (research, production, "
                        "critical)")
    p.add_argument("--hang-minutes", type=int, default=30,
                   help="no progress for this long opens the hang alert (30)")
    p.add_argument("--billing-account", metavar="ID",
                   help="XXXXXX-XXXXXX-XXXXXX: also render the budget")
    p.add_argument("--budget-amount", type=int, default=1000,
                   help="monthly budget in whole currency units (1000)")
    p.add_argument("--currency", default="USD", help="the billing account's currency (USD)")
    p.add_argument("--budget-topic", default="vertex-patterns-budget",
                   help="Pub/Sub topic id in --project for budget notifications")
    p.add_argument("--notification-channel", action="append", default=[], metavar="NAME",
                   help="projects/P/notificationChannels/ID every alert notifies (repeatable)")


def add_monitoring(sub: Any) -> None:
    """Registers `monitoring render` and `monitoring apply`."""
    p = sub.add_parser("monitoring", help="alert policies, log-based metrics, a dashboard and "
                       "a budget, as code")
    msub = p.add_subparsers(dest="monitoring_command", metavar="ACTION")
    msub.required = True
    render = msub.add_parser(
        "render", help="write one JSON file per resource",
        description="Render alert policies, log-based metrics, the dashboard and (with "
        "--billing-account) the budget as the APIs' JSON, one file each under --out; each "
        "is checked to parse as its API's type. Exit 0, or 2 for bad input.")
    _common(render)
    render.add_argument("--out", required=True, metavar="DIR", help="output directory")
    render.set_defaults(handler=run_render)
    apply = msub.add_parser(
        "apply", help="create or update the resources (matched by display name)",
        description="Create or update every resource through the Cloud Monitoring, Cloud "
        "Logging and Billing Budgets client libraries, matched by display name; a second "
        "apply changes nothing. Exit 0 applied, 1 an API call failed, 2 bad input.")
    _common(apply)
    apply.add_argument("--from", dest="source", metavar="DIR",
                       help="apply the files `render` wrote (reviewed) instead of rendering")
    apply.add_argument("--json", action="store_true", help="print the report as JSON")
    apply.set_defaults(handler=run_apply)


def _config(args: argparse.Namespace) -> Any:
    from vertex_patterns.monitoring.config import MonitoringConfig

    return MonitoringConfig(
        project=args.project, rpo=args.rpo, hang_minutes=args.hang_minutes,
        billing_account=args.billing_account, budget_amount=args.budget_amount,
        currency=args.currency, budget_topic=args.budget_topic,
        notification_channels=tuple(args.notification_channel))


def run_render(args: argparse.Namespace) -> int:
    """Renders and writes the files."""
    from vertex_patterns.monitoring.render import render, write_rendered

    for path in write_rendered(render(_config(args)), args.out):
        sys.stdout.write(f"wrote {path}\n")
    return 0


def run_apply(args: argparse.Namespace) -> int:
    """Applies rendered (or reviewed) resources."""
    from vertex_patterns.errors import ConfigError
    from vertex_patterns.monitoring.apply import apply, default_clients, to_json
    from vertex_patterns.monitoring.render import read_rendered, render

    config = _config(args)
    if args.source is not None:
        if not os.path.isdir(args.source):
            raise ConfigError(f"--from {args.source} is not a directory: give `render --out`")
        try:
            rendered = read_rendered(args.source)
        except ValueError as exc:
            raise ConfigError(f"--from {args.source}: {exc}") from None
    else:
        rendered = render(config)
    report = apply(rendered, project=config.project, billing_account=config.billing_account,
                   clients=default_clients())
    sys.stdout.write(to_json(report) if args.json else report.to_table())
    return 0
