"""`cost plan`: the blended fleet that serves an hourly demand profile at the lowest cost.

Demand is machines needed in each hour (a series from a file). The fleet has three layers:

- baseline: B machines on a committed-use discount, billed every hour whether busy or not;
- burst: demand above B on Spot, up to `spot_cap` machines, each Spot hour inflated by the
  preemption overhead (the work redone and the restarts, from the goodput model);
- peak: whatever is left on demand, with sustained-use discounts per machine slot (slot j
  runs in the hours where demand exceeds B + spot_cap + j - 1).

Every B from 0 to the peak demand is priced and the cheapest kept; ties go to the smaller
commitment. The reasoning names the break-even: the B-th committed machine pays off when it
is busy in more hours than its committed price divided by the price of the layer it displaces.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from vertex_patterns.cost.compare import HourlyRate, sud_multiplier
from vertex_patterns.errors import ConfigError
from vertex_patterns.formatting import format_table


@dataclass(frozen=True, kw_only=True)
class FleetOptions:
    """How the fleet may be built."""

    commitment: str = "cud_1y"
    """``cud_1y`` or ``cud_3y``: the baseline's discount."""
    spot_cap: int | None = None
    """Most Spot machines at once (None: no cap)."""
    spot_overhead: float = 0.1
    """Extra Spot machine-hours per useful hour (preemption losses), e.g. 0.1 for 10%."""
    month_hours: float = 720.0
    """Hours in a month (sustained use is counted per month)."""

    def __post_init__(self) -> None:
        if self.commitment not in ("cud_1y", "cud_3y"):
            raise ConfigError(f"--commitment must be 1y or 3y, got {self.commitment!r}")
        if self.spot_cap is not None and self.spot_cap < 0:
            raise ConfigError(f"--spot-cap must be >= 0, got {self.spot_cap}")
        if not math.isfinite(self.spot_overhead) or self.spot_overhead < 0:
            raise ConfigError(f"--spot-overhead must be >= 0, got {self.spot_overhead}")
        if self.month_hours <= 0:
            raise ConfigError("--month-hours must be > 0")


@dataclass(frozen=True)
class FleetCost:
    """The cost of one fleet over the demand series."""

    baseline: int
    committed: float
    spot: float
    on_demand: float
    spot_hours: float
    on_demand_hours: float

    @property
    def total(self) -> float:
        """USD over the series."""
        return self.committed + self.spot + self.on_demand


@dataclass(frozen=True)
class FleetPlan:
    """`cost plan`'s answer: the best fleet, the alternatives priced, and why."""

    demand: tuple[float, ...]
    rate: HourlyRate
    options: FleetOptions
    best: FleetCost
    candidates: tuple[FleetCost, ...]
    all_on_demand: float

    def to_dict(self) -> dict[str, float | int]:
        """`--json`."""
        return {"baseline_committed": self.best.baseline,
                "committed": round(self.best.committed, 2), "spot": round(self.best.spot, 2),
                "on_demand": round(self.best.on_demand, 2),
                "total": round(self.best.total, 2),
                "all_on_demand": round(self.all_on_demand, 2),
                "hours": len(self.demand)}

    def reasoning(self) -> list[str]:
        """Why this baseline: what the next machine up and down would have done."""
        hours = len(self.demand)
        b = self.best.baseline
        lines = [f"demand over {hours} h: peak {max(self.demand):g}, mean "
                 f"{sum(self.demand) / hours:.2f} machines"]
        committed_rate = _layer_rates(self.rate, self.options)[0]
        burst = self.rate.spot * (1 + self.options.spot_overhead)
        busy = sum(1 for d in self.demand if d >= b + 1)
        lines.append(f"a committed machine costs ${committed_rate:,.4f}/h every hour; Spot "
                     f"${burst:,.4f} per useful hour (with {100 * self.options.spot_overhead:g}% "
                     f"preemption overhead), on demand ${self.rate.on_demand:,.4f}/h")
        if b:
            used = sum(1 for d in self.demand if d >= b)
            lines.append(f"machine #{b} of the baseline is busy {used}/{hours} h "
                         f"({100 * used / hours:.0f}%), which pays for its commitment")
        lines.append(f"machine #{b + 1} would be busy {busy}/{hours} h "
                     f"({100 * busy / hours:.0f}%): cheaper left to "
                     + ("Spot" if self.options.spot_cap != 0 else "on demand"))
        if self.best.on_demand_hours:
            lines.append(f"{self.best.on_demand_hours:g} machine-hours above the Spot cap of "
                         f"{self.options.spot_cap} run on demand")
        saving = 1 - self.best.total / self.all_on_demand if self.all_on_demand else 0.0
        lines.append(f"total ${self.best.total:,.2f} against ${self.all_on_demand:,.2f} all on "
                     f"demand ({100 * saving:.1f}% less)")
        return lines

    def to_text(self) -> str:
        """The chosen fleet, nearby alternatives and the reasoning."""
        b = self.best.baseline
        near = [c for c in self.candidates if abs(c.baseline - b) <= 2]
        rows = [[str(c.baseline), f"${c.committed:,.2f}", f"${c.spot:,.2f}",
                 f"${c.on_demand:,.2f}", f"${c.total:,.2f}",
                 "<- best" if c.baseline == b else ""] for c in near]
        lines = [f"{self.rate.label}: baseline {b} on {self.options.commitment}, burst on "
                 "Spot, peak on demand",
                 *format_table(["baseline", "committed", "Spot", "on demand", "total", ""],
                               rows, left={5}),
                 *self.reasoning()]
        return "\n".join(lines) + "\n"


def _layer_rates(rate: HourlyRate, options: FleetOptions) -> tuple[float, float]:
    years = 1 if options.commitment == "cud_1y" else 3
    committed = sum(line.on_demand * (1 - (line.plan.cud_1y if years == 1 else line.plan.cud_3y))
                    for line in rate.lines)
    return committed, rate.spot * (1 + options.spot_overhead)


def fleet_cost(demand: tuple[float, ...], rate: HourlyRate, options: FleetOptions,
               baseline: int) -> FleetCost:
    """The cost of serving `demand` with `baseline` committed machines (module docstring)."""
    committed_rate, burst_rate = _layer_rates(rate, options)
    hours = len(demand)
    cap = math.inf if options.spot_cap is None else options.spot_cap
    spot_hours = sum(min(max(d - baseline, 0.0), cap) for d in demand)
    over = [max(d - baseline - cap, 0.0) for d in demand]
    od = 0.0
    od_hours = sum(over)
    months = hours / options.month_hours
    slot = 0
    while True:  # slot j serves the demand above baseline + cap + j
        busy = sum(min(max(o - slot, 0.0), 1.0) for o in over)
        if busy <= 0:
            break
        fraction = min(busy / (months * options.month_hours), 1.0) if months else 0.0
        od += sum(line.on_demand * busy * sud_multiplier(fraction, line.plan.sud_tiers)
                  for line in rate.lines)
        slot += 1
    return FleetCost(baseline=baseline, committed=baseline * hours * committed_rate,
                     spot=spot_hours * burst_rate, on_demand=od, spot_hours=spot_hours,
                     on_demand_hours=od_hours)


def plan_fleet(demand: list[float], rate: HourlyRate,
               options: FleetOptions | None = None) -> FleetPlan:
    """The cheapest baseline for `demand` (machines per hour).

    Raises:
        ConfigError: An empty series or a negative or non-finite demand.
    """
    options = options or FleetOptions()
    if not demand:
        raise ConfigError("the demand series is empty: give one number per hour")
    for i, d in enumerate(demand):
        if not math.isfinite(d) or d < 0:
            raise ConfigError(f"demand hour {i}: {d} is not a machine count >= 0")
    series = tuple(float(d) for d in demand)
    candidates = tuple(fleet_cost(series, rate, options, b)
                       for b in range(math.ceil(max(series)) + 1))
    best = min(candidates, key=lambda c: (round(c.total, 6), c.baseline))
    all_od = fleet_cost(series, rate, FleetOptions(commitment=options.commitment, spot_cap=0,
                                                   month_hours=options.month_hours), 0).total
    return FleetPlan(demand=series, rate=rate, options=options, best=best,
                     candidates=candidates, all_on_demand=all_od)


def read_demand(path: str) -> list[float]:
    """Machines needed per hour from `path`: a JSON list, or one number per line (CSV's first
    column; a header line and `#` comments are skipped).

    Raises:
        ConfigError: Missing file or a value that is not a number.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"--demand {path}: cannot read ({exc.strerror or exc})") from exc
    if text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--demand {path}: not a JSON list ({exc})") from exc
        if not isinstance(values, list):
            raise ConfigError(f"--demand {path}: expected a JSON list of numbers")
    else:
        values = []
        for number, line in enumerate(text.splitlines(), 1):
            cell = line.split("#", 1)[0].split(",", 1)[0].strip()
            if not cell:
                continue
            try:
                values.append(float(cell))
            except ValueError:
                if not values and number == 1:
                    continue  # a header
                raise ConfigError(f"--demand {path} line {number}: {cell!r} is not a "
                                  "number") from None
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"--demand {path}: {v!r} is not a number")
        out.append(float(v))
    return out
