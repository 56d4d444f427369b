"""The report's four plots as inline SVG: attempts timeline, loss curve, goodput, replicas.

Each function returns the `<svg>` markup, or None when the summary has nothing to draw (the
page then says what is missing). Marks (bars, lines, segments) have class ``mark``;
preemption and resume markers have class ``marker``.
"""

from __future__ import annotations

from html import escape

from vertex_patterns.report.summary import RunSummary
from vertex_patterns.report.svg import (
    FAILURE_COLOUR,
    OUTCOME_COLOURS,
    PALETTE,
    PREEMPTED_COLOUR,
    RESUMED_COLOUR,
    Frame,
    fmt,
    log_ticks,
    nice_ticks,
    svg,
    text,
    x_axis,
    y_axis,
)

WIDTH = 960
MIN_BAR_PX = 3.0
"""Attempts that ended at once (a stockout after a short pending phase) stay visible."""


def region_colour(summary: RunSummary, region: str) -> str:
    """The colour of `region`: by its place among the configured regions."""
    regions = summary.regions
    index = regions.index(region) if region in regions else len(regions)
    return PALETTE[index % len(PALETTE)]


def timeline_svg(summary: RunSummary) -> str | None:
    """Attempts as bars on one row per region, coloured by outcome; preemptions marked ✕."""
    timed = [a for a in summary.attempts if a.start_s is not None]
    if not timed:
        return None
    rows = list(summary.regions) + sorted({a.region for a in timed} - set(summary.regions))
    row_h = 34
    frame = Frame(WIDTH, 60 + row_h * len(rows), left=150, right=30, top=14, bottom=46)
    end = max((a.end_s if a.end_s is not None else a.start_s or 0.0) for a in timed)
    ticks = nice_ticks(0.0, max(end, 1e-3))
    x = frame.x_scale(0.0, ticks[-1])
    parts = x_axis(frame, ticks, x, "seconds since the first attempt")
    for i, region in enumerate(rows):
        y = frame.y0 + i * row_h
        parts.append(text(frame.x0 - 8, y + row_h / 2 + 4, region, anchor="end", cls="label"))
    markers = 0
    for n, a in enumerate(timed, 1):
        y = frame.y0 + rows.index(a.region) * row_h + 6
        start = x(a.start_s or 0.0)
        stop = x(a.end_s if a.end_s is not None else end)
        width = max(stop - start, MIN_BAR_PX)
        colour = OUTCOME_COLOURS.get(a.outcome, FAILURE_COLOUR)
        tip = f"#{n} {a.region} {a.strategy}: {a.outcome}" + (f" ({a.error})" if a.error else "")
        parts.append(f'<rect class="mark" x="{fmt(start)}" y="{fmt(y)}" width="{fmt(width)}" '
                     f'height="{row_h - 12}" rx="3" fill="{colour}">'
                     f"<title>{escape(tip)}</title></rect>")
        label = f"#{n} {a.outcome}"
        if width > 9 * len(label):
            parts.append(text(start + 6, y + row_h / 2 - 1, label, cls="bar-label"))
        else:
            parts.append(text(start + width + 4, y + row_h / 2 - 1, label, cls="label"))
        if a.outcome == "preempted":
            cx, cy = start + width, y + (row_h - 12) / 2
            parts.append(f'<path class="marker" d="M{fmt(cx - 6)} {fmt(cy - 6)}L{fmt(cx + 6)} '
                         f'{fmt(cy + 6)}M{fmt(cx + 6)} {fmt(cy - 6)}L{fmt(cx - 6)} '
                         f'{fmt(cy + 6)}" stroke="{PREEMPTED_COLOUR}" stroke-width="3">'
                         f"<title>preempted</title></path>")
            markers += 1
    return svg("timeline", frame, parts, marks=len(timed), markers=markers,
               title="Attempts by region over time")


def loss_svg(summary: RunSummary) -> str | None:
    """Loss by step, one line per trainer attempt in its region's colour, with preemption
    (red) and resume (green) markers. Log scale when the loss spans more than 20x."""
    series = [s for s in summary.loss if s.points]
    if not series:
        return None
    steps = [p[0] for s in series for p in s.points] + [m.step for m in summary.markers]
    losses = [p[1] for s in series for p in s.points]
    lo, hi = min(losses), max(losses)
    log = lo > 0 and hi / lo > 20
    frame = Frame(WIDTH, 380, left=70, right=30, top=30, bottom=46)
    x_ticks = nice_ticks(min(0, min(steps)), max(max(steps), 1))
    x = frame.x_scale(x_ticks[0], x_ticks[-1])
    if log:
        y_ticks = log_ticks(lo, hi) or [lo, hi]
        y = frame.y_scale(lo, hi, log=True)
    else:
        y_ticks = nice_ticks(min(lo, 0.0), hi)
        y = frame.y_scale(y_ticks[0], y_ticks[-1])
    parts = x_axis(frame, x_ticks, x, "training step")
    parts += y_axis(frame, y_ticks, y, "loss" + (" (log scale)" if log else ""))
    for s in series:
        colour = region_colour(summary, s.region)
        tip = escape(f"{s.region} attempt {s.attempt}: steps {s.points[0][0]}-{s.points[-1][0]}")
        if len(s.points) == 1:
            step, loss = s.points[0]
            parts.append(f'<circle class="mark" cx="{fmt(x(step))}" cy="{fmt(y(loss))}" r="3" '
                         f'fill="{colour}"><title>{tip}</title></circle>')
            continue
        coords = " ".join(f"{fmt(x(step))},{fmt(y(loss))}" for step, loss in s.points)
        parts.append(f'<polyline class="mark" points="{coords}" fill="none" stroke="{colour}" '
                     f'stroke-width="1.6"><title>{tip}</title></polyline>')
    for i, m in enumerate(summary.markers):
        colour = PREEMPTED_COLOUR if m.kind == "preempted" else RESUMED_COLOUR
        label = f"✕ preempted @{m.step}" if m.kind == "preempted" else f"↻ resumed from {m.step}"
        mx = x(m.step)
        parts.append(f'<line class="marker" x1="{fmt(mx)}" y1="{fmt(frame.y0)}" x2="{fmt(mx)}" '
                     f'y2="{fmt(frame.y1)}" stroke="{colour}" stroke-width="2" '
                     f'stroke-dasharray="5 3"><title>{escape(f"{label} ({m.region})")}</title>'
                     "</line>")
        anchor = "end" if mx > (frame.x0 + frame.x1) / 2 else "start"
        dx = -4 if anchor == "end" else 4
        parts.append(text(mx + dx, frame.y0 - 14 + 12 * (i % 2), label, anchor=anchor,
                          cls="marker-label", extra=f' fill="{colour}"'))
    legend_x = frame.x1 - 8
    for i, s in enumerate(series):
        ly = frame.y0 + 14 + 16 * i
        parts.append(f'<line x1="{fmt(legend_x - 180)}" y1="{fmt(ly - 4)}" '
                     f'x2="{fmt(legend_x - 160)}" y2="{fmt(ly - 4)}" '
                     f'stroke="{region_colour(summary, s.region)}" stroke-width="3"/>')
        parts.append(text(legend_x - 154, ly, f"{s.region} · attempt {i + 1}", cls="legend"))
    return svg("loss", frame, parts, marks=len(series), markers=len(summary.markers),
               title="Training loss by step")


def goodput_svg(summary: RunSummary) -> str | None:
    """The wall time as one stacked bar split into the ledger's categories, with a legend."""
    goodput = summary.goodput
    if goodput is None or goodput.wall_s <= 0:
        return None
    shown = [c for c in goodput.categories if c.seconds > 0]
    rows = (len(goodput.categories) + 1) // 2
    frame = Frame(WIDTH, 90 + 20 * rows, left=20, right=20, top=24, bottom=20 * rows + 20)
    x = frame.x_scale(0.0, sum(c.seconds for c in shown))
    colours = dict(zip([c.key for c in goodput.categories],
                       ("#81c784", "#90caf9", "#ce93d8", "#80cbc4", "#fff59d", "#ffcc80",
                        "#ffab91", "#e57373", "#b0bec5", "#e0e0e0"), strict=False))
    parts = [text(frame.x0, 16, f"wall time {goodput.wall_s:.1f} s · goodput "
                  f"{goodput.goodput_pct:.1f}%", cls="label")]
    cursor = 0.0
    for c in shown:
        start, stop = x(cursor), x(cursor + c.seconds)
        parts.append(f'<rect class="mark" x="{fmt(start)}" y="{fmt(frame.y0)}" '
                     f'width="{fmt(max(stop - start, 1.0))}" height="36" '
                     f'fill="{colours.get(c.key, "#999")}" stroke="#fff" stroke-width="0.5">'
                     f"<title>{escape(f'{c.label}: {c.seconds:.1f} s ({c.pct:.1f}%)')}</title>"
                     "</rect>")
        if stop - start > 60:
            parts.append(text((start + stop) / 2, frame.y0 + 23, f"{c.pct:.0f}%",
                              anchor="middle", cls="label"))
        cursor += c.seconds
    half = (frame.x1 - frame.x0) / 2
    for i, c in enumerate(goodput.categories):
        lx = frame.x0 + half * (i // rows)
        ly = frame.y0 + 60 + 20 * (i % rows)
        parts.append(f'<rect x="{fmt(lx)}" y="{fmt(ly - 10)}" width="12" height="12" '
                     f'fill="{colours.get(c.key, "#999")}"/>')
        parts.append(text(lx + 18, ly, f"{c.label}: {c.seconds:.1f} s ({c.pct:.1f}%)",
                          cls="legend"))
    return svg("goodput", frame, parts, marks=len(shown), markers=0,
               title="Goodput: where the wall time went")


def replicas_svg(summary: RunSummary) -> str | None:
    """One bar per checkpoint directory (the final region's, then each replica) up to its
    newest committed step, with how far it trails."""
    copies = summary.checkpoints
    if not copies:
        return None
    row_h = 30
    frame = Frame(WIDTH, 50 + row_h * len(copies), left=150, right=260, top=10, bottom=40)
    top = max([c.latest_step or 0 for c in copies] + [1])
    ticks = nice_ticks(0, top)
    x = frame.x_scale(0, ticks[-1])
    parts = x_axis(frame, ticks, x, "newest committed step")
    for i, c in enumerate(copies):
        y = frame.y0 + i * row_h + 5
        parts.append(text(frame.x0 - 8, y + 15, c.region + (" (final)" if c.primary else ""),
                          anchor="end", cls="label"))
        width = max(x(c.latest_step or 0) - frame.x0, MIN_BAR_PX)
        colour = region_colour(summary, c.region)
        parts.append(f'<rect class="mark" x="{fmt(frame.x0)}" y="{fmt(y)}" '
                     f'width="{fmt(width)}" height="{row_h - 10}" fill="{colour}">'
                     f"<title>{escape(c.uri)}</title></rect>")
        if c.primary:
            note = f"step {c.latest_step}" if c.latest_step is not None else "no checkpoint"
        elif c.latest_step is None:
            note = "nothing replicated"
        else:
            note = (f"step {c.latest_step} · {c.steps_behind} steps, "
                    f"{c.seconds_behind:.1f} s behind")
        parts.append(text(frame.x1 + 8, y + 15, note, cls="label"))
    return svg("replicas", frame, parts, marks=len(copies), markers=0,
               title="Checkpoint replicas and their lag")
