"""The `spot_training` pipeline: replicate data, train on Spot across regions, verify.

No `from __future__ import annotations` here: KFP reads the parameter annotations at
decoration time and needs real types, not strings.

    replicate_data ──> spot_train ──> verify_checkpoints
    (primary bucket    (Spot, failover,   (final region's checkpoints)
     to each region)    fan-out, resume)
                               ├────────> cost_report (the run's cost; into the report)
                               └────────> health_check ──(critical)──> health_incident
                                          (rules over the run's metrics)  (fails the run)
    publish_report runs in the exit handler, whether the run succeeded or not.
"""

from kfp import dsl

from vertex_patterns.pipelines.cost_report import cost_report
from vertex_patterns.pipelines.health_check import health_check
from vertex_patterns.pipelines.health_incident import health_incident
from vertex_patterns.pipelines.image import IMAGE
from vertex_patterns.pipelines.publish_report import publish_report
from vertex_patterns.pipelines.replicate_data import replicate_data
from vertex_patterns.pipelines.spot_train import spot_train
from vertex_patterns.pipelines.verify_checkpoints import verify_checkpoints

DEFAULT_REGIONS = ["us-central1", "us-east1", "europe-west4"]
DEFAULT_TRAIN_COMMAND = [
    "python", "-m", "vertex_patterns.train", "--workload", "digits", "--run-dir", "{run_dir}",
    "--max-steps", "2000", "--checkpoint-every-steps", "100", "--seed", "1",
]


@dsl.pipeline(name="spot-training",
              description="Replicate training data to every region, train on Spot capacity "
                          "with multi-region failover and checkpoint fan-out, verify the final "
                          "checkpoints, and publish a run report.")
def spot_training(
    project: str,
    data_source_uri: str,
    data_replica_uris: list,
    run_dir_template: str,
    report_dir: str,
    regions: list = DEFAULT_REGIONS,
    trainer_image: str = IMAGE,
    train_command: list = DEFAULT_TRAIN_COMMAND,
    machine_type: str = "n1-standard-8",
    accelerator: str = "",
    strategy: str = "SPOT",
    failover: str = "EAGER_NEXT_REGION",
    max_attempts: int = 10,
    poll_seconds: float = 15.0,
    replication_workers: int = 8,
    rpo_tier: str = "production",
) -> None:
    """Spot training across regions.

    Args:
        project: Google Cloud project of the training jobs.
        data_source_uri: The training data in the primary region (`gs://bucket/prefix`).
        data_replica_uris: Where the data goes in the other regions.
        run_dir_template: Per-region run directory, with `{region}`.
        report_dir: Where the launch history, `summary.json` and `report.html` go.
        regions: Regions in order of preference (checkpoints fan out to all of them).
        trainer_image: The trainer's image; `{region}` picks a regional registry.
        train_command: The trainer's command with `{run_dir}` (and `{region}`) placeholders.
        machine_type: Machine type of the training job.
        accelerator: `TYPE:COUNT` such as `L4:1`; empty for CPU only.
        strategy: SPOT, STANDARD or FLEX_START.
        failover: EAGER_NEXT_REGION or FAILOVER.
        max_attempts: Training jobs created in all.
        poll_seconds: How often the launcher polls the training job.
        replication_workers: Objects copied in parallel by the data replication.
        rpo_tier: Checkpoint-staleness objective of the health check: research (24 h),
            production (1 h) or critical (15 min).
    """
    report = publish_report(report_dir=report_dir, run_dir_template=run_dir_template,
                            regions=regions)
    report.set_caching_options(False)
    report.set_retry(num_retries=2, backoff_duration="10s")  # rewrites the same two files
    with dsl.ExitHandler(report, name="spot-training-run"):
        replicate = replicate_data(source_uri=data_source_uri,
                                   destination_uris=data_replica_uris,
                                   workers=replication_workers)
        replicate.set_caching_options(False)  # the source may change while inputs do not
        replicate.set_retry(num_retries=2, backoff_duration="10s")  # incremental: safe

        train = spot_train(project=project, regions=regions, image=trainer_image,
                           machine_type=machine_type, command=train_command,
                           run_dir_template=run_dir_template, accelerator=accelerator,
                           strategy=strategy, failover=failover, max_attempts=max_attempts,
                           poll_seconds=poll_seconds, report_dir=report_dir)
        train.after(replicate)
        train.set_caching_options(False)  # launches jobs; the launcher retries by itself

        verify = verify_checkpoints(checkpoint_dir=train.outputs["checkpoint_dir"])
        verify.set_caching_options(False)
        verify.set_retry(num_retries=2, backoff_duration="10s")  # read-only: safe to retry
        cost = cost_report(history=train.outputs["history"], run_dir=train.outputs["run_dir"],
                           machine_type=machine_type, accelerator=accelerator,
                           report_dir=report_dir)
        cost.set_caching_options(False)

        health = health_check(run_dir=train.outputs["run_dir"], rpo=rpo_tier)
        health.set_caching_options(False)
        with dsl.If(health.outputs["Output"] == "critical", name="critical-health"):
            incident = health_incident(report=health.outputs["report"],
                                       run_dir=train.outputs["run_dir"])
            incident.set_caching_options(False)
