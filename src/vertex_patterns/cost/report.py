"""The cost report of a launched run: Markdown, an HTML page with an inline SVG plot, metrics.

What the `cost_report` KFP component writes. The plot shows the expected cost of the run's
work against the preemption rate, on Spot (rising) and on demand (flat), with this run's
observed rate and actual cost marked: the gap between the curves at the run's rate is what
Spot saved, and the crossing is the rate at which Spot stops paying off.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

from vertex_patterns.cost.catalog import PriceCatalog
from vertex_patterns.cost.compare import HourlyRate
from vertex_patterns.cost.ledger import RunLedger, ledger_from_history
from vertex_patterns.cost.spot_run import SpotRunInputs, estimate_spot_run, spot_wall_hours
from vertex_patterns.launcher.spec import parse_accelerator
from vertex_patterns.storage import Storage

DEFAULT_RESTART_S = 120.0
"""Restart cost assumed when the run had no restart to measure."""
DEFAULT_INTERVAL_S = 300.0
"""Checkpoint interval assumed when the run saved no periodic checkpoint (the trainer's)."""


@dataclass(frozen=True)
class CostReport:
    """Everything the component writes."""

    ledger: RunLedger
    rate: HourlyRate
    inputs: SpotRunInputs
    observed_per_hour: float
    break_even_per_hour: float
    curve: tuple[tuple[float, float, float], ...]
    """(preemptions per hour, expected Spot USD, expected on-demand USD)."""

    def metrics(self) -> dict[str, float]:
        """Numbers for `dsl.Metrics` (break-even -1 when Spot pays off at any rate)."""
        led = self.ledger
        saving = 100 * (1 - led.cost / led.on_demand_cost) if led.on_demand_cost > 0 else 0.0
        return {"cost_usd": round(led.cost, 4), "on_demand_cost_usd": round(led.on_demand_cost, 4),
                "savings_pct": round(saving, 2), "lost_cost_usd": round(led.lost_cost, 4),
                "machine_hours": round(led.hours, 6), "preemptions": led.preemptions,
                "preemptions_per_hour": round(self.observed_per_hour, 6),
                "break_even_preemptions_per_hour": -1.0 if math.isinf(self.break_even_per_hour)
                else round(self.break_even_per_hour, 6)}

    def to_markdown(self) -> str:
        """The report as Markdown (ledger table, model inputs, verdict)."""
        led = self.ledger
        i = self.inputs
        rows = "\n".join(f"| {s} | {r} | {h:.4f} | ${c:,.4f} |"
                         for (s, r), (h, c) in sorted(led.by_strategy_region().items()))
        be = self.break_even_per_hour
        verdict = ("Spot pays off at any preemption rate" if math.isinf(be) else
                   f"Spot stops paying off at **{be:.3g} preemptions/h**")
        return (f"# Cost of the run\n\n{led.machine}\n\n"
                f"| strategy | region | machine-hours | USD |\n|---|---|---:|---:|\n{rows}\n\n"
                f"- actual cost: **${led.cost:,.4f}** ({led.preemptions} preemption(s), "
                f"{self.observed_per_hour:.3g}/h)\n"
                f"- the same machine-hours on demand: ${led.on_demand_cost:,.4f}\n"
                f"- lost to preemptions and rewinds: {led.lost_hours * 3600:.1f} s, "
                f"${led.lost_cost:,.4f}\n"
                f"- model: {i.work_hours * 3600:.1f} s of work, checkpoint "
                f"{i.checkpoint_s:.3g} s every {i.interval_s:.3g} s, restart "
                f"{i.restart_s:.3g} s\n- {verdict}\n")

    def to_html(self) -> str:
        """A self-contained page: the plot as inline SVG and the Markdown's numbers."""
        body = html.escape(self.to_markdown())
        return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Cost of the run"
                "</title></head><body>" + self.svg() + f"<pre>{body}</pre></body></html>\n")

    def svg(self, width: int = 640, height: int = 360) -> str:
        """Expected cost against preemption rate, Spot vs on demand, this run marked."""
        left, right, top, bottom = 70, 20, 30, 50
        xs = [p[0] for p in self.curve]
        ys = [v for p in self.curve for v in p[1:] if math.isfinite(v)]
        x_max = max(xs) or 1.0
        y_max = max([*ys, self.ledger.cost, 1e-9]) * 1.1

        def px(x: float) -> float:
            return left + (width - left - right) * x / x_max

        def py(y: float) -> float:
            return height - bottom - (height - top - bottom) * min(y, y_max) / y_max

        def line(points: list[tuple[float, float]], colour: str) -> str:
            path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points if math.isfinite(y))
            return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>'

        spot = line([(p[0], p[1]) for p in self.curve], "#d62728")
        od = line([(p[0], p[2]) for p in self.curve], "#1f77b4")
        mx, my = px(min(self.observed_per_hour, x_max)), py(self.ledger.cost)
        be = self.break_even_per_hour
        crossing = "" if not (math.isfinite(be) and 0 < be <= x_max) else (
            f'<line x1="{px(be):.1f}" y1="{top}" x2="{px(be):.1f}" y2="{height - bottom}" '
            'stroke="gray" stroke-dasharray="4 3"/>'
            f'<text x="{px(be) + 4:.1f}" y="{height - bottom - 6}" font-size="11" '
            f'fill="gray">break-even {be:.3g}/h</text>')
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'role="img" aria-label="expected cost against preemption rate">',
            f'<rect width="{width}" height="{height}" fill="white"/>',
            f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" '
            f'y2="{height - bottom}" stroke="black"/>',
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>',
            spot, od, crossing,
            f'<circle cx="{mx:.1f}" cy="{my:.1f}" r="5" fill="black"><title>this run: '
            f'{self.observed_per_hour:.3g}/h, ${self.ledger.cost:,.4f}</title></circle>',
            f'<text x="{mx + 8:.1f}" y="{my - 8:.1f}" font-size="12">this run</text>',
            f'<text x="{(left + width - right) / 2:.0f}" y="{height - 12}" font-size="12" '
            'text-anchor="middle">preemptions per hour</text>',
            f'<text x="14" y="{(top + height - bottom) / 2:.0f}" font-size="12" '
            f'transform="rotate(-90 14 {(top + height - bottom) / 2:.0f})" '
            'text-anchor="middle">expected USD</text>',
            f'<text x="{left}" y="{height - bottom + 16}" font-size="11">0</text>',
            f'<text x="{width - right}" y="{height - bottom + 16}" font-size="11" '
            f'text-anchor="end">{x_max:.3g}</text>',
            f'<text x="{left - 4}" y="{top + 4}" font-size="11" text-anchor="end">'
            f'{y_max:.3g}</text>',
            f'<text x="{left + 10}" y="{top + 12}" font-size="12" fill="#d62728">Spot</text>',
            f'<text x="{left + 60}" y="{top + 12}" font-size="12" fill="#1f77b4">on demand'
            '</text>', "</svg>"]
        return "".join(parts)


def build_cost_report(history: dict[str, Any], run_dir: str, *, machine_type: str,
                      accelerator: str = "", region: str = "", prices_file: str | None = None,
                      storage: Storage | None = None, points: int = 60) -> CostReport:
    """The report of a launch (`history` as `LaunchHistory.to_dict()`) and its final run dir.

    Args:
        history: The launch history document.
        run_dir: The final region's run directory (goodput ledger, metrics).
        machine_type: The machine the launch used.
        accelerator: ``TYPE:COUNT`` ("" for none).
        region: Region whose prices the plot uses ("": the history's final region).
        prices_file: A user price file overriding the catalog.
        storage: Storage facade.
        points: Points on each curve.

    Raises:
        ConfigError: Unknown machine or region, a missing price, a run dir without a ledger.
    """
    catalog = PriceCatalog.load(prices_file)
    kind, count = parse_accelerator(accelerator) if accelerator else (None, 0)
    led = ledger_from_history(history, catalog, machine_type=machine_type, accelerator=kind,
                              count=count, run_dir=run_dir, storage=storage)
    final = (history.get("final") or {}).get("region")
    ran = [line.region for line in led.lines if line.hours > 0]
    where = region or final or (ran[-1] if ran else "us-central1")
    rate = HourlyRate.of_machine(catalog.price(machine_type, kind, count, region=where))
    obs = led.observations
    assert obs is not None  # ledger_from_history read run_dir
    work_s = obs.summary.seconds["productive_s"] or led.hours * 3600
    inputs = SpotRunInputs(
        work_hours=work_s / 3600,
        preemptions_per_hour=led.preemptions / led.hours if led.hours > 0 else 0.0,
        checkpoint_s=obs.checkpoint_s or 0.0,
        restart_s=obs.restart_s if obs.restart_s is not None else DEFAULT_RESTART_S,
        interval_s=obs.interval_s or DEFAULT_INTERVAL_S)
    estimate = estimate_spot_run(inputs, rate)
    be = estimate.break_even_per_hour
    x_max = max(2 * inputs.preemptions_per_hour, 1.5 * be if math.isfinite(be) and be > 0
                else 0.0, 1.0)
    curve = []
    for k in range(points + 1):
        x = x_max * k / points
        wall = spot_wall_hours(inputs, x)
        curve.append((x, wall * rate.spot, estimate.on_demand_wall_h * rate.on_demand))
    return CostReport(ledger=led, rate=rate, inputs=inputs,
                      observed_per_hour=inputs.preemptions_per_hour, break_even_per_hour=be,
                      curve=tuple(curve))
