"""The run report: what a person opens after a `spot_training` pipeline run.

    summary = collect_run_summary("gs://b/history.json", "gs://b-{region}/runs/x",
                                  ["us-central1", "us-east1"])
    open("summary.json", "w").write(json.dumps(summary.to_dict()))
    open("report.html", "w").write(render_html(summary))
    print(render_table(summary))

Plain Python (no kfp): the `publish_report` component and the `run` command call it.
"""

from __future__ import annotations

from vertex_patterns.report.collect import collect_run_summary
from vertex_patterns.report.html import render_html
from vertex_patterns.report.publish import PublishedReport, publish_report
from vertex_patterns.report.summary import RunSummary
from vertex_patterns.report.text import render_markdown, render_table

__all__ = [
    "PublishedReport",
    "RunSummary",
    "collect_run_summary",
    "publish_report",
    "render_html",
    "render_markdown",
    "render_table",
]
