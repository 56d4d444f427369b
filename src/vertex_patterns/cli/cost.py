"""`vertex-patterns cost ...`: parse, call one function of `vertex_patterns.cost`, print.

Every sub-command prints a table by default and JSON with `--json`; bad input (negative
hours, an unknown machine type, a zero MTBF, a missing price) is one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from vertex_patterns.errors import ConfigError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prices", metavar="FILE", help="price file overriding catalog entries")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _machine(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    p.add_argument("--machine-type", required=required, metavar="M", help="e.g. n1-standard-8")
    p.add_argument("--accelerator", metavar="TYPE:COUNT", help="e.g. V100:8 (N1 only)")
    p.add_argument("--region", metavar="R", help="e.g. us-central1")


def _rate(args: argparse.Namespace, catalog: Any) -> Any:
    """The hourly rate the flags describe: a machine in a region, or a bare rate."""
    from vertex_patterns.cost.compare import HourlyRate
    from vertex_patterns.launcher.spec import parse_accelerator

    if args.on_demand_hourly is not None:
        if args.machine_type:
            raise ConfigError("give --machine-type or --on-demand-hourly, not both")
        return HourlyRate.bare(catalog, args.on_demand_hourly, args.spot_hourly)
    if not args.machine_type or not args.region:
        raise ConfigError("give --machine-type M --region R [--accelerator T:C], or "
                          "--on-demand-hourly USD")
    kind, count = parse_accelerator(args.accelerator) if args.accelerator else (None, 0)
    return HourlyRate.of_machine(catalog.price(args.machine_type, kind, count,
                                               region=args.region))


def _rate_flags(p: argparse.ArgumentParser) -> None:
    _machine(p)
    p.add_argument("--on-demand-hourly", type=float, metavar="USD",
                   help="a bare on-demand rate instead of a machine")
    p.add_argument("--spot-hourly", type=float, metavar="USD",
                   help="with --on-demand-hourly: the Spot rate (default: the catalog's "
                        "bare-rate Spot discount)")


def _print(args: argparse.Namespace, body: dict[str, Any], text: str) -> int:
    sys.stdout.write(json.dumps(body, indent=1) + "\n" if args.json else text)
    return 0


def add_cost(sub: Any) -> None:
    """Adds `cost` and its sub-commands to the top-level sub-parsers."""
    p = sub.add_parser("cost", help="prices, Spot/CUD/SUD planning, checkpoint interval, "
                       "right-sizing, run ledgers")
    csub = p.add_subparsers(dest="cost_command", metavar="ACTION")
    csub.required = True

    c = csub.add_parser("compare", help="on demand vs Spot vs CUD 1y/3y vs sustained use",
                        description="Monthly USD of a usage profile under each pricing "
                        "option. --json prints {on_demand, spot, cud_1y, cud_3y, sud}.")
    _rate_flags(c)
    c.add_argument("--hours-per-month", type=float, required=True, metavar="H",
                   help="machine-hours per month (720: one machine all month)")
    c.add_argument("--month-hours", type=float, help="hours in a month (catalog: 720)")
    _common(c)
    c.set_defaults(handler=run_compare)

    pl = csub.add_parser("plan", help="blended fleet: baseline on CUD, burst on Spot, "
                         "peak on demand",
                         description="The cheapest fleet for an hourly demand series "
                         "(machines needed per hour, a JSON list or one number per line).")
    _rate_flags(pl)
    pl.add_argument("--demand", required=True, metavar="FILE", help="hourly demand series")
    pl.add_argument("--commitment", choices=("1y", "3y"), default="1y")
    pl.add_argument("--spot-cap", type=int, metavar="N", help="most Spot machines at once")
    pl.add_argument("--spot-overhead", type=float, default=0.1,
                    help="preemption overhead on Spot hours (0.1 = 10%%)")
    _common(pl)
    pl.set_defaults(handler=run_plan)

    s = csub.add_parser("spot-run", help="expected time and cost of a run on Spot vs on demand",
                        description="The goodput model: preemptions cost the work since the "
                        "last checkpoint plus a restart. Says at which preemption rate Spot "
                        "stops paying off.")
    _rate_flags(s)
    s.add_argument("--work-hours", type=float, required=True, help="computation needed")
    rate = s.add_mutually_exclusive_group(required=True)
    rate.add_argument("--preemptions-per-hour", type=float)
    rate.add_argument("--mtbf-hours", type=float)
    s.add_argument("--checkpoint-seconds", type=float, required=True, help="blocking cost C")
    s.add_argument("--restart-seconds", type=float, default=120.0,
                   help="VM replacement + start + restore (120)")
    s.add_argument("--interval-seconds", type=float,
                   help="seconds of work between checkpoints (default: Young/Daly's)")
    _common(s)
    s.set_defaults(handler=run_spot_run)

    i = csub.add_parser("interval", help="optimal checkpoint interval (Young/Daly)",
                        description="interval = sqrt(2 * C * MTBF) from a checkpoint cost C "
                        "and an MTBF, given or measured by a run. --json prints "
                        "{\"interval_seconds\", ...}.")
    i.add_argument("--checkpoint-seconds", type=float, metavar="C")
    i.add_argument("--mtbf-hours", type=float, metavar="H")
    i.add_argument("--from-run", metavar="RUN_DIR",
                   help="read C (and the MTBF, unless given) from a trainer run directory")
    i.add_argument("--history", metavar="FILE",
                   help="launch history JSON: the MTBF from its preemptions")
    i.add_argument("--json", action="store_true")
    i.set_defaults(handler=run_interval)

    r = csub.add_parser("rightsize", help="profile a workload, recommend the cheapest "
                        "machine that fits",
                        description="Profiles a few steps (torch.profiler) or reads a "
                        "profile, and picks the configuration with the lowest cost per step "
                        "that fits with headroom.")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--workload", help="built-in name or package.module:function")
    src.add_argument("--profile", metavar="FILE", help="a profile JSON (see --save-profile)")
    r.add_argument("--steps", type=int, default=5, help="steps to profile (5)")
    r.add_argument("--region", required=True)
    r.add_argument("--strategy", choices=("spot", "on-demand"), default="spot")
    r.add_argument("--headroom", type=float, default=0.2, help="memory headroom (0.2)")
    r.add_argument("--save-profile", metavar="FILE", help="also write the profile JSON")
    _common(r)
    r.set_defaults(handler=run_rightsize)

    lg = csub.add_parser("ledger", help="what a launched run cost",
                         description="Machine-hours by strategy and region from a launch "
                         "history (or a run directory's attempts), the cost of work lost to "
                         "preemptions and rewinds, and the same run on demand.")
    lg.add_argument("source", metavar="RUN_DIR_OR_HISTORY")
    _machine(lg, required=True)
    lg.add_argument("--run-dir", help="with a history: the final region's run directory")
    lg.add_argument("--strategy", choices=("SPOT", "STANDARD", "spot", "standard"),
                    default="SPOT", help="for a run directory alone (SPOT)")
    _common(lg)
    lg.set_defaults(handler=run_ledger)


def _catalog(args: argparse.Namespace) -> Any:
    from vertex_patterns.cost.catalog import PriceCatalog

    return PriceCatalog.load(getattr(args, "prices", None))


def run_compare(args: argparse.Namespace) -> int:
    from vertex_patterns.cost.compare import compare

    catalog = _catalog(args)
    result = compare(_rate(args, catalog), args.hours_per_month,
                     args.month_hours if args.month_hours is not None else catalog.month_hours)
    return _print(args, result.to_dict(), result.to_table())


def run_plan(args: argparse.Namespace) -> int:
    from vertex_patterns.cost.fleet import FleetOptions, plan_fleet, read_demand

    catalog = _catalog(args)
    options = FleetOptions(commitment=f"cud_{args.commitment}", spot_cap=args.spot_cap,
                           spot_overhead=args.spot_overhead, month_hours=catalog.month_hours)
    result = plan_fleet(read_demand(args.demand), _rate(args, catalog), options)
    return _print(args, {**result.to_dict(), "reasoning": result.reasoning()},
                  result.to_text())


def run_spot_run(args: argparse.Namespace) -> int:
    from vertex_patterns.cost.goodput_model import young_daly_interval
    from vertex_patterns.cost.spot_run import SpotRunInputs, estimate_spot_run

    if args.mtbf_hours is not None:
        if not args.mtbf_hours > 0:
            raise ConfigError(f"--mtbf-hours must be > 0, got {args.mtbf_hours}")
        per_hour = 1 / args.mtbf_hours
    else:
        per_hour = args.preemptions_per_hour
    interval = args.interval_seconds
    if interval is None:
        interval = young_daly_interval(args.checkpoint_seconds, 3600 / per_hour) \
            if per_hour and per_hour > 0 and args.checkpoint_seconds > 0 else 3600.0
    inputs = SpotRunInputs(work_hours=args.work_hours, preemptions_per_hour=per_hour,
                           checkpoint_s=args.checkpoint_seconds, restart_s=args.restart_seconds,
                           interval_s=interval)
    result = estimate_spot_run(inputs, _rate(args, _catalog(args)))
    return _print(args, result.to_dict(), result.to_text())


def run_interval(args: argparse.Namespace) -> int:
    from vertex_patterns.cost.interval import decide_interval

    decision = decide_interval(checkpoint_s=args.checkpoint_seconds,
                               mtbf_hours=args.mtbf_hours, run_dir=args.from_run,
                               history=args.history)
    text = (f"checkpoint every {decision.interval_seconds:.1f} s (C = "
            f"{decision.checkpoint_seconds:.4g} s, MTBF = {decision.mtbf_seconds / 3600:.4g} h; "
            f"{decision.source})\n")
    return _print(args, decision.to_dict(), text)


def run_rightsize(args: argparse.Namespace) -> int:
    from vertex_patterns.cost.rightsize import WorkloadProfile, profile_workload, recommend
    from vertex_patterns.launcher.catalog import check_region
    from vertex_patterns.storage.local import atomic_write

    check_region(args.region)
    catalog = _catalog(args)
    profile = WorkloadProfile.from_file(args.profile) if args.profile else \
        profile_workload(args.workload, steps=args.steps)
    result = recommend(profile, catalog, region=args.region, strategy=args.strategy,
                       headroom=args.headroom)
    if args.save_profile:
        with atomic_write(args.save_profile) as f:
            f.write(json.dumps(profile.to_dict(), indent=1).encode())
    return _print(args, result.to_dict(), result.to_text())


def run_ledger(args: argparse.Namespace) -> int:
    from vertex_patterns.cost.ledger import ledger
    from vertex_patterns.launcher.spec import parse_accelerator

    kind, count = parse_accelerator(args.accelerator) if args.accelerator else (None, 0)
    result = ledger(args.source, _catalog(args), machine_type=args.machine_type,
                    accelerator=kind, count=count, region=args.region,
                    strategy=args.strategy.upper(), run_dir=args.run_dir)
    return _print(args, result.to_dict(), result.to_text())
