"""KFP component `cost_report`.

No `from __future__ import annotations` here: KFP reads the parameter annotations at
decoration time and needs real types, not strings.
"""

from kfp import dsl

from vertex_patterns.pipelines.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def cost_report(
    history: dsl.Input[dsl.Artifact],
    run_dir: str,
    machine_type: str,
    report: dsl.Output[dsl.Markdown],
    plot: dsl.Output[dsl.HTML],
    metrics: dsl.Output[dsl.Metrics],
    accelerator: str = "",
    region: str = "",
    report_dir: str = "",
) -> None:
    """Prices a launched run: what it cost, what it lost to preemptions, what on demand would cost.

    Each attempt of the launch history is priced by its strategy (Spot or on demand) in its
    region from the packaged price catalog; the run directory's goodput ledger gives the time
    lost to preemptions and rewinds and the measured checkpoint and restart costs. The plot
    draws the expected cost of the run's work against the preemption rate, Spot against on
    demand, with this run marked; where the curves cross, Spot stops paying off.

    Args:
        history: The launch history JSON (`spot_train`'s `history` output).
        run_dir: The final region's run directory (holding `goodput.json`, `metrics/`).
        machine_type: The machine type the launch used, e.g. `g2-standard-8`.
        report: The ledger and the verdict, as Markdown.
        plot: An HTML page with the plot as inline SVG (no scripts).
        metrics: cost_usd, on_demand_cost_usd, savings_pct, lost_cost_usd, machine_hours,
            preemptions, preemptions_per_hour, break_even_preemptions_per_hour (-1: never).
        accelerator: `TYPE:COUNT` such as `T4:1` for N1 machines; empty otherwise.
        region: Region whose prices the plot uses; empty: the launch's final region.
        report_dir: Also write the metrics as `<report_dir>/cost.json`, where the run report
            (`publish_report`) picks them up.

    Raises:
        ValueError: Unknown machine or region, a price missing from the catalog, or a run
            directory without a goodput ledger.
    """
    import json

    from vertex_patterns.cost.report import build_cost_report

    with open(history.path) as f:
        result = build_cost_report(json.load(f), run_dir, machine_type=machine_type,
                                   accelerator=accelerator, region=region)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    with open(report.path, "w") as f:
        f.write(result.to_markdown())
    with open(plot.path, "w") as f:
        f.write(result.to_html())
    if report_dir:
        from vertex_patterns.storage import Storage

        Storage().write_bytes(f"{report_dir.rstrip('/')}/cost.json",
                              json.dumps(result.metrics()).encode())
