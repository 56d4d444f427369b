"""KFP component `spot_train`.

No `from __future__ import annotations` here: KFP reads the parameter annotations at
decoration time and needs real types, not strings.
"""

from typing import NamedTuple

from kfp import dsl

from vertex_patterns.pipelines.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def spot_train(
    project: str,
    regions: list,  # KFP accepts only a bare `list`
    image: str,
    machine_type: str,
    command: list,
    run_dir_template: str,
    history: dsl.Output[dsl.Artifact],
    metrics: dsl.Output[dsl.Metrics],
    gcp_resources: dsl.OutputPath(str),  # type: ignore[valid-type]
    accelerator: str = "",
    replica_count: int = 1,
    strategy: str = "SPOT",
    failover: str = "EAGER_NEXT_REGION",
    max_attempts: int = 10,
    poll_seconds: float = 15.0,
    report_dir: str = "",
) -> NamedTuple("Outputs", [("checkpoint_uri", str), ("model_uri", str),  # type: ignore[valid-type]
                            ("run_dir", str), ("checkpoint_dir", str)]):
    """Trains on Spot capacity in the first region that has it, resuming across regions.

    Each attempt is a Vertex AI CustomJob writing under its region's run directory and fanning
    checkpoints out to the other regions' (`--replica`), so a job in any region resumes from the
    newest checkpoint anywhere. Stockouts, quota refusals and preemptions move on to the next
    region (EAGER_NEXT_REGION) or retry the same region first (FAILOVER); after 3 preemptions
    SPOT falls back to STANDARD; a non-zero exit of the command fails at once.

    Args:
        project: Google Cloud project ID.
        regions: Regions in order of preference.
        image: Container image URI; `{region}` is filled in per region, so a job that
            fails over pulls from its own region's registry.
        machine_type: E.g. `n1-standard-8`, `g2-standard-8`.
        command: Container command and args; `{run_dir}` and `{region}` are filled in.
        run_dir_template: Per-region run directory, e.g. `gs://bucket-{region}/runs/NAME`.
        history: The attempts and the final outcome as JSON.
        metrics: attempts, preemptions, stockouts, regions_used, succeeded, goodput_pct.
        gcp_resources: The jobs launched (GCPC format); a retried task re-attaches to them.
        accelerator: `TYPE:COUNT` such as `T4:1`; empty for CPU only.
        replica_count: Replicas in all (more than one: distributed training).
        strategy: SPOT, STANDARD or FLEX_START.
        failover: EAGER_NEXT_REGION or FAILOVER.
        max_attempts: Jobs created in all.
        poll_seconds: Job poll interval.
        report_dir: Also keep the history JSON current at `<report_dir>/history.json`
            (`gs://...` or a path), after every attempt: a report outside the task (the
            pipeline's exit handler) reads it, also when the launch failed. Empty: not kept.

    Returns:
        checkpoint_uri: The newest checkpoint in the final region; model_uri: its model dir;
        run_dir: the final region's run directory (`goodput.json`, `metrics/`);
        checkpoint_dir: the final region's checkpoint directory.

    Raises:
        RuntimeError: No attempt succeeded (the outputs are written first).
    """
    from vertex_patterns.launcher.task import spot_train_run

    result = spot_train_run(
        project=project, regions=list(regions), image=image, machine_type=machine_type,
        command=list(command), run_dir_template=run_dir_template, accelerator=accelerator,
        replica_count=replica_count, strategy=strategy, failover=failover,
        max_attempts=max_attempts, poll_seconds=poll_seconds, state_path=gcp_resources,
        history_uri=f"{report_dir.rstrip('/')}/history.json" if report_dir else "")
    with open(history.path, "w") as f:
        f.write(result.history_json)
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    if not result.succeeded:
        raise RuntimeError(f"spot_train failed: {result.failure}")
    return (result.checkpoint_uri, result.model_uri, result.run_dir, result.checkpoint_dir)
