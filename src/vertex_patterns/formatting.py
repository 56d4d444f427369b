"""Human-readable numbers and fixed-width tables for reports and listings."""

from __future__ import annotations

import datetime as dt


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def iso_utc(unix_time: float) -> str:
    when = dt.datetime.fromtimestamp(unix_time, tz=dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_table(headers: list[str], rows: list[list[str]], left: set[int]) -> list[str]:
    """Fixed-width lines; columns in `left` are left-aligned, the others right-aligned."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(headers)] + [line(r) for r in rows]
