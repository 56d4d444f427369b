"""The run report as text: Markdown for the Vertex AI console, a table for the terminal.

Both carry the same figures as the HTML page (without the plots): steps, preemptions
survived, regions used, goodput, checkpoint replicas and their lag, the final model URI,
per-task durations and the orchestration overhead's share of the run.
"""

from __future__ import annotations

from vertex_patterns.formatting import format_table
from vertex_patterns.report.summary import RunSummary


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


def headline_rows(summary: RunSummary) -> list[tuple[str, str]]:
    """(label, value) pairs of the figures a reader looks at first."""
    survived = summary.preemptions if summary.state == "SUCCEEDED" else 0
    preemptions = f"{summary.preemptions} ({survived} survived)"
    if summary.stockouts:
        preemptions += f"; {summary.stockouts} stockout(s)"
    goodput = "-"
    if summary.goodput is not None:
        g = summary.goodput
        goodput = (f"{g.goodput_pct:.1f}% of {g.wall_s:.1f} s wall time "
                   f"({g.goodput_after_startup_pct:.1f}% after startup and restarts); "
                   f"{g.steps_lost} step(s) lost")
    rows = [("state", summary.state), ("steps", _or_dash(summary.steps)),
            ("preemptions", preemptions),
            ("regions used", " → ".join(summary.regions_used) or "-"),
            ("goodput", goodput)]
    for copy in summary.replicas:
        lag = "nothing replicated" if copy.latest_step is None else (
            f"step {copy.latest_step}, {copy.steps_behind} step(s) / "
            f"{copy.seconds_behind:.1f} s behind")
        rows.append((f"replica {copy.region}", lag))
    rows.append(("final checkpoint", _or_dash(summary.checkpoint_uri)))
    rows.append(("final model", _or_dash(summary.model_uri)))
    if summary.final_eval:
        rows.append(("held-out", ", ".join(f"{k} {v:.4g}"
                                           for k, v in sorted(summary.final_eval.items()))))
    if summary.cost:
        c = summary.cost
        rows.append(("cost", f"${c.get('cost_usd', 0):,.4f} (on demand "
                     f"${c.get('on_demand_cost_usd', 0):,.4f}, {c.get('savings_pct', 0):.1f}% "
                     f"saved); ${c.get('lost_cost_usd', 0):,.4f} lost to preemptions"))
    if summary.overhead is not None:
        o = summary.overhead
        rows.append(("orchestration overhead", f"{o.overhead_s:.1f} s of {o.job_s:.1f} s "
                     f"({o.overhead_pct:.1f}%)"))
    return rows


def task_rows(summary: RunSummary) -> list[list[str]]:
    """One row per pipeline task: name, state, start, end, seconds."""
    return [[t.name, t.state, t.start_time, t.end_time,
             "-" if t.seconds is None else f"{t.seconds:.1f}"] for t in summary.tasks]


def _md_cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(summary: RunSummary) -> str:
    """The report as Markdown (for a KFP `dsl.Markdown` output).

    Args:
        summary: What `collect_run_summary` read.

    Returns:
        Headline figures, attempts, goodput categories, checkpoint copies, tasks and what
        could not be read, as Markdown tables.
    """
    lines = [f"# Run report: {summary.state}", ""]
    if summary.error:
        lines += [f"**Error:** {_md_cell(summary.error)}", ""]
    lines += _md_table(["", ""], [[k, v] for k, v in headline_rows(summary)])
    if summary.attempts:
        lines += ["", "## Attempts", ""]
        lines += _md_table(["#", "region", "strategy", "outcome", "started", "ended", "error"],
                           [[str(i), a.region, a.strategy, a.outcome, a.started, a.ended,
                             a.error or ""] for i, a in enumerate(summary.attempts, 1)])
    if summary.markers:
        lines += ["", "## Preemptions and resumes", ""]
        lines += _md_table(["step", "event", "region", "trainer attempt"],
                           [[str(m.step), m.kind, m.region, m.attempt]
                            for m in summary.markers])
    if summary.goodput is not None:
        lines += ["", "## Goodput", ""]
        lines += _md_table(["category", "seconds", "% of wall"],
                           [[c.label, f"{c.seconds:.1f}", f"{c.pct:.1f}"]
                            for c in summary.goodput.categories])
    if summary.checkpoints:
        lines += ["", "## Checkpoint replicas", ""]
        lines += _md_table(["region", "directory", "newest step", "steps behind",
                            "seconds behind"],
                           [[c.region + (" (final)" if c.primary else ""), c.uri,
                             _or_dash(c.latest_step), str(c.steps_behind),
                             f"{c.seconds_behind:.1f}"] for c in summary.checkpoints])
    if summary.tasks:
        lines += ["", "## Pipeline tasks", ""]
        lines += _md_table(["task", "state", "start", "end", "seconds"], task_rows(summary))
    if summary.missing:
        lines += ["", "## Not available", ""] + [f"- {_md_cell(m)}" for m in summary.missing]
    return "\n".join(lines) + "\n"


def render_table(summary: RunSummary) -> str:
    """The report as fixed-width text for a terminal.

    Args:
        summary: What `collect_run_summary` read.

    Returns:
        The headline figures, then the per-task durations and what could not be read.
    """
    rows = headline_rows(summary)
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    if summary.tasks:
        lines += ["", *format_table(["task", "state", "seconds"],
                                    [[t.name, t.state, "-" if t.seconds is None
                                      else f"{t.seconds:.1f}"] for t in summary.tasks],
                                    left={0, 1})]
    if summary.missing:
        lines += ["", "not available:"] + [f"  {m}" for m in summary.missing]
    return "\n".join(lines) + "\n"
