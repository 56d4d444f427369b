"""The record of a launch: one row per attempt and the final outcome, as a table and as JSON.

JSON (`--history FILE`)::

    {"attempts": [{"region", "strategy", "job", "outcome", "started", "ended", "error"}],
     "final": {"outcome", "region"}}

Times are ISO 8601 UTC; `job` is the CustomJob resource name ("" when create was refused);
`error` is null for a success.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from vertex_patterns.formatting import format_table


def iso(ts: float | None) -> str:
    """Unix seconds as ISO 8601 UTC (``2026-11-28T10:00:00Z``); "" for None."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class AttemptRecord:
    """One job (or refused create) of a launch."""

    region: str
    strategy: str
    job: str
    outcome: str
    started: str
    ended: str
    error: str | None


@dataclass
class LaunchHistory:
    """Every attempt and how the launch ended."""

    attempts: list[AttemptRecord] = field(default_factory=list)
    final_outcome: str | None = None
    final_region: str | None = None
    failure: str | None = None
    """Why the launch failed (None on success)."""

    @property
    def succeeded(self) -> bool:
        """The launch ended with a succeeded job."""
        return self.final_outcome == "succeeded"

    def to_dict(self) -> dict[str, Any]:
        """The `--history` JSON document."""
        return {"attempts": [asdict(a) for a in self.attempts],
                "final": {"outcome": self.final_outcome, "region": self.final_region}}

    def to_json(self) -> str:
        """`to_dict` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def count(self, outcome: str) -> int:
        """Attempts that ended with `outcome`."""
        return sum(1 for a in self.attempts if a.outcome == outcome)

    def regions_used(self) -> list[str]:
        """Regions where a job was created, in first-use order."""
        seen: list[str] = []
        for a in self.attempts:
            if a.job and a.region not in seen:
                seen.append(a.region)
        return seen

    def to_table(self) -> str:
        """A fixed-width table of the attempts and a final line."""
        headers = ["#", "region", "strategy", "outcome", "started", "ended", "job / error"]
        rows = []
        for i, a in enumerate(self.attempts, 1):
            detail = a.job.rsplit("/", 1)[-1] if a.job else ""
            if a.error:
                detail = f"{detail} {a.error}".strip()
            rows.append([str(i), a.region, a.strategy, a.outcome, a.started[11:19],
                         a.ended[11:19], detail[:100]])
        lines = format_table(headers, rows, left={1, 2, 3, 6})
        lines.append(f"final: {self.final_outcome or 'unknown'}"
                     + (f" in {self.final_region}" if self.final_region else ""))
        return "\n".join(lines) + "\n"
