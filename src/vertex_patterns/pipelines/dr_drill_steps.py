"""KFP components of the `dr_drill` pipeline: `dr_restore` and `dr_report`.

No `from __future__ import annotations` here: KFP reads the parameter annotations at
decoration time and needs real types, not strings.
"""

from typing import NamedTuple

from kfp import dsl

from vertex_patterns.pipelines.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def dr_restore(
    primary_checkpoint_dir: str,
    backup_checkpoint_dir: str,
    drill_run_dir: str,
    train_command: list,  # KFP accepts only a bare `list`
    extra_steps: int = 50,
) -> NamedTuple("Outputs", [("plan", str), ("checkpoint_dir", str),  # type: ignore[valid-type]
                            ("command", list), ("restored_step", int)]):
    """Starts a DR drill: copies the backup region's newest committed checkpoint into a fresh
    drill run directory (data files first, manifest last), writing nothing to the backup or
    the primary.

    Args:
        primary_checkpoint_dir: The primary region's checkpoint directory (read for the RPO;
            an unreadable primary, as in a real outage, leaves the RPO unknown).
        backup_checkpoint_dir: The backup region's checkpoint directory (a fan-out replica).
        drill_run_dir: A fresh run directory in the backup region for the resumed run.
        train_command: The trainer command for the resumed run, with `{run_dir}` and
            `{max_steps}` placeholders (`{max_steps}` becomes restored step + extra_steps).
        extra_steps: How many steps the resumed run trains past the restored step.

    Returns:
        plan: The drill's plan (JSON) for `dr_report`; checkpoint_dir: the drill run's
        checkpoint directory; command: the resumed run's command; restored_step: the step.

    Raises:
        ValueError: The backup holds no committed checkpoint, or the drill dir is not fresh.
    """
    from vertex_patterns.launcher.drill import drill_command, restore_for_drill

    plan = restore_for_drill(primary_checkpoint_dir, backup_checkpoint_dir, drill_run_dir)
    command = drill_command(list(train_command), plan, extra_steps)
    return (plan.to_json(), plan.checkpoint_dir, command, plan.backup_step)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def dr_report(
    plan: str,
    drill_run_dir: str,
    metrics: dsl.Output[dsl.Metrics],
    report: dsl.Output[dsl.Markdown],
) -> None:
    """Measures a finished DR drill: RTO (drill start to the first resumed training step)
    and RPO (steps and seconds the backup trailed the primary), from what the runs wrote.

    Args:
        plan: `dr_restore`'s plan output.
        drill_run_dir: The drill run directory (its metrics stream and goodput ledger).
        metrics: `rto_seconds`, `rpo_steps`, `rpo_seconds`, `restore_seconds`,
            `resumed_from_step`, `first_step_after_restore` (those that could be measured).
        report: The drill's figures as Markdown.

    Raises:
        RuntimeError: The resumed run never trained past the restored step.
    """
    from vertex_patterns.launcher.drill import DrillPlan, measure_drill

    drill_plan = DrillPlan.from_json(plan)
    result = measure_drill(drill_plan, drill_run_dir)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    with open(report.path, "w") as f:
        f.write(result.to_markdown(drill_plan))
    if not result.ok:
        raise RuntimeError(f"the drill's run never trained past step {drill_plan.backup_step}")
