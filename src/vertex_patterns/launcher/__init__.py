"""Spot training across regions on Vertex AI: build the CustomJob, classify how each attempt
ended, fail over between regions (SkyPilot's EAGER_NEXT_REGION and FAILOVER), fall back from
SPOT to STANDARD, and survive a restart of the launcher itself.

    spec = JobSpec(display_name="digits", image=IMAGE, machine_type="n1-standard-4",
                   command=("python", "-m", "vertex_patterns.train", "--run-dir", "{run_dir}"))
    policy = LaunchPolicy(project="my-project", regions=("us-central1", "us-east1"),
                          run_dir_template="gs://my-bucket-{region}/runs/digits")
    history = launch(spec, policy, state_path="gcp_resources.json")
"""

from __future__ import annotations

from vertex_patterns.launcher.build import build_custom_job, container_args
from vertex_patterns.launcher.history import AttemptRecord, LaunchHistory
from vertex_patterns.launcher.launcher import Launcher, final_uris, launch
from vertex_patterns.launcher.outcome import Classified, Outcome, classify_failure, classify_job
from vertex_patterns.launcher.policy import EagerNextRegion, Failover, RegionPlanner
from vertex_patterns.launcher.spec import (
    JobSpec,
    LaunchPolicy,
    parse_accelerator,
    parse_duration,
)
from vertex_patterns.launcher.summary import launch_metrics

__all__ = [
    "AttemptRecord", "Classified", "EagerNextRegion", "Failover", "JobSpec", "LaunchHistory",
    "LaunchPolicy", "Launcher", "Outcome", "RegionPlanner", "build_custom_job",
    "classify_failure", "classify_job", "container_args", "final_uris", "launch",
    "launch_metrics", "parse_accelerator", "parse_duration",
]
