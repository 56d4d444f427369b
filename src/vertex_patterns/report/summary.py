"""What a run report shows, as plain data: `RunSummary` and its parts.

`RunSummary.to_dict()` is the `summary.json` document. Its keys `state`, `regions_used`,
`preemptions`, `steps`, `goodput_pct`, `model_uri` and `tasks` are a contract (the `run`
command and pipeline users read them); the others carry what the plots draw. Every figure was
read from the run's files (launch history, metrics, goodput ledgers, checkpoints); what could
not be read is `None` and named in `missing`.

Times on the plots are seconds since `origin` (the earliest attempt or task start, unix
seconds); the ISO strings are kept as read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

LOSS_POINTS_PER_ATTEMPT = 400
"""Loss points kept per trainer attempt (evenly spread by step, first and last kept): enough
for a plot, and `summary.json` stays small for long runs."""


@dataclass(frozen=True)
class Attempt:
    """One launcher attempt (a CustomJob, or a create that was refused).

    Attributes:
        region: Where it was tried.
        strategy: SPOT, STANDARD or FLEX_START.
        outcome: succeeded, preempted, stockout, quota, user_error, internal, cancelled.
        job: The CustomJob resource name ("" when create was refused).
        error: Why it did not succeed (None for a success).
        started: ISO 8601 UTC, as the history has it.
        ended: ISO 8601 UTC, as the history has it ("" while running).
        start_s: `started` in seconds since the summary's origin (None: unparseable).
        end_s: `ended` in seconds since the summary's origin (None: unparseable or running).
    """

    region: str
    strategy: str
    outcome: str
    job: str
    error: str | None
    started: str
    ended: str
    start_s: float | None
    end_s: float | None


@dataclass(frozen=True)
class LossSeries:
    """The loss of one trainer attempt (one process start), as its metrics chunks have it.

    Attributes:
        region: The region whose run directory holds the chunks.
        attempt: The trainer's attempt id (chunk name prefix).
        points: (step, loss), ascending by step, at most `LOSS_POINTS_PER_ATTEMPT`.
        records: Loss records read (before thinning to `points`).
    """

    region: str
    attempt: str
    points: list[tuple[int, float]]
    records: int


@dataclass(frozen=True)
class StepMarker:
    """A disruption on the loss curve.

    Attributes:
        kind: ``preempted`` (the attempt stopped here: its last recorded step) or ``resumed``
            (the attempt restored the checkpoint of this step).
        step: The training step.
        region: The region of the attempt.
        attempt: The trainer's attempt id.
    """

    kind: str
    step: int
    region: str
    attempt: str


@dataclass(frozen=True)
class GoodputCategory:
    """One category of the goodput ledger, summed over every attempt in every region.

    Attributes:
        key: Key in `goodput.json` (``productive_s``, ``checkpoint_save_s``, ...).
        label: What it is, for people.
        seconds: Seconds in this category.
        pct: Share of the wall time, in percent.
    """

    key: str
    label: str
    seconds: float
    pct: float


@dataclass(frozen=True)
class Goodput:
    """The goodput ledger over all regions' attempt records.

    Attributes:
        wall_s: First process start to last record.
        goodput_pct: Productive training time / wall time, in percent.
        goodput_after_startup_pct: Productive time / wall time less startup and the gaps
            between attempts, in percent.
        steps_lost: Steps computed twice because of disruptions.
        attempts: Trainer attempts (process starts) recorded.
        categories: Every ledger category, in ml-goodput-measurement's order.
    """

    wall_s: float
    goodput_pct: float
    goodput_after_startup_pct: float
    steps_lost: int
    attempts: int
    categories: list[GoodputCategory]


@dataclass(frozen=True)
class CheckpointCopy:
    """A checkpoint directory: the final region's (primary) or a replica in another region.

    Attributes:
        region: The region whose run directory it is in.
        uri: The checkpoint directory.
        primary: True for the final region's own directory.
        latest_step: Its newest committed step (None: none committed).
        steps_behind: Steps by which it trails the primary (0 for the primary).
        seconds_behind: Seconds by which its newest checkpoint trails the primary's.
    """

    region: str
    uri: str
    primary: bool
    latest_step: int | None
    steps_behind: int
    seconds_behind: float


@dataclass(frozen=True)
class TaskRun:
    """One pipeline task, as the caller passed it.

    Attributes:
        name: The task name.
        state: Its final state (``SUCCEEDED``, ``FAILED``, ``SKIPPED``, ...).
        start_time: ISO 8601 or "" when it never started.
        end_time: ISO 8601 or "" when it never ended.
        seconds: Its own run time (None when it did not run).
    """

    name: str
    state: str
    start_time: str
    end_time: str
    seconds: float | None


@dataclass(frozen=True)
class Overhead:
    """Orchestration overhead: the job's wall time that no task's own run time covers.

    Attributes:
        job_s: The pipeline job's wall time.
        tasks_s: Time during which at least one task ran (for tasks that run one after
            another, the sum of their run times).
        overhead_s: `job_s - tasks_s`.
        overhead_pct: `overhead_s` as a share of `job_s`, in percent.
    """

    job_s: float
    tasks_s: float
    overhead_s: float
    overhead_pct: float


@dataclass(frozen=True)
class RunSummary:
    """Everything the report shows about one run (see the module docstring).

    Attributes:
        state: The pipeline's final state when given, else the launch's (SUCCEEDED, FAILED)
            or UNKNOWN without a launch history.
        error: The pipeline's (or launch's) error, None when it succeeded.
        regions: The configured regions, in order of preference.
        regions_used: Regions where an attempt got capacity and ran, in first-use order
            (a stockout's region is not one).
        preemptions: Attempts preempted (each survived when the run went on elsewhere).
        stockouts: Attempts that found no capacity.
        steps: The highest training step reached (None: nothing recorded).
        goodput_pct: Productive share of the trainer's wall time (None: no ledger).
        model_uri: The final model directory, when its `config.json` exists.
        checkpoint_uri: The newest committed checkpoint in the final region.
        final_region: The region the launch ended in (or last ran in, if it failed).
        final_eval: Held-out metrics saved with the final model.
        tasks: Pipeline tasks as given.
        attempts: Launcher attempts, in order.
        loss: Loss per trainer attempt, in start order.
        markers: Preemption and resume steps.
        goodput: The goodput ledger (None: no attempt records).
        checkpoints: The final region's checkpoint directory, then each replica.
        overhead: Orchestration overhead (None without tasks).
        origin: Unix seconds that `start_s`/`end_s` count from (None: no times).
        history_uri: Where the launch history was read.
        run_dir_template: Per-region run directory template.
        missing: What could not be read, one line each.
        cost: The `cost_report` step's figures (``cost.json`` beside the launch history:
            ``cost_usd``, ``on_demand_cost_usd``, ``savings_pct``, ``lost_cost_usd``, ...);
            None when the run has none.
    """

    state: str
    error: str | None
    regions: list[str]
    regions_used: list[str]
    preemptions: int
    stockouts: int
    steps: int | None
    goodput_pct: float | None
    model_uri: str | None
    checkpoint_uri: str | None
    final_region: str | None
    final_eval: dict[str, float]
    tasks: list[TaskRun]
    attempts: list[Attempt]
    loss: list[LossSeries]
    markers: list[StepMarker]
    goodput: Goodput | None
    checkpoints: list[CheckpointCopy]
    overhead: Overhead | None
    origin: float | None
    history_uri: str
    run_dir_template: str
    missing: list[str] = field(default_factory=list)
    cost: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The `summary.json` document (JSON-serialisable)."""
        body = asdict(self)
        body["loss"] = [{**s, "points": [list(p) for p in s["points"]]} for s in body["loss"]]
        return body

    @property
    def replicas(self) -> list[CheckpointCopy]:
        """The checkpoint copies in regions other than the final one."""
        return [c for c in self.checkpoints if not c.primary]
