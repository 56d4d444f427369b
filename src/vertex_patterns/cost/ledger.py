"""`cost ledger`: what a launched run actually cost, what it lost, what on demand would cost.

From the launcher's history (`--history` JSON): each attempt's machine-hours, from its start
to its end, priced by its strategy (SPOT at the Spot price; STANDARD and FLEX_START at the
on-demand price, an upper bound for FLEX_START) in its region. Attempts that never ran
(stockout, quota) cost nothing. The times include queueing and provisioning, so the figure
is an upper bound of what Vertex AI bills.

From the run directory's goodput ledger: the time lost to preemptions and rewinds (steps
redone, time between attempts, restores), priced at the final region's rate for the final
attempt's strategy. Without a history, the attempts in the run directory are the machine
time, all at `strategy` in `region`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from vertex_patterns.cost.catalog import PriceCatalog
from vertex_patterns.cost.observe import RunObservations, observe_run
from vertex_patterns.errors import ConfigError
from vertex_patterns.formatting import format_table
from vertex_patterns.storage import Storage

NOT_RUN = ("stockout", "quota")
"""Outcomes of attempts whose job never started."""
LOST_CATEGORIES = ("wasted_progress_s", "infrastructure_recovery_s", "checkpoint_restore_s")
"""Goodput categories counted as work lost to disruptions."""


@dataclass(frozen=True)
class LedgerLine:
    """Machine-hours and cost of one attempt."""

    region: str
    strategy: str
    outcome: str
    hours: float
    cost: float
    on_demand_cost: float


@dataclass(frozen=True)
class RunLedger:
    """The cost of a run (see the module docstring)."""

    machine: str
    lines: tuple[LedgerLine, ...]
    lost_hours: float
    lost_cost: float
    preemptions: int
    observations: RunObservations | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def cost(self) -> float:
        """Actual USD (upper bound, see the module docstring)."""
        return sum(line.cost for line in self.lines)

    @property
    def hours(self) -> float:
        """Machine-hours billed."""
        return sum(line.hours for line in self.lines)

    @property
    def on_demand_cost(self) -> float:
        """The same machine-hours at on-demand prices."""
        return sum(line.on_demand_cost for line in self.lines)

    @property
    def on_demand_uninterrupted_cost(self) -> float:
        """On demand without the hours lost to disruptions."""
        hours = self.hours
        if hours <= 0:
            return 0.0
        return self.on_demand_cost * max(hours - self.lost_hours, 0.0) / hours

    def by_strategy_region(self) -> dict[tuple[str, str], tuple[float, float]]:
        """(strategy, region) -> (machine-hours, USD)."""
        out: dict[tuple[str, str], tuple[float, float]] = {}
        for line in self.lines:
            h, c = out.get((line.strategy, line.region), (0.0, 0.0))
            out[(line.strategy, line.region)] = (h + line.hours, c + line.cost)
        return out

    def to_dict(self) -> dict[str, Any]:
        """`cost ledger --json`."""
        return {"machine": self.machine, "cost": round(self.cost, 6),
                "machine_hours": round(self.hours, 6),
                "by_strategy_region": [
                    {"strategy": s, "region": r, "machine_hours": round(h, 6),
                     "cost": round(c, 6)}
                    for (s, r), (h, c) in sorted(self.by_strategy_region().items())],
                "lost_hours": round(self.lost_hours, 6), "lost_cost": round(self.lost_cost, 6),
                "preemptions": self.preemptions,
                "on_demand_cost": round(self.on_demand_cost, 6),
                "on_demand_uninterrupted_cost": round(self.on_demand_uninterrupted_cost, 6)}

    def to_text(self) -> str:
        """A table by strategy and region, then the totals."""
        rows = [[s, r, f"{h:.4f}", f"${c:,.4f}"]
                for (s, r), (h, c) in sorted(self.by_strategy_region().items())]
        lines = [f"run ledger: {self.machine}",
                 *format_table(["strategy", "region", "machine-hours", "USD"], rows,
                               left={0, 1}),
                 f"actual cost ${self.cost:,.4f} for {self.hours:.4f} machine-hours "
                 f"({self.preemptions} preemption(s))",
                 f"lost to preemptions and rewinds: {self.lost_hours:.4f} h, "
                 f"${self.lost_cost:,.4f}",
                 f"the same machine-hours on demand: ${self.on_demand_cost:,.4f}; "
                 f"on demand without the losses: ${self.on_demand_uninterrupted_cost:,.4f}",
                 *self.notes]
        return "\n".join(lines) + "\n"


def _parse_time(text: str, what: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError) as exc:
        raise ConfigError(f"{what}: {text!r} is not an ISO 8601 time") from exc


def read_history(path: str) -> dict[str, Any]:
    """The launcher's `--history` JSON document.

    Raises:
        ConfigError: Missing, not JSON, or without an ``attempts`` list.
    """
    try:
        with open(path, encoding="utf-8") as f:
            body = json.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a launch history JSON ({exc})") from exc
    if not isinstance(body, dict) or not isinstance(body.get("attempts"), list):
        raise ConfigError(f"{path}: not a launch history (no 'attempts' list)")
    return body


def ledger_from_history(history: dict[str, Any], catalog: PriceCatalog, *, machine_type: str,
                        accelerator: str | None = None, count: int = 0,
                        run_dir: str | None = None,
                        storage: Storage | None = None) -> RunLedger:
    """The ledger of a launch (attempts from `history`, losses from `run_dir` when given).

    Raises:
        ConfigError: A malformed attempt, or a price missing for a region used.
    """
    lines = []
    for i, attempt in enumerate(history.get("attempts", []), 1):
        if not isinstance(attempt, dict):
            raise ConfigError(f"history attempt {i} is not an object")
        region = str(attempt.get("region", ""))
        strategy = str(attempt.get("strategy", "SPOT")).upper()
        outcome = str(attempt.get("outcome", ""))
        if outcome in NOT_RUN or not attempt.get("started") or not attempt.get("ended"):
            hours = 0.0
        else:
            start = _parse_time(attempt["started"], f"history attempt {i} started")
            end = _parse_time(attempt["ended"], f"history attempt {i} ended")
            hours = max(end - start, 0.0) / 3600
        price = catalog.price(machine_type, accelerator, count, region=region)
        hourly = price.spot if strategy == "SPOT" else price.on_demand
        lines.append(LedgerLine(region=region, strategy=strategy, outcome=outcome, hours=hours,
                                cost=hours * hourly, on_demand_cost=hours * price.on_demand))
    preemptions = sum(1 for line in lines if line.outcome == "preempted")
    label = catalog.price(machine_type, accelerator, count,
                          region=lines[0].region if lines else "us-central1").shape.label \
        if lines else machine_type
    observations = None
    lost_h = lost_cost = 0.0
    notes: list[str] = []
    if run_dir:
        observations = observe_run(run_dir, storage)
        lost_h = sum(observations.summary.seconds[k] for k in LOST_CATEGORIES) / 3600
        ran = [line for line in lines if line.hours > 0]
        if ran:
            final = ran[-1]
            lost_cost = lost_h * (final.cost / final.hours)
        notes.append(f"losses from the goodput ledger in {run_dir} (attempts that wrote there)")
    return RunLedger(machine=label, lines=tuple(lines), lost_hours=lost_h, lost_cost=lost_cost,
                     preemptions=preemptions, observations=observations, notes=tuple(notes))


def ledger_from_run_dir(run_dir: str, catalog: PriceCatalog, *, machine_type: str,
                        region: str, accelerator: str | None = None, count: int = 0,
                        strategy: str = "SPOT", storage: Storage | None = None) -> RunLedger:
    """The ledger of a run directory alone: its attempts' wall time at `strategy` in `region`."""
    observations = observe_run(run_dir, storage)
    price = catalog.price(machine_type, accelerator, count, region=region)
    hourly = price.spot if strategy.upper() == "SPOT" else price.on_demand
    lines = []
    for a in observations.summary.attempts:
        hours = (a.end_time - a.start_time) / 3600
        lines.append(LedgerLine(region=region, strategy=strategy.upper(),
                                outcome=a.outcome or "killed", hours=hours,
                                cost=hours * hourly, on_demand_cost=hours * price.on_demand))
    # Only billed time: the gaps between attempts are not in the attempts' records.
    lost_h = sum(observations.summary.seconds[k]
                 for k in ("wasted_progress_s", "checkpoint_restore_s")) / 3600
    return RunLedger(machine=price.shape.label, lines=tuple(lines), lost_hours=lost_h,
                     lost_cost=lost_h * hourly, preemptions=observations.preemptions,
                     observations=observations,
                     notes=("machine time: the attempts' own records (no launch history); "
                            "the gaps between attempts are neither billed nor counted",))


def ledger(source: str, catalog: PriceCatalog, *, machine_type: str,
           accelerator: str | None = None, count: int = 0, region: str | None = None,
           strategy: str = "SPOT", run_dir: str | None = None,
           storage: Storage | None = None) -> RunLedger:
    """`cost ledger RUN_DIR_OR_HISTORY`: a history JSON file, or a run directory.

    Raises:
        ConfigError: A run directory without `--region`, or what the readers raise.
    """
    if os.path.isfile(source):
        return ledger_from_history(read_history(source), catalog, machine_type=machine_type,
                                   accelerator=accelerator, count=count, run_dir=run_dir,
                                   storage=storage)
    if region is None:
        raise ConfigError(f"{source} is a run directory: give --region (and --strategy) to "
                          "price it, or pass the launch history JSON instead")
    return ledger_from_run_dir(source, catalog, machine_type=machine_type, region=region,
                               accelerator=accelerator, count=count, strategy=strategy,
                               storage=storage)
