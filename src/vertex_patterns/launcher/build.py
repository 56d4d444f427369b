"""The CustomJob a region's attempt submits, built from a `JobSpec` and a `LaunchPolicy`.

The job in region R writes under R's run directory (`baseOutputDirectory`, so Vertex AI sets
AIP_CHECKPOINT_DIR and AIP_MODEL_DIR there) and is told, by one `--replica` flag per other
region, where the other regions' checkpoints live: the trainer fans its checkpoints out to them
and resumes from the newest valid one in any region.
"""

from __future__ import annotations

from typing import Any

from vertex_patterns.launcher.spec import JobSpec, LaunchPolicy


def attempt_display_name(spec: JobSpec, region: str, number: int) -> str:
    """``<display_name>-<region>-a<number>``: unique per launch attempt, found again by list."""
    return f"{spec.display_name}-{region}-a{number}"


def container_args(spec: JobSpec, policy: LaunchPolicy, region: str) -> list[str]:
    """The command with ``{region}``/``{run_dir}`` filled in and the replica flags appended."""
    run_dir = policy.run_dir(region)
    argv = [part.replace("{region}", region).replace("{run_dir}", run_dir)
            for part in spec.command]
    if policy.replica_flag:
        for other in policy.regions:
            if other != region:
                argv += [policy.replica_flag, policy.checkpoint_dir(other)]
    return argv


def build_custom_job(spec: JobSpec, policy: LaunchPolicy, region: str, *, strategy: str,
                     number: int) -> Any:
    """The `aiplatform_v1.types.CustomJob` for attempt `number` in `region`.

    Args:
        spec: The validated job spec.
        policy: The validated launch policy (run directories, regions).
        region: Where this attempt runs.
        strategy: SPOT, STANDARD or FLEX_START (the policy may have fallen back from SPOT).
        number: The attempt number, 1-based, over the whole launch.
    """
    from google.cloud.aiplatform_v1.types import (
        AcceleratorType,
        ContainerSpec,
        CustomJob,
        CustomJobSpec,
        DiskSpec,
        EncryptionSpec,
        EnvVar,
        GcsDestination,
        MachineSpec,
        Scheduling,
        WorkerPoolSpec,
    )
    from google.protobuf import duration_pb2

    argv = container_args(spec, policy, region)
    machine = MachineSpec(machine_type=spec.machine_type)
    if spec.accelerator_type is not None:
        machine.accelerator_type = getattr(AcceleratorType, spec.accelerator_type)
        machine.accelerator_count = spec.accelerator_count
    container = ContainerSpec(image_uri=spec.image_uri(region), command=argv[:1], args=argv[1:],
                              env=[EnvVar(name=k, value=v) for k, v in spec.env])
    disk = DiskSpec(boot_disk_type=spec.boot_disk_type, boot_disk_size_gb=spec.boot_disk_size_gb)

    def pool(replicas: int) -> Any:
        return WorkerPoolSpec(machine_spec=machine, replica_count=replicas,
                              container_spec=container, disk_spec=disk)

    # Vertex AI wants exactly one replica in pool 0 (the primary); the others go in pool 1.
    pools = [pool(1)] + ([pool(spec.replica_count - 1)] if spec.replica_count > 1 else [])
    scheduling = Scheduling(strategy=getattr(Scheduling.Strategy, strategy),
                            restart_job_on_worker_restart=spec.restart_job_on_worker_restart)
    if spec.timeout_s is not None:
        scheduling.timeout = duration_pb2.Duration(seconds=spec.timeout_s)
    if strategy == "FLEX_START" and spec.max_wait_duration_s is not None:
        scheduling.max_wait_duration = duration_pb2.Duration(seconds=spec.max_wait_duration_s)
    job_spec = CustomJobSpec(
        worker_pool_specs=pools, scheduling=scheduling,
        base_output_directory=GcsDestination(output_uri_prefix=policy.run_dir(region)))
    if spec.service_account:
        job_spec.service_account = spec.service_account
    if spec.network:
        job_spec.network = spec.network
        job_spec.reserved_ip_ranges = list(spec.reserved_ip_ranges)
    job = CustomJob(display_name=attempt_display_name(spec, region, number), job_spec=job_spec,
                    labels=dict(spec.labels))
    if spec.encryption_spec_key_name:
        job.encryption_spec = EncryptionSpec(
            kms_key_name=spec.encryption_spec_key_name.replace("{region}", region))
    return job
