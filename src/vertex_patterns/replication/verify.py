"""Checks that replicas hold exactly the source's objects: same keys, sizes and CRC32C.

Read-only: nothing is copied or deleted. What `replicate` verifies object by object while it
copies, this re-checks afterwards from listings alone (GCS reports every object's CRC32C;
local files are read), for a recurring data-replication pipeline to prove its result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from vertex_patterns.storage import Storage


@dataclass
class ReplicaCheck:
    """One replica against the source.

    Attributes:
        uri: The replica prefix.
        checked: Source objects looked for.
        matching: Present with the same size and CRC32C.
        missing: Source keys the replica lacks.
        mismatched: Keys present with another size or CRC32C.
        extra: Replica keys the source does not have (reported, not a failure: `replicate`
            keeps them unless `--delete`).
    """

    uri: str
    checked: int = 0
    matching: int = 0
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every source object is present and identical."""
        return not self.missing and not self.mismatched


@dataclass
class ReplicaReport:
    """The source and each replica's check."""

    source: str
    objects: int
    replicas: list[ReplicaCheck]

    @property
    def ok(self) -> bool:
        """Every replica holds every source object unchanged."""
        return all(r.ok for r in self.replicas)

    def metrics(self) -> dict[str, float]:
        """``objects``, ``ok`` and per replica ``r<i>_missing``, ``r<i>_mismatched``,
        ``r<i>_extra``."""
        out: dict[str, float] = {"objects": self.objects, "ok": 1 if self.ok else 0}
        for i, r in enumerate(self.replicas):
            out[f"r{i}_missing"] = len(r.missing)
            out[f"r{i}_mismatched"] = len(r.mismatched)
            out[f"r{i}_extra"] = len(r.extra)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON shape: source, objects, ok, replicas with counts and the first 100 keys."""
        return {"source": self.source, "objects": self.objects, "ok": self.ok,
                "replicas": [{"uri": r.uri, "matching": r.matching, "ok": r.ok,
                              "missing": r.missing[:100], "mismatched": r.mismatched[:100],
                              "extra": len(r.extra)} for r in self.replicas]}

    def to_json(self) -> str:
        """`to_dict` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def _rows(self) -> list[tuple[str, ...]]:
        return [(r.uri, str(r.matching), str(len(r.missing)), str(len(r.mismatched)),
                 str(len(r.extra)), "OK" if r.ok else "DIFFERS") for r in self.replicas]

    def to_markdown(self) -> str:
        """A Markdown table, one row per replica, then the first differing keys."""
        lines = [f"Source `{self.source}`: {self.objects} objects", "",
                 "| replica | matching | missing | mismatched | extra | status |",
                 "|---|---:|---:|---:|---:|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in self._rows()]
        for r in self.replicas:
            lines += [f"- `{r.uri}`: missing `{k}`" for k in r.missing[:10]]
            lines += [f"- `{r.uri}`: differs `{k}`" for k in r.mismatched[:10]]
        return "\n".join(lines) + "\n"

    def to_table(self) -> str:
        """A plain-text table for the terminal."""
        header = ("replica", "matching", "missing", "mismatched", "extra", "status")
        rows = [header, *self._rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        out = [f"source {self.source}: {self.objects} objects"]
        out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                for row in rows]
        return "\n".join(out) + "\n"


def verify_replicas(source: str, replicas: list[str], *,
                    store: Storage | None = None) -> ReplicaReport:
    """Compares every replica's listing with the source's by key, size and CRC32C.

    Args:
        source: The source prefix (`gs://bucket/prefix` or a local directory).
        replicas: The replica prefixes.
        store: The storage facade (a default one when None).

    Raises:
        ConfigError: A URI is malformed.
        NotFoundError: A bucket does not exist.
    """
    store = store or Storage()
    wanted = {o.key: o for o in store.list(source, with_crc32c=True)}
    checks = []
    for uri in replicas:
        check = ReplicaCheck(uri=uri, checked=len(wanted))
        have = {o.key: o for o in store.list(uri, with_crc32c=True)}
        for key, obj in sorted(wanted.items()):
            got = have.get(key)
            if got is None:
                check.missing.append(key)
            elif got.size != obj.size or got.crc32c != obj.crc32c:
                check.mismatched.append(key)
            else:
                check.matching += 1
        check.extra = sorted(set(have) - set(wanted))
        checks.append(check)
    return ReplicaReport(source=source, objects=len(wanted), replicas=checks)
