"""Disaster-recovery drill: restore the newest checkpoint from a backup region, resume there,
and measure the recovery time (RTO) and the work lost against the primary (RPO).

The drill never writes to the backup or the primary: the newest committed backup step is
copied (data first, manifest last) into a fresh drill run directory, verified, and the trainer
resumes from it there. Every figure is read back from what the runs wrote: commit times from
manifests, the first resumed step's time from the drill run's metrics stream.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from vertex_patterns.checkpoint.fanout import fan_out
from vertex_patterns.checkpoint.io import list_committed
from vertex_patterns.errors import ConfigError, StorageError
from vertex_patterns.storage import Storage


@dataclass(frozen=True)
class DrillPlan:
    """What the restore found and did; handed from the restore task to the report task."""

    started_at: float
    """Unix time the drill started (the simulated loss of the primary region)."""
    backup_step: int
    """The newest committed step in the backup, restored into the drill run directory."""
    backup_committed_at: float
    primary_step: int | None
    """The newest committed step in the primary (None when it could not be read)."""
    primary_committed_at: float | None
    restore_seconds: float
    """Time to copy the backup step into the drill run directory."""
    checkpoint_dir: str
    """The drill run's checkpoint directory, holding the restored step."""

    def to_json(self) -> str:
        """The plan as JSON."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> DrillPlan:
        """Reads `to_json`'s output."""
        return cls(**json.loads(text))


@dataclass(frozen=True)
class DrillResult:
    """The measured outcome of a drill."""

    rto_seconds: float | None
    """From the drill's start to the first training step after the restore."""
    rpo_steps: int | None
    """Committed steps the primary had that the backup did not."""
    rpo_seconds: float | None
    """How much older the backup's newest checkpoint is than the primary's."""
    resumed_from_step: int | None
    """The step the drill's trainer says it resumed from (must be the backup step)."""
    first_step_after_restore: int | None
    restore_seconds: float

    @property
    def ok(self) -> bool:
        """The trainer resumed from the restored step and trained past it."""
        return self.first_step_after_restore is not None

    def metrics(self) -> dict[str, float]:
        """The figures that exist, for `dsl.Metrics`."""
        return {k: float(v) for k, v in asdict(self).items() if v is not None}

    def to_markdown(self, plan: DrillPlan) -> str:
        """The drill's report."""
        def fmt(value: float | None, unit: str) -> str:
            return "unknown" if value is None else f"{value:.1f} {unit}"

        primary = "unreadable" if plan.primary_step is None else plan.primary_step
        lost = "unknown" if self.rpo_steps is None else self.rpo_steps
        return "\n".join([
            "# Disaster-recovery drill", "",
            "| figure | value |", "|---|---|",
            f"| restored backup step | {plan.backup_step} |",
            f"| primary's newest step | {primary} |",
            f"| RPO (steps lost) | {lost} |",
            f"| RPO (age of the backup) | {fmt(self.rpo_seconds, 's')} |",
            f"| restore copy | {self.restore_seconds:.1f} s |",
            f"| RTO (start to first resumed step) | {fmt(self.rto_seconds, 's')} |",
            f"| trainer resumed from step | {self.resumed_from_step} |",
        ]) + "\n"


def restore_for_drill(primary_checkpoint_dir: str, backup_checkpoint_dir: str,
                      drill_run_dir: str, *, store: Storage | None = None) -> DrillPlan:
    """Copies the backup's newest committed step into ``drill_run_dir/checkpoints``.

    Raises:
        ConfigError: The backup holds no committed checkpoint, or the drill run directory
            already holds checkpoints (a drill starts from nothing).
    """
    store = store or Storage()
    started = time.time()
    backup = list_committed(store, backup_checkpoint_dir)
    if not backup:
        raise ConfigError(f"{backup_checkpoint_dir} holds no committed checkpoint to restore")
    target = f"{drill_run_dir.rstrip('/')}/checkpoints"
    if list_committed(store, target):
        raise ConfigError(f"{target} already holds checkpoints: give each drill a fresh "
                          "drill_run_dir")
    try:
        primary = list_committed(store, primary_checkpoint_dir)
    except StorageError:  # the primary region may be the one that is gone
        primary = {}
    step = max(backup)
    t0 = time.monotonic()
    fan_out(store, backup_checkpoint_dir, target, steps=[step])
    newest = max(primary) if primary else None
    return DrillPlan(
        started_at=started, backup_step=step, backup_committed_at=backup[step].wall_time,
        primary_step=newest,
        primary_committed_at=None if newest is None else primary[newest].wall_time,
        restore_seconds=time.monotonic() - t0, checkpoint_dir=target)


def measure_drill(plan: DrillPlan, drill_run_dir: str, *,
                  store: Storage | None = None) -> DrillResult:
    """Reads the drill run's metrics and goodput ledger and computes RTO and RPO."""
    from vertex_patterns.training.goodput_summary import read_attempts
    from vertex_patterns.training.metrics import read_metrics

    store = store or Storage()
    run_dir = drill_run_dir.rstrip("/")
    after = [r for r in read_metrics(f"{run_dir}/metrics", store)
             if isinstance(r.get("step"), int) and r["step"] > plan.backup_step
             and isinstance(r.get("time"), (int, float))]
    first = min(after, key=lambda r: r["time"]) if after else None
    resumed = [a.resumed_from_step for a in read_attempts(run_dir, store)
               if a.resumed_from_step is not None]
    rpo_steps = None if plan.primary_step is None else plan.primary_step - plan.backup_step
    rpo_seconds = (None if plan.primary_committed_at is None
                   else max(0.0, plan.primary_committed_at - plan.backup_committed_at))
    return DrillResult(
        rto_seconds=None if first is None else float(first["time"]) - plan.started_at,
        rpo_steps=rpo_steps, rpo_seconds=rpo_seconds,
        resumed_from_step=resumed[0] if resumed else None,
        first_step_after_restore=None if first is None else int(first["step"]),
        restore_seconds=plan.restore_seconds)


def drill_command(train_command: list[str], plan: DrillPlan, extra_steps: int) -> list[str]:
    """The resumed run's command: `{max_steps}` becomes the restored step + `extra_steps`.

    Raises:
        ConfigError: `extra_steps` is not positive, or the command has no `{max_steps}`.
    """
    if extra_steps <= 0:
        raise ConfigError(f"extra_steps must be positive, got {extra_steps}")
    if not any("{max_steps}" in arg for arg in train_command):
        raise ConfigError("the drill's train_command needs a {max_steps} placeholder, e.g. "
                          "['python', '-m', 'vertex_patterns.train', ..., '--max-steps', "
                          "'{max_steps}']")
    total = str(plan.backup_step + extra_steps)
    return [arg.replace("{max_steps}", total) for arg in train_command]
