"""The price catalog: hourly prices per region, discount plans, and user overrides.

The catalog ships as package data (`prices.json`); every entry carries the date it was read
(`as_of`) and where (`source`). A user file in the same format overrides whole entries: a
price by (region, resource), a discount plan by name, or the bare-rate defaults. A price that
is not in the catalog is an error naming the machine and the region, never a zero.

Resources are priced the way Compute Engine bills them: N1/N2/E2 by vCPU and GB of memory
(``n1-vcpu``, ``n1-memory-gb``), GPUs attached to N1 per GPU (``NVIDIA_TESLA_T4``), and
accelerator-optimized types (A2, A3, G2) per machine type with their GPUs included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from vertex_patterns.cost.shapes import MachineShape, machine_shape
from vertex_patterns.errors import ConfigError
from vertex_patterns.launcher.catalog import check_region

_ENTRY_KEYS = ("on_demand", "spot", "plan", "as_of", "source")
_PLAN_KEYS = ("cud_1y", "cud_3y", "sud_tiers", "as_of", "source")


@dataclass(frozen=True)
class DiscountPlan:
    """The discounts a kind of resource gets.

    Attributes:
        name: The plan's name in the catalog (``n1``, ``gpu``, ...).
        cud_1y: Fraction off on demand with a 1-year committed-use discount.
        cud_3y: Fraction off with a 3-year commitment.
        sud_tiers: Sustained use: the price multiplier for each successive quarter of the
            month a resource runs (N1: 1.0, 0.8, 0.6, 0.4, i.e. 30% off a full month); empty
            when the resource gets no sustained-use discount.
    """

    name: str
    cud_1y: float
    cud_3y: float
    sud_tiers: tuple[float, ...]


@dataclass(frozen=True)
class PriceLine:
    """One billed resource of a machine: hourly prices for the quantity used."""

    resource: str
    quantity: float
    on_demand: float
    spot: float
    plan: DiscountPlan
    as_of: str
    source: str


@dataclass(frozen=True)
class MachinePrice:
    """The hourly price of one machine configuration in one region, line by line."""

    shape: MachineShape
    region: str
    lines: tuple[PriceLine, ...]

    @property
    def on_demand(self) -> float:
        """USD per hour on demand."""
        return sum(line.on_demand for line in self.lines)

    @property
    def spot(self) -> float:
        """USD per hour on Spot."""
        return sum(line.spot for line in self.lines)


def _check_fraction(value: Any, what: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
        raise ConfigError(f"{what} must be a fraction in [0, 1), got {value!r}")
    return float(value)


def _check_price(value: Any, what: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{what} must be a non-negative number of USD per hour, "
                          f"got {value!r}")
    return float(value)


class PriceCatalog:
    """Prices and discount plans, from the package's catalog and an optional user file.

    Args:
        document: A parsed catalog document (see `prices.json`).
        origin: Where it came from, for error messages.
    """

    def __init__(self, document: dict[str, Any], origin: str = "the price catalog") -> None:
        self.origin = origin
        self.month_hours = float(document.get("month_hours", 720))
        self._prices: dict[str, dict[str, dict[str, Any]]] = {
            region: dict(entries) for region, entries in document.get("prices", {}).items()}
        self._plans: dict[str, dict[str, Any]] = dict(document.get("plans", {}))
        self.bare_rate: dict[str, Any] = dict(document.get("bare_rate", {}))

    @classmethod
    def load(cls, user_file: str | None = None) -> PriceCatalog:
        """The packaged catalog, with `user_file`'s entries replacing the packaged ones.

        Raises:
            ConfigError: The user file is missing, not JSON, or has an entry without a price,
                a plan, a date or a source.
        """
        text = resources.files("vertex_patterns.cost").joinpath("prices.json").read_text()
        catalog = cls(json.loads(text), "the packaged price catalog")
        if user_file:
            catalog.override(_read_user_file(user_file), user_file)
        return catalog

    def override(self, document: dict[str, Any], origin: str) -> None:
        """Replaces entries by the ones in `document` (checked first; nothing half-applied).

        Raises:
            ConfigError: A malformed entry; the message names it and `origin`.
        """
        prices = document.get("prices", {})
        plans = document.get("plans", {})
        if not isinstance(prices, dict) or not isinstance(plans, dict):
            raise ConfigError(f"{origin}: 'prices' and 'plans' must be JSON objects")
        for region, entries in prices.items():
            check_region(region)
            if not isinstance(entries, dict):
                raise ConfigError(f"{origin}: prices[{region!r}] must map resource -> entry")
            for resource, entry in entries.items():
                _check_entry(entry, f"{origin}: prices[{region!r}][{resource!r}]")
        for name, plan in plans.items():
            _check_plan(plan, f"{origin}: plans[{name!r}]")
        known_plans = set(self._plans) | set(plans)
        for region, entries in prices.items():
            for resource, entry in entries.items():
                if entry["plan"] not in known_plans:
                    raise ConfigError(f"{origin}: prices[{region!r}][{resource!r}] names plan "
                                      f"{entry['plan']!r}; known: {', '.join(sorted(known_plans))}")
        if "bare_rate" in document:
            bare = document["bare_rate"]
            if not isinstance(bare, dict) or not {"spot_discount", "plan", "as_of", "source"} \
                    <= set(bare):
                raise ConfigError(f"{origin}: bare_rate needs spot_discount, plan, as_of, "
                                  "source")
            _check_fraction(bare["spot_discount"], f"{origin}: bare_rate.spot_discount")
            self.bare_rate = dict(bare)
        for region, entries in prices.items():
            self._prices.setdefault(region, {}).update(entries)
        self._plans.update(plans)
        if "month_hours" in document:
            hours = document["month_hours"]
            if not isinstance(hours, (int, float)) or not 0 < hours <= 744:
                raise ConfigError(f"{origin}: month_hours must be in (0, 744]")
            self.month_hours = float(hours)

    def plan(self, name: str) -> DiscountPlan:
        """The discount plan `name`.

        Raises:
            ConfigError: No such plan in the catalog.
        """
        body = self._plans.get(name)
        if body is None:
            raise ConfigError(f"no discount plan {name!r} in {self.origin}")
        return DiscountPlan(name=name, cud_1y=float(body["cud_1y"]), cud_3y=float(body["cud_3y"]),
                            sud_tiers=tuple(float(t) for t in body.get("sud_tiers") or ()))

    def regions(self) -> list[str]:
        """Regions with at least one price."""
        return sorted(r for r, entries in self._prices.items() if entries)

    def _line(self, resource: str, quantity: float, region: str, machine: str) -> PriceLine:
        entry = self._prices.get(region, {}).get(resource)
        if entry is None:
            known = ", ".join(self.regions())
            raise ConfigError(
                f"no price for {machine} in {region} (missing {resource!r}; the catalog has "
                f"prices for {known}): add it to a --prices FILE")
        return PriceLine(resource=resource, quantity=quantity,
                         on_demand=quantity * float(entry["on_demand"]),
                         spot=quantity * float(entry["spot"]), plan=self.plan(entry["plan"]),
                         as_of=str(entry["as_of"]), source=str(entry["source"]))

    def price(self, machine_type: str, accelerator: str | None = None, count: int = 0, *,
              region: str) -> MachinePrice:
        """The hourly price of `machine_type` with `count` x `accelerator` in `region`.

        Raises:
            ConfigError: An unknown region or machine, an impossible pair, or a price missing
                from the catalog (the message names the machine and the region).
        """
        check_region(region)
        shape = machine_shape(machine_type, accelerator, count)
        return self.price_shape(shape, region)

    def price_shape(self, shape: MachineShape, region: str) -> MachinePrice:
        """`price` for a shape already built."""
        if shape.family == "accelerator_optimized":
            lines = [self._line(shape.machine_type, 1, region, shape.label)]
        else:
            lines = [self._line(f"{shape.family}-vcpu", shape.vcpus, region, shape.label),
                     self._line(f"{shape.family}-memory-gb", shape.memory_gb, region,
                                shape.label)]
            if shape.accelerator is not None:
                lines.append(self._line(shape.accelerator, shape.accelerator_count, region,
                                        shape.label))
        return MachinePrice(shape=shape, region=region, lines=tuple(lines))


def _check_entry(entry: Any, what: str) -> None:
    if not isinstance(entry, dict) or not set(_ENTRY_KEYS) <= set(entry):
        raise ConfigError(f"{what}: an entry needs {', '.join(_ENTRY_KEYS)} (every price is "
                          "dated and sourced)")
    _check_price(entry["on_demand"], f"{what}.on_demand")
    _check_price(entry["spot"], f"{what}.spot")


def _check_plan(plan: Any, what: str) -> None:
    if not isinstance(plan, dict) or not set(_PLAN_KEYS) <= set(plan):
        raise ConfigError(f"{what}: a plan needs {', '.join(_PLAN_KEYS)}")
    _check_fraction(plan["cud_1y"], f"{what}.cud_1y")
    _check_fraction(plan["cud_3y"], f"{what}.cud_3y")
    tiers = plan["sud_tiers"]
    if tiers is not None and (not isinstance(tiers, list) or not all(
            isinstance(t, (int, float)) and 0 < t <= 1 for t in tiers)):
        raise ConfigError(f"{what}.sud_tiers must be null or a list of multipliers in (0, 1]")


def _read_user_file(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"--prices {path}: no such file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--prices {path}: not a JSON price catalog ({exc})") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"--prices {path}: expected a JSON object")
    return document
