"""The report in all its forms at once, and where it is saved (`report.html`, `summary.json`).

Used by the `publish_report` component (the exit task of the `spot_training` pipeline) and
by the `run` command.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vertex_patterns.report.collect import collect_run_summary
from vertex_patterns.report.html import render_html
from vertex_patterns.report.summary import RunSummary
from vertex_patterns.report.text import render_markdown, render_table
from vertex_patterns.storage import Storage

HTML_NAME = "report.html"
SUMMARY_NAME = "summary.json"


@dataclass(frozen=True)
class PublishedReport:
    """The summary and its renderings."""

    summary: RunSummary
    html: str
    """`report.html`."""
    markdown: str
    """For a KFP `dsl.Markdown` output."""
    table: str
    """For a terminal."""

    @property
    def summary_json(self) -> str:
        """`summary.json`."""
        return json.dumps(self.summary.to_dict(), indent=2) + "\n"

    def save(self, report_uri: str, storage: Storage | None = None) -> list[str]:
        """Writes `report.html` and `summary.json` under `report_uri` (gs:// or local).

        Returns:
            The URIs written.

        Raises:
            ConfigError: A malformed URI.
            StorageError: A write failed (e.g. the bucket does not exist).
        """
        store = storage or Storage()
        base = report_uri.rstrip("/")
        written = []
        for name, body in ((SUMMARY_NAME, self.summary_json), (HTML_NAME, self.html)):
            store.write_bytes(f"{base}/{name}", body.encode())
            written.append(f"{base}/{name}")
        return written


def publish_report(
    history_uri: str,
    run_dir_template: str,
    regions: Sequence[str],
    *,
    state: str | None = None,
    error: str | None = None,
    tasks: Sequence[Mapping[str, Any]] | None = None,
    job_seconds: float | None = None,
    storage: Storage | None = None,
) -> PublishedReport:
    """Reads the run and renders the report (see `collect_run_summary` for the arguments).

    Never fails for a run that stopped early: what could not be read is listed in the
    report.

    Raises:
        ConfigError: No regions, or a template that fills in anything but ``{region}``.
    """
    summary = collect_run_summary(history_uri, run_dir_template, regions, tasks=tasks,
                                  state=state, error=error, job_seconds=job_seconds,
                                  storage=storage)
    return PublishedReport(summary=summary, html=render_html(summary),
                           markdown=render_markdown(summary), table=render_table(summary))
