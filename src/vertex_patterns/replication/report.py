"""The replication report: per-destination counts, as a table and as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from vertex_patterns.formatting import human_bytes


@dataclass
class DestinationReport:
    """What happened at one destination.

    Attributes:
        uri: The destination prefix.
        copied: Objects copied and verified.
        skipped: Objects already present with the same size and CRC32C.
        deleted: Objects deleted because the source no longer has them (`--delete`).
        failed: Objects that could not be copied or deleted.
        bytes_copied: Bytes of the copied objects.
        bytes_through_client: Bytes that passed through this process (0 for gs→gs).
        seconds: Wall time until this destination's last object was done.
        errors: One line per failed object (not part of the JSON report's fixed shape).
    """

    uri: str
    copied: int = 0
    skipped: int = 0
    deleted: int = 0
    failed: int = 0
    bytes_copied: int = 0
    bytes_through_client: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of one destination."""
        return {
            "uri": self.uri,
            "copied": self.copied,
            "skipped": self.skipped,
            "deleted": self.deleted,
            "failed": self.failed,
            "bytes_copied": self.bytes_copied,
            "bytes_through_client": self.bytes_through_client,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class ReplicationReport:
    """The outcome of one `replicate` call.

    Attributes:
        source: The source prefix.
        destinations: One report per destination, in the order given.
        dry_run: True when nothing was written (counts are what would have been done).
    """

    source: str
    destinations: list[DestinationReport]
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """True when every object copied and verified (and every delete succeeded)."""
        return all(d.failed == 0 for d in self.destinations)

    def to_dict(self) -> dict[str, Any]:
        """`{"source", "ok", "destinations": [...]}` as documented in the README."""
        return {
            "source": self.source,
            "ok": self.ok,
            "destinations": [d.to_dict() for d in self.destinations],
        }

    def to_json(self) -> str:
        """The report as indented JSON."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def metrics(self) -> dict[str, float]:
        """Flat metrics for `dsl.Metrics`: `d<i>_copied`, ..., keyed by destination index."""
        out: dict[str, float] = {"ok": 1.0 if self.ok else 0.0}
        for i, d in enumerate(self.destinations):
            for name in ("copied", "skipped", "deleted", "failed", "bytes_copied",
                         "bytes_through_client"):
                out[f"d{i}_{name}"] = float(getattr(d, name))
            out[f"d{i}_seconds"] = round(d.seconds, 3)
        return out

    def to_markdown(self) -> str:
        """The report as a Markdown table (for `dsl.Markdown` outputs)."""
        lines = [f"### Replication of `{self.source}`: {'OK' if self.ok else 'FAILED'}", "",
                 "| destination | copied | skipped | deleted | failed | bytes copied "
                 "| via client | seconds |",
                 "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for d in self.destinations:
            lines.append(f"| `{d.uri}` | {d.copied} | {d.skipped} | {d.deleted} | {d.failed} "
                         f"| {human_bytes(d.bytes_copied)} "
                         f"| {human_bytes(d.bytes_through_client)} | {d.seconds:.2f} |")
        errors = [e for d in self.destinations for e in d.errors]
        if errors:
            lines += ["", "Errors:", ""] + [f"- {e}" for e in errors]
        return "\n".join(lines) + "\n"

    def to_table(self) -> str:
        """A fixed-width table for terminals and logs."""
        headers = ["destination", "copied", "skipped", "deleted", "failed", "bytes copied",
                   "via client", "seconds", "MiB/s"]
        rows = []
        for d in self.destinations:
            rate = d.bytes_copied / d.seconds / 2**20 if d.seconds > 0 else 0.0
            rows.append([d.uri, str(d.copied), str(d.skipped), str(d.deleted), str(d.failed),
                         human_bytes(d.bytes_copied), human_bytes(d.bytes_through_client),
                         f"{d.seconds:.2f}", f"{rate:.1f}"])
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
                  for i, h in enumerate(headers)]
        lines = [f"source: {self.source}" + ("   (dry run: nothing written)" if self.dry_run
                                             else "")]
        lines.append("  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                               for i, (h, w) in enumerate(zip(headers, widths, strict=True))))
        for r in rows:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        lines.append("result: " + ("OK" if self.ok else "FAILED"))
        for d in self.destinations:
            lines.extend(f"  error: {e}" for e in d.errors)
        return "\n".join(lines) + "\n"
