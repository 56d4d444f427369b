"""Cost: the price catalog, calculators (compare, fleet plan, Spot run), the optimal
checkpoint interval, right-sizing, the run ledger and the cost report.

Plain Python (no kfp); the CLI is `vertex-patterns cost ...`, the KFP component
`cost_report`.
"""

from vertex_patterns.cost.catalog import MachinePrice, PriceCatalog
from vertex_patterns.cost.compare import HourlyRate, compare
from vertex_patterns.cost.fleet import FleetOptions, plan_fleet
from vertex_patterns.cost.goodput_model import (
    expected_lost_s,
    expected_wall_s,
    young_daly_interval,
)
from vertex_patterns.cost.interval import AutoCheckpointInterval, interval_from_costs
from vertex_patterns.cost.spot_run import SpotRunInputs, estimate_spot_run

__all__ = [
    "AutoCheckpointInterval",
    "FleetOptions",
    "HourlyRate",
    "MachinePrice",
    "PriceCatalog",
    "SpotRunInputs",
    "compare",
    "estimate_spot_run",
    "expected_lost_s",
    "expected_wall_s",
    "interval_from_costs",
    "plan_fleet",
    "young_daly_interval",
]
