"""Reading a finished (or failed) run into a `RunSummary`.

Sources: the launcher's history JSON, each region's run directory (`metrics/` chunks,
`goodput/` attempt records, `model/config.json`) and the final region's checkpoints with
their replicas in the other regions. A source that cannot be read is named in
`RunSummary.missing` and its figures stay `None`: a run that failed early still gets a report
of what exists.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from vertex_patterns.errors import ConfigError, VertexPatternsError
from vertex_patterns.report.summary import (
    LOSS_POINTS_PER_ATTEMPT,
    Attempt,
    CheckpointCopy,
    Goodput,
    GoodputCategory,
    LossSeries,
    Overhead,
    RunSummary,
    StepMarker,
    TaskRun,
)
from vertex_patterns.storage import Storage

log = logging.getLogger("vertex_patterns.report")

# What a source can fail with: storage errors, bad URIs, unreadable JSON.
_READ_ERRORS = (VertexPatternsError, OSError, ValueError, KeyError, TypeError)
_FRACTION = re.compile(r"\.(\d+)")
_NEVER_RAN = ("stockout", "quota")


def parse_time(value: str | float | int | None) -> float | None:
    """Unix seconds from ISO 8601 (``Z`` or an offset, any fraction digits) or a number."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = value.strip().replace("Z", "+00:00")
    # Vertex AI reports nanoseconds; datetime takes at most microseconds.
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


@dataclass(frozen=True)
class _History:
    attempts: list[dict[str, Any]]
    final_outcome: str | None
    final_region: str | None


def _read_history(store: Storage, uri: str) -> _History:
    body = json.loads(store.read_bytes(uri))
    attempts = body["attempts"]
    if not isinstance(attempts, list) or not all(isinstance(a, dict) for a in attempts):
        raise ValueError("`attempts` is not a list of objects")
    final = body.get("final") or {}
    return _History(attempts, final.get("outcome"), final.get("region"))


def _thin(points: list[tuple[int, float]], keep: int) -> list[tuple[int, float]]:
    if len(points) <= keep:
        return points
    stride = (len(points) - 1) / (keep - 1)
    return [points[round(i * stride)] for i in range(keep)]


def _read_loss(store: Storage, region: str, run_dir: str) -> list[LossSeries]:
    from vertex_patterns.training.metrics import list_chunks

    by_attempt: dict[str, dict[int, float]] = {}
    for attempt, _, chunk_uri in list_chunks(f"{run_dir}/metrics", store):
        steps = by_attempt.setdefault(attempt, {})
        for line in store.read_bytes(chunk_uri).decode().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            loss = record.get("loss") if isinstance(record, dict) else None
            step = record.get("step") if isinstance(record, dict) else None
            if isinstance(step, int) and isinstance(loss, (int, float)) \
                    and not isinstance(loss, bool) and loss == loss:  # NaN != NaN
                steps[step] = float(loss)
    return [LossSeries(region=region, attempt=attempt,
                       points=_thin(sorted(steps.items()), LOSS_POINTS_PER_ATTEMPT),
                       records=len(steps))
            for attempt, steps in by_attempt.items() if steps]


class _Reader:
    """Reads each source once, noting what is missing instead of failing."""

    def __init__(self, store: Storage, run_dir_template: str, regions: Sequence[str]) -> None:
        self.store = store
        self.template = run_dir_template
        self.regions = list(regions)
        self.missing: list[str] = []

    def run_dir(self, region: str) -> str:
        return self.template.format(region=region).rstrip("/")

    def note(self, what: str, exc: BaseException) -> None:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self.missing.append(f"{what}: {reason}")
        log.info("report: %s unreadable: %s", what, reason)

    def history(self, uri: str) -> _History | None:
        if not uri:
            self.missing.append("launch history: no URI given")
            return None
        try:
            return _read_history(self.store, uri)
        except _READ_ERRORS as exc:
            self.note(f"launch history {uri}", exc)
            return None

    def loss(self) -> list[LossSeries]:
        series: list[LossSeries] = []
        for region in self.regions:
            try:
                series += _read_loss(self.store, region, self.run_dir(region))
            except _READ_ERRORS as exc:
                self.note(f"metrics of {region}", exc)
        return series

    def ledger(self) -> tuple[list[Any], dict[str, str]]:
        from vertex_patterns.training.goodput_summary import read_attempts

        records, region_of = [], {}
        for region in self.regions:
            try:
                found = read_attempts(self.run_dir(region), self.store)
            except _READ_ERRORS as exc:
                self.note(f"goodput records of {region}", exc)
                continue
            records += found
            region_of.update({r.attempt: region for r in found})
        return records, region_of

    def model(self, region: str) -> tuple[str | None, dict[str, float], int | None]:
        uri = f"{self.run_dir(region)}/model"
        try:
            config = json.loads(self.store.read_bytes(f"{uri}/config.json"))
        except _READ_ERRORS as exc:
            self.note(f"final model {uri}", exc)
            return None, {}, None
        evals = {k: float(v) for k, v in (config.get("eval") or {}).items()
                 if isinstance(v, (int, float))}
        step = config.get("step")
        return uri, evals, step if isinstance(step, int) else None

    def checkpoints(self, final: str) -> list[CheckpointCopy]:
        from vertex_patterns.checkpoint.inspect import list_checkpoints

        primary = f"{self.run_dir(final)}/checkpoints"
        others = [r for r in self.regions if r != final]
        try:
            listing = list_checkpoints(primary, [f"{self.run_dir(r)}/checkpoints"
                                                 for r in others], storage=self.store)
        except _READ_ERRORS as exc:
            self.note(f"checkpoints {primary}", exc)
            return []
        latest = listing.checkpoints[-1].step if listing.checkpoints else None
        copies = [CheckpointCopy(region=final, uri=listing.directory, primary=True,
                                 latest_step=latest, steps_behind=0, seconds_behind=0.0)]
        copies += [CheckpointCopy(region=region, uri=lag.replica, primary=False,
                                  latest_step=lag.latest_step, steps_behind=lag.steps_behind,
                                  seconds_behind=round(lag.seconds_behind, 3))
                   for region, lag in zip(others, listing.lag, strict=True)]
        return copies


def _goodput(summary: Any) -> Goodput:
    from vertex_patterns.training.goodput_summary import CATEGORIES

    wall = summary.wall_s
    categories = [GoodputCategory(key=key, label=label, seconds=summary.seconds[key],
                                  pct=100 * summary.seconds[key] / wall if wall > 0 else 0.0)
                  for key, _, label in CATEGORIES]
    return Goodput(wall_s=wall, goodput_pct=summary.goodput_pct,
                   goodput_after_startup_pct=summary.goodput_after_startup_pct,
                   steps_lost=summary.steps_lost, attempts=len(summary.attempts),
                   categories=categories)


def _markers(breakdowns: list[Any], region_of: Mapping[str, str]) -> list[StepMarker]:
    """Where each attempt but the last stopped, and where each resumed attempt started."""
    markers = []
    for i, b in enumerate(breakdowns):
        region = region_of.get(b.attempt, "")
        if b.resumed_from_step is not None:
            markers.append(StepMarker("resumed", b.resumed_from_step, region, b.attempt))
        ended_early = b.outcome is None or str(b.outcome).startswith("preempted")
        if i < len(breakdowns) - 1 and ended_early and b.last_step is not None:
            markers.append(StepMarker("preempted", b.last_step, region, b.attempt))
    return sorted(markers, key=lambda m: (m.step, m.kind != "preempted"))


def _tasks(tasks: Sequence[Mapping[str, Any]] | None) -> list[TaskRun]:
    out = []
    for t in tasks or ():
        seconds = t.get("seconds")
        out.append(TaskRun(name=str(t.get("name", "")), state=str(t.get("state", "")),
                           start_time=str(t.get("start_time") or ""),
                           end_time=str(t.get("end_time") or ""),
                           seconds=None if seconds is None else float(seconds)))
    return out


def _overhead(tasks: list[TaskRun], job_seconds: float | None) -> Overhead | None:
    spans = [(parse_time(t.start_time), parse_time(t.end_time)) for t in tasks]
    timed = sorted((s, e) for s, e in spans if s is not None and e is not None and e >= s)
    if timed:
        # The union of the tasks' intervals: parallel tasks are not counted twice.
        busy, cursor = 0.0, timed[0][0]
        for start, end in timed:
            start = max(start, cursor)
            if end > start:
                busy, cursor = busy + end - start, end
        wall = job_seconds if job_seconds is not None else \
            max(e for _, e in timed) - timed[0][0]
    else:
        busy = sum(t.seconds or 0.0 for t in tasks)
        if job_seconds is None:
            return None
        wall = job_seconds
    if wall <= 0:
        return None
    overhead = wall - busy
    return Overhead(job_s=round(wall, 3), tasks_s=round(busy, 3), overhead_s=round(overhead, 3),
                    overhead_pct=round(100 * overhead / wall, 2))


def normalize_state(state: str) -> str:
    """``PIPELINE_STATE_FAILED``/``failed`` -> ``FAILED``: one spelling on the page."""
    return state.strip().upper().removeprefix("PIPELINE_STATE_") or "UNKNOWN"


def _checkpoint_uri(copies: list[CheckpointCopy]) -> str | None:
    """The newest committed checkpoint of the final region (the first copy)."""
    if not copies or copies[0].latest_step is None:
        return None
    from vertex_patterns.checkpoint.layout import step_dir_name

    return f"{copies[0].uri}/{step_dir_name(copies[0].latest_step)}"


def _timed_attempts(raw: list[dict[str, Any]], tasks: list[TaskRun]
                    ) -> tuple[list[Attempt], float | None]:
    """The history's attempts with times relative to the origin: the earliest start of an
    attempt or a task (None when nothing has a readable time)."""
    starts = [parse_time(a.get("started")) for a in raw]
    starts += [parse_time(t.start_time) for t in tasks]
    origin = min((s for s in starts if s is not None), default=None)

    def rel(value: Any) -> float | None:
        t = parse_time(value)
        return None if t is None or origin is None else round(t - origin, 3)

    attempts = [Attempt(region=str(a.get("region", "")), strategy=str(a.get("strategy", "")),
                        outcome=str(a.get("outcome", "")), job=str(a.get("job") or ""),
                        error=a.get("error"), started=str(a.get("started") or ""),
                        ended=str(a.get("ended") or ""), start_s=rel(a.get("started")),
                        end_s=rel(a.get("ended")))
                for a in raw]
    return attempts, origin


def collect_run_summary(
    history_uri: str,
    run_dir_template: str,
    regions: Sequence[str],
    *,
    tasks: Sequence[Mapping[str, Any]] | None = None,
    state: str | None = None,
    error: str | None = None,
    job_seconds: float | None = None,
    storage: Storage | None = None,
) -> RunSummary:
    """Reads what a `spot_training` run left behind into one summary.

    Args:
        history_uri: The launcher's history JSON (`gs://...` or a local path).
        run_dir_template: Per-region run directory, e.g. ``gs://bucket-{region}/runs/NAME``.
        regions: The configured regions, in order of preference.
        tasks: Pipeline tasks: ``{"name", "state", "start_time", "end_time", "seconds"}``.
        state: The pipeline's final state (default: the launch's).
        error: The pipeline's error message, if it failed.
        job_seconds: The pipeline job's wall time (default: first task start to last end).
        storage: Storage facade (defaults follow `STORAGE_EMULATOR_HOST`).

    Returns:
        The summary; sources that could not be read are listed in `missing`.

    Raises:
        ConfigError: No regions, or a template that fills in anything but ``{region}``.
    """
    if not regions:
        raise ConfigError("regions: give at least one region")
    try:
        run_dir_template.format(region=regions[0])
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"run dir template {run_dir_template!r}: only {{region}} may be "
                          f"filled in ({exc})") from exc
    reader = _Reader(storage or Storage(), run_dir_template, regions)
    history = reader.history(history_uri)
    raw_attempts = history.attempts if history else []
    # Where a job got capacity and ran: a stockout's job was created but never started.
    used = list(dict.fromkeys(str(a.get("region")) for a in raw_attempts
                              if a.get("job") and a.get("outcome") not in _NEVER_RAN))
    final = (history.final_region if history else None) or (used[-1] if used else None)
    succeeded = history is not None and history.final_outcome == "succeeded"

    loss = reader.loss()
    records, region_of = reader.ledger()
    goodput, markers = None, []
    if records:
        from vertex_patterns.training.goodput_summary import summarize

        ledger = summarize(records)
        goodput, markers = _goodput(ledger), _markers(ledger.attempts, region_of)
    elif history is not None:
        reader.missing.append("goodput: no attempt records in any region's run directory")
    model_uri, final_eval, model_step = reader.model(final) if final and succeeded \
        else (None, {}, None)
    copies = reader.checkpoints(final) if final else []
    primary_step = copies[0].latest_step if copies else None
    reached = [s for s in (model_step, primary_step) if s is not None]
    reached += [p[0] for s in loss for p in s.points[-1:]]
    reached += [r.last_step for r in records if r.last_step is not None]

    task_runs = _tasks(tasks)
    attempts, origin = _timed_attempts(raw_attempts, task_runs)
    if state is None:
        state = "UNKNOWN" if history is None else "SUCCEEDED" if succeeded else "FAILED"
    if error is None and history is not None and not succeeded:
        error = next((a.error for a in reversed(attempts) if a.error), None)
    return RunSummary(
        state=normalize_state(state), error=error or None, regions=list(regions),
        regions_used=used, preemptions=sum(a.outcome == "preempted" for a in attempts),
        stockouts=sum(a.outcome == "stockout" for a in attempts),
        steps=max(reached) if reached else None,
        goodput_pct=None if goodput is None else round(goodput.goodput_pct, 3),
        model_uri=model_uri, checkpoint_uri=_checkpoint_uri(copies), final_region=final,
        final_eval=final_eval, tasks=task_runs, attempts=attempts, loss=loss,
        markers=markers, goodput=goodput, checkpoints=copies,
        overhead=_overhead(task_runs, job_seconds), origin=origin, history_uri=history_uri,
        run_dir_template=run_dir_template, missing=reader.missing,
        cost=_cost(reader.store, history_uri))


def _cost(store: Storage, history_uri: str) -> dict[str, float] | None:
    """The `cost_report` step's figures, kept as ``cost.json`` beside the launch history."""
    uri = f"{history_uri.rsplit('/', 1)[0]}/cost.json" if "/" in history_uri else ""
    try:
        body = json.loads(store.read_bytes(uri)) if uri else None
    except (VertexPatternsError, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    return {k: float(v) for k, v in body.items() if isinstance(v, (int, float))}
