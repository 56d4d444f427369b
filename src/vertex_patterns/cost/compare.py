"""`cost compare`: what a monthly usage costs on demand, on Spot, with CUDs and with SUDs.

Usage is machine-hours per month (720 h = one machine all month). The rules:

- on demand and Spot: hours x hourly price.
- committed use: a commitment is billed for every hour of the month whether used or not, and
  covers whole machines, so usage is rounded up to whole machine-months and billed at the
  discounted rate (720 h at $24.80/h: $11,249.28 for 1 year, $8,035.20 for 3 years).
- sustained use: each machine-month is split into quarters billed at the plan's multipliers
  (N1: 100%, 80%, 60%, 40%); full machines first, the remainder as one machine running part
  of the month. Resources without sustained-use discounts (A2, A3, G2) pay on demand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vertex_patterns.cost.catalog import DiscountPlan, MachinePrice, PriceCatalog, PriceLine
from vertex_patterns.errors import ConfigError
from vertex_patterns.formatting import format_table

OPTIONS = ("on_demand", "spot", "cud_1y", "cud_3y", "sud")
"""The keys of `cost compare --json`, monthly USD each."""


@dataclass(frozen=True)
class HourlyRate:
    """What one machine costs per hour, as billed lines (one line for a bare rate)."""

    label: str
    lines: tuple[PriceLine, ...]

    @property
    def on_demand(self) -> float:
        """USD per hour on demand."""
        return sum(line.on_demand for line in self.lines)

    @property
    def spot(self) -> float:
        """USD per hour on Spot."""
        return sum(line.spot for line in self.lines)

    @classmethod
    def of_machine(cls, price: MachinePrice) -> HourlyRate:
        """The rate of a priced machine."""
        return cls(label=f"{price.shape.label} in {price.region}", lines=price.lines)

    @classmethod
    def bare(cls, catalog: PriceCatalog, on_demand: float,
             spot: float | None = None) -> HourlyRate:
        """A bare on-demand rate; Spot defaults to the catalog's bare-rate Spot discount and
        the discounts to its bare-rate plan (N1's).

        Raises:
            ConfigError: A negative or non-finite rate.
        """
        if not math.isfinite(on_demand) or on_demand < 0:
            raise ConfigError(f"--on-demand-hourly must be >= 0 USD, got {on_demand}")
        if spot is not None and (not math.isfinite(spot) or spot < 0):
            raise ConfigError(f"--spot-hourly must be >= 0 USD, got {spot}")
        bare = catalog.bare_rate
        plan = catalog.plan(str(bare.get("plan", "n1")))
        spot_rate = on_demand * (1 - float(bare.get("spot_discount", 0.6))) if spot is None \
            else spot
        line = PriceLine(resource="bare rate", quantity=1, on_demand=on_demand,
                         spot=spot_rate, plan=plan, as_of=str(bare.get("as_of", "")),
                         source=str(bare.get("source", "")))
        return cls(label=f"${on_demand:,.2f}/h", lines=(line,))


def sud_multiplier(fraction: float, tiers: tuple[float, ...]) -> float:
    """Average price multiplier of one resource running `fraction` (0..1) of a month."""
    if not tiers:
        return 1.0
    if fraction <= 0:
        return 1.0
    width = 1.0 / len(tiers)
    billed = sum(min(max(fraction - i * width, 0.0), width) * m for i, m in enumerate(tiers))
    return billed / fraction


def monthly_costs(rate: HourlyRate, hours: float, month_hours: float) -> dict[str, float]:
    """Monthly USD of `hours` machine-hours under each option (keys: `OPTIONS`).

    Raises:
        ConfigError: Negative or non-finite hours, or a non-positive month.
    """
    if not math.isfinite(hours) or hours < 0:
        raise ConfigError(f"--hours-per-month must be >= 0, got {hours}")
    if not math.isfinite(month_hours) or month_hours <= 0:
        raise ConfigError(f"--month-hours must be > 0, got {month_hours}")
    machine_months = math.ceil(hours / month_hours - 1e-9) if hours > 0 else 0
    full, rest = divmod(hours, month_hours)

    def committed(plan: DiscountPlan, years: int) -> float:
        return 1 - (plan.cud_1y if years == 1 else plan.cud_3y)

    costs = {key: 0.0 for key in OPTIONS}
    for line in rate.lines:
        costs["on_demand"] += hours * line.on_demand
        costs["spot"] += hours * line.spot
        costs["cud_1y"] += machine_months * month_hours * line.on_demand * committed(line.plan, 1)
        costs["cud_3y"] += machine_months * month_hours * line.on_demand * committed(line.plan, 3)
        tiers = line.plan.sud_tiers
        costs["sud"] += line.on_demand * (
            full * month_hours * sud_multiplier(1.0, tiers)
            + rest * sud_multiplier(rest / month_hours, tiers))
    return costs


@dataclass(frozen=True)
class Comparison:
    """`cost compare`'s answer."""

    rate: HourlyRate
    hours_per_month: float
    month_hours: float
    monthly: dict[str, float]

    def to_dict(self) -> dict[str, float]:
        """`--json`: monthly USD per option, rounded to cents."""
        return {key: round(self.monthly[key], 2) for key in OPTIONS}

    def to_table(self) -> str:
        """One row per option with monthly USD and savings against on demand."""
        base = self.monthly["on_demand"]
        names = {"on_demand": "on demand", "spot": "Spot", "cud_1y": "1-year CUD",
                 "cud_3y": "3-year CUD", "sud": "sustained use"}
        rows = [[names[k], f"${self.monthly[k]:,.2f}",
                 f"{100 * (1 - self.monthly[k] / base):.1f}%" if base > 0 else "-"]
                for k in OPTIONS]
        head = (f"{self.rate.label}: {self.hours_per_month:g} machine-hours/month "
                f"(month = {self.month_hours:g} h), on demand ${self.rate.on_demand:,.4f}/h, "
                f"Spot ${self.rate.spot:,.4f}/h")
        sources = sorted({f"{line.source} ({line.as_of})" for line in self.rate.lines
                          if line.source})
        lines = [head, *format_table(["option", "monthly USD", "saving"], rows, left={0})]
        lines += [f"prices: {s}" for s in sources]
        return "\n".join(lines) + "\n"


def compare(rate: HourlyRate, hours_per_month: float,
            month_hours: float = 720.0) -> Comparison:
    """On demand vs Spot vs CUD 1y/3y vs SUD for `hours_per_month` machine-hours.

    Raises:
        ConfigError: Negative hours or a non-positive month.
    """
    return Comparison(rate=rate, hours_per_month=hours_per_month, month_hours=month_hours,
                      monthly=monthly_costs(rate, hours_per_month, month_hours))
