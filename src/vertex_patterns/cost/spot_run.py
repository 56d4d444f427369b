"""`cost spot-run`: expected wall time and cost of one run on Spot against on demand.

The Spot side uses the goodput model (`goodput_model`): preemptions at a given rate cost the
work since the last checkpoint plus a restart. The on-demand side runs the same work with
the same checkpoints and no preemption. Billing covers the whole wall time, restarts
included (the replacement VM is billed while it starts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vertex_patterns.cost.compare import HourlyRate
from vertex_patterns.cost.goodput_model import expected_wall_s
from vertex_patterns.errors import ConfigError
from vertex_patterns.formatting import format_table

_MAX_RATE_PER_HOUR = 1000.0  # above this no real run makes progress anyway


@dataclass(frozen=True, kw_only=True)
class SpotRunInputs:
    """One run's parameters (all times in seconds, the rate per hour)."""

    work_hours: float
    """Productive computation the run needs."""
    preemptions_per_hour: float
    """Spot preemption rate (1 / MTBF)."""
    checkpoint_s: float
    """Blocking cost of one checkpoint save."""
    restart_s: float
    """Cost of one restart: VM replacement, program start, restore."""
    interval_s: float
    """Seconds of work between checkpoints."""

    def __post_init__(self) -> None:
        checks = ((self.work_hours, "--work-hours", False),
                  (self.preemptions_per_hour, "--preemptions-per-hour", False),
                  (self.checkpoint_s, "--checkpoint-seconds", False),
                  (self.restart_s, "--restart-seconds", False),
                  (self.interval_s, "--interval-seconds", True))
        for value, flag, strict in checks:
            if not math.isfinite(value) or value < 0 or (strict and value == 0):
                bound = "> 0" if strict else ">= 0"
                raise ConfigError(f"{flag} must be a number {bound}, got {value}")


@dataclass(frozen=True)
class SpotRunEstimate:
    """Expected wall time and cost, Spot vs on demand, and where Spot stops paying off."""

    inputs: SpotRunInputs
    rate: HourlyRate
    spot_wall_h: float
    on_demand_wall_h: float
    spot_cost: float
    on_demand_cost: float
    break_even_per_hour: float
    """Preemption rate at which Spot costs as much as on demand (inf: never; 0: always)."""

    def to_dict(self) -> dict[str, float | None]:
        """`cost spot-run --json`."""
        be = self.break_even_per_hour
        return {"spot_wall_hours": round(self.spot_wall_h, 6),
                "on_demand_wall_hours": round(self.on_demand_wall_h, 6),
                "spot_cost": round(self.spot_cost, 2),
                "on_demand_cost": round(self.on_demand_cost, 2),
                "break_even_preemptions_per_hour": None if math.isinf(be) else round(be, 6)}

    def to_text(self) -> str:
        """A table and the verdict."""
        i = self.inputs
        rows = [["Spot", f"{self.spot_wall_h:.2f}", f"${self.spot_cost:,.2f}"],
                ["on demand", f"{self.on_demand_wall_h:.2f}", f"${self.on_demand_cost:,.2f}"]]
        lines = [f"{self.rate.label}: {i.work_hours:g} h of work, {i.preemptions_per_hour:g} "
                 f"preemptions/h, checkpoint {i.checkpoint_s:g} s every {i.interval_s:g} s, "
                 f"restart {i.restart_s:g} s",
                 *format_table(["capacity", "expected wall h", "expected USD"], rows, left={0})]
        be = self.break_even_per_hour
        if math.isinf(be):
            lines.append("Spot stays cheaper at any preemption rate below "
                         f"{_MAX_RATE_PER_HOUR:g}/h")
        elif be == 0:
            lines.append("Spot never pays off: its price is not below on demand")
        else:
            verdict = "pays off" if i.preemptions_per_hour < be else "does NOT pay off"
            lines.append(f"Spot stops paying off at {be:.3g} preemptions/h (MTBF "
                         f"{60 / be:.3g} min); at {i.preemptions_per_hour:g}/h it {verdict}")
        return "\n".join(lines) + "\n"


def spot_wall_hours(inputs: SpotRunInputs, per_hour: float) -> float:
    """Expected wall hours on Spot at `per_hour` preemptions per hour."""
    return expected_wall_s(inputs.work_hours * 3600, inputs.interval_s, inputs.checkpoint_s,
                           inputs.restart_s, per_hour / 3600) / 3600


def estimate_spot_run(inputs: SpotRunInputs, rate: HourlyRate) -> SpotRunEstimate:
    """Expected wall time and cost of the run on Spot and on demand, and the break-even rate."""
    od_wall = spot_wall_hours(inputs, 0.0)
    od_cost = od_wall * rate.on_demand
    spot_wall = spot_wall_hours(inputs, inputs.preemptions_per_hour)
    return SpotRunEstimate(inputs=inputs, rate=rate, spot_wall_h=spot_wall,
                           on_demand_wall_h=od_wall, spot_cost=spot_wall * rate.spot,
                           on_demand_cost=od_cost,
                           break_even_per_hour=break_even_rate(inputs, rate))


def break_even_rate(inputs: SpotRunInputs, rate: HourlyRate) -> float:
    """The preemption rate (per hour) at which Spot's expected cost equals on demand's.

    Spot's expected cost grows with the rate, so bisection finds the crossing.
    """
    if rate.spot >= rate.on_demand:
        return 0.0
    if inputs.work_hours == 0:
        return math.inf
    target = spot_wall_hours(inputs, 0.0) * rate.on_demand

    def spot_cost(per_hour: float) -> float:
        return spot_wall_hours(inputs, per_hour) * rate.spot

    if spot_cost(_MAX_RATE_PER_HOUR) <= target:
        return math.inf
    lo, hi = 0.0, _MAX_RATE_PER_HOUR
    for _ in range(200):
        mid = (lo + hi) / 2
        if spot_cost(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-9 * max(hi, 1e-12):
            break
    return (lo + hi) / 2
