"""`report.html`: one self-contained page (no network, no external scripts or fonts).

The plots are inline SVG drawn by Python, so the page reads the same in a viewer that runs
no scripts (the Vertex AI console's HTML viewer). A small inline script, where scripts run,
measures each plot's marks with `getBBox()` and writes the result into the plot's
`data-drawn` attribute (``{"marks", "drawn", "markers", "width", "height"}``): a browser test
checks from it that every plot really drew.
"""

from __future__ import annotations

from html import escape

from vertex_patterns.report.plots import goodput_svg, loss_svg, replicas_svg, timeline_svg
from vertex_patterns.report.summary import RunSummary
from vertex_patterns.report.text import headline_rows, task_rows

# No network: the page may load nothing (CSP), only its own inline style and script.
_CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "img-src data:")

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#212121;
 margin:24px auto;max-width:1000px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid
 #e0e0e0;padding-bottom:4px}
.state{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600}
.SUCCEEDED{background:#2e7d32}.FAILED{background:#c62828}.UNKNOWN,.CANCELLED{background:#757575}
table{border-collapse:collapse;margin:6px 0}
td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
th{background:#fafafa} td.num{text-align:right;font-variant-numeric:tabular-nums}
.kv th{background:none;font-weight:600;white-space:nowrap}
code{font-size:12.5px;word-break:break-all}
.missing{color:#8d6e63} .error{color:#c62828;white-space:pre-wrap}
svg.plot{max-width:100%;height:auto;display:block}
svg .grid{stroke:#eee} svg .axis{stroke:#9e9e9e} svg text{font:12px system-ui,sans-serif;
 fill:#424242} svg .tick{fill:#757575;font-size:11px} svg .axis-title{fill:#616161}
svg .bar-label{fill:#fff;font-weight:600} svg .marker-label{font-weight:600}
svg .legend{font-size:12px}
"""

_SCRIPT = """
(function () {
  var plots = document.querySelectorAll('svg.plot');
  for (var i = 0; i < plots.length; i++) {
    var plot = plots[i], marks = plot.querySelectorAll('.mark');
    var x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity, drawn = 0;
    for (var j = 0; j < marks.length; j++) {
      var b = marks[j].getBBox();
      if (b.width > 0 || b.height > 0) {
        drawn++;
        x0 = Math.min(x0, b.x); y0 = Math.min(y0, b.y);
        x1 = Math.max(x1, b.x + b.width); y1 = Math.max(y1, b.y + b.height);
      }
    }
    plot.setAttribute('data-drawn', JSON.stringify({
      marks: marks.length, drawn: drawn,
      markers: plot.querySelectorAll('.marker').length,
      width: drawn ? x1 - x0 : 0, height: drawn ? y1 - y0 : 0}));
  }
})();
"""


def _table(headers: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{escape(c)}</td>' if i in numeric
                         else f"<td>{escape(c)}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(title: str, plot: str | None, absent: str, after: str = "") -> str:
    body = plot if plot is not None else f'<p class="missing">{escape(absent)}</p>'
    return f"<h2>{escape(title)}</h2>{body}{after}"


def _attempts_table(summary: RunSummary) -> str:
    rows = [[str(i), a.region, a.strategy, a.outcome,
             "" if a.start_s is None else f"{a.start_s:.1f}",
             "" if a.end_s is None else f"{a.end_s:.1f}", a.error or ""]
            for i, a in enumerate(summary.attempts, 1)]
    return _table(["#", "region", "strategy", "outcome", "start (s)", "end (s)", "error"],
                  rows, numeric={0, 4, 5}) if rows else ""


def _checkpoint_table(summary: RunSummary) -> str:
    rows = [[c.region + (" (final)" if c.primary else ""), c.uri,
             "-" if c.latest_step is None else str(c.latest_step), str(c.steps_behind),
             f"{c.seconds_behind:.1f}"] for c in summary.checkpoints]
    return _table(["region", "directory", "newest step", "steps behind", "seconds behind"],
                  rows, numeric={2, 3, 4}) if rows else ""


def render_html(summary: RunSummary) -> str:
    """The run report as one HTML page.

    Args:
        summary: What `collect_run_summary` read.

    Returns:
        The page: headline figures, the attempts timeline, the loss curve with preemption
        and resume markers, the goodput breakdown, the checkpoint replicas and their lag,
        the pipeline tasks and what could not be read.
    """
    state = summary.state
    headline = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>"
                       for k, v in headline_rows(summary))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Run report: {escape(state)}</title><style>{_STYLE}</style></head><body>",
        f'<h1>Run report <span class="state {escape(state)}">{escape(state)}</span></h1>',
        f'<p>History <code>{escape(summary.history_uri or "-")}</code> · run directories '
        f"<code>{escape(summary.run_dir_template)}</code></p>",
    ]
    if summary.error:
        parts.append(f'<p class="error">{escape(summary.error)}</p>')
    parts.append(f'<table class="kv">{headline}</table>')
    parts.append(_section("Attempts by region", timeline_svg(summary),
                          "No attempts: the launch history is missing or empty.",
                          _attempts_table(summary)))
    parts.append(_section("Training loss", loss_svg(summary),
                          "No loss records in any region's metrics/ directory."))
    parts.append(_section("Goodput", goodput_svg(summary),
                          "No goodput records in any region's run directory."))
    parts.append(_section("Checkpoint replicas", replicas_svg(summary),
                          "No checkpoint directory to list (no final region, or unreadable).",
                          _checkpoint_table(summary)))
    if summary.tasks:
        parts.append("<h2>Pipeline tasks</h2>")
        parts.append(_table(["task", "state", "start", "end", "seconds"],
                            task_rows(summary), numeric={4}))
    if summary.missing:
        items = "".join(f"<li>{escape(m)}</li>" for m in summary.missing)
        parts.append(f'<h2>Not available</h2><ul class="missing">{items}</ul>')
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"
