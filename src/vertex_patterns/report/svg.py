"""Small inline-SVG building blocks: scales, nice ticks, axes, escaped text.

The report's plots are drawn by Python as SVG markup, so they show wherever HTML shows,
including viewers that run no scripts. Every data mark carries class ``mark`` and every
preemption/resume marker class ``marker``: the page's script counts and measures them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape

PALETTE = ("#1f77b4", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#2ca02c")
"""Region colours, by position in the configured region list."""

OUTCOME_COLOURS = {"succeeded": "#2e7d32", "preempted": "#ef6c00", "stockout": "#9e9e9e",
                   "quota": "#bdbdbd", "cancelled": "#795548"}
"""Timeline bar colour per attempt outcome; any other outcome is a failure (red)."""
FAILURE_COLOUR = "#c62828"

PREEMPTED_COLOUR = "#d32f2f"
RESUMED_COLOUR = "#2e7d32"


def fmt(value: float) -> str:
    """A coordinate with at most one decimal: short markup, sub-pixel precision unneeded."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def text(x: float, y: float, content: str, *, anchor: str = "start", cls: str = "",
         extra: str = "") -> str:
    """An escaped `<text>` element."""
    attrs = f' class="{cls}"' if cls else ""
    return (f'<text x="{fmt(x)}" y="{fmt(y)}" text-anchor="{anchor}"{attrs}{extra}>'
            f"{escape(content)}</text>")


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 times a power of ten apart) from the last one at or below
    `lo` to the first one at or above `hi`: the first and last are the axis' ends."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9) * step
    last = math.ceil(hi / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(round((last - first) / step) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten (and 2x, 5x when few decades) inside [lo, hi], for a log axis."""
    ticks = []
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    factors = (1, 2, 5) if len(decades) <= 3 else (1,)
    for d in decades:
        for f in factors:
            value = f * 10.0 ** d
            if lo <= value <= hi:
                ticks.append(value)
    return ticks


def tick_label(value: float) -> str:
    """Short tick text: 1200, 0.05, 1e-04, 1.5k-free (plain numbers)."""
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.0e}"
    return f"{value:g}"


@dataclass(frozen=True)
class Frame:
    """A plot area inside an SVG of `width` x `height` with margins for axes and labels."""

    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float

    @property
    def x0(self) -> float:
        return self.left

    @property
    def x1(self) -> float:
        return self.width - self.right

    @property
    def y0(self) -> float:
        return self.top

    @property
    def y1(self) -> float:
        return self.height - self.bottom

    def x_scale(self, lo: float, hi: float) -> Callable[[float], float]:
        span = hi - lo if hi > lo else 1.0
        return lambda v: self.x0 + (v - lo) / span * (self.x1 - self.x0)

    def y_scale(self, lo: float, hi: float, *, log: bool = False) -> Callable[[float], float]:
        if log:
            llo, lhi = math.log10(lo), math.log10(hi)
            lspan = lhi - llo if lhi > llo else 1.0
            return lambda v: self.y1 - (math.log10(max(v, lo)) - llo) / lspan * (self.y1 - self.y0)
        span = hi - lo if hi > lo else 1.0
        return lambda v: self.y1 - (v - lo) / span * (self.y1 - self.y0)


def x_axis(frame: Frame, ticks: list[float], scale: Callable[[float], float],
           label: str) -> list[str]:
    """Grid lines, tick labels and the axis title along the bottom."""
    parts = [f'<line class="axis" x1="{fmt(frame.x0)}" y1="{fmt(frame.y1)}" '
             f'x2="{fmt(frame.x1)}" y2="{fmt(frame.y1)}"/>']
    for t in ticks:
        x = scale(t)
        parts.append(f'<line class="grid" x1="{fmt(x)}" y1="{fmt(frame.y0)}" x2="{fmt(x)}" '
                     f'y2="{fmt(frame.y1)}"/>')
        parts.append(text(x, frame.y1 + 16, tick_label(t), anchor="middle", cls="tick"))
    parts.append(text((frame.x0 + frame.x1) / 2, frame.height - 6, label, anchor="middle",
                      cls="axis-title"))
    return parts


def y_axis(frame: Frame, ticks: list[float], scale: Callable[[float], float],
           label: str) -> list[str]:
    """Grid lines, tick labels and the axis title along the left side."""
    parts = [f'<line class="axis" x1="{fmt(frame.x0)}" y1="{fmt(frame.y0)}" '
             f'x2="{fmt(frame.x0)}" y2="{fmt(frame.y1)}"/>']
    for t in ticks:
        y = scale(t)
        parts.append(f'<line class="grid" x1="{fmt(frame.x0)}" y1="{fmt(y)}" '
                     f'x2="{fmt(frame.x1)}" y2="{fmt(y)}"/>')
        parts.append(text(frame.x0 - 6, y + 4, tick_label(t), anchor="end", cls="tick"))
    parts.append(text(14, (frame.y0 + frame.y1) / 2, label, anchor="middle", cls="axis-title",
                      extra=f' transform="rotate(-90 14 {fmt((frame.y0 + frame.y1) / 2)})"'))
    return parts


def svg(name: str, frame: Frame, parts: list[str], *, marks: int, markers: int,
        title: str) -> str:
    """The `<svg class="plot">` element; `data-marks`/`data-markers` say what it should draw."""
    return (f'<svg class="plot" data-plot="{escape(name)}" data-marks="{marks}" '
            f'data-markers="{markers}" xmlns="http://www.w3.org/2000/svg" '
            f'viewBox="0 0 {fmt(frame.width)} {fmt(frame.height)}" width="{fmt(frame.width)}" '
            f'height="{fmt(frame.height)}" role="img" aria-label="{escape(title)}">'
            f"<title>{escape(title)}</title>" + "".join(parts) + "</svg>")
