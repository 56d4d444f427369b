"""The launch as one call with plain inputs and outputs, for the `spot_train` KFP component."""

from __future__ import annotations

import json
from dataclasses import dataclass

from vertex_patterns.launcher.launcher import Launcher, final_uris
from vertex_patterns.launcher.spec import JobSpec, LaunchPolicy, parse_accelerator
from vertex_patterns.launcher.summary import launch_metrics


@dataclass(frozen=True)
class SpotTrainResult:
    """What a finished launch hands to the pipeline."""

    history_json: str
    """The `--history` JSON document."""
    metrics: dict[str, float]
    """`launch_metrics`: attempts, preemptions, regions used, goodput."""
    checkpoint_uri: str
    """The newest committed checkpoint in the final region ("" when none)."""
    model_uri: str
    """The final region's model directory ("" when no job ran)."""
    run_dir: str
    """The final region's run directory ("" when no job ran)."""
    checkpoint_dir: str
    """The final region's checkpoint directory ("" when no job ran)."""
    succeeded: bool
    failure: str | None


def spot_train_run(
    *,
    project: str,
    regions: list[str],
    image: str,
    machine_type: str,
    command: list[str],
    run_dir_template: str,
    accelerator: str = "",
    replica_count: int = 1,
    strategy: str = "SPOT",
    failover: str = "EAGER_NEXT_REGION",
    max_attempts: int = 10,
    poll_seconds: float = 15.0,
    state_path: str | None = None,
    display_name: str = "",
    history_uri: str = "",
) -> SpotTrainResult:
    """Validates, launches and sums up (see `vertex_patterns.launcher` for the semantics).

    Args:
        history_uri: When set, the history JSON is also written there (a `gs://` object or a
            local file) after every attempt, so a report can read it while the task runs
            and after it failed.

    Raises:
        ConfigError: A bad job spec or policy (before anything is sent).
    """
    accelerator_type, count = parse_accelerator(accelerator) if accelerator else (None, 0)
    name = display_name or run_dir_template.rstrip("/").rsplit("/", 1)[-1]
    spec = JobSpec(display_name=name.replace("{region}", "r"), image=image,
                   command=tuple(command), machine_type=machine_type,
                   accelerator_type=accelerator_type, accelerator_count=count,
                   replica_count=replica_count, strategy=strategy.upper().replace("-", "_"))
    policy = LaunchPolicy(project=project, regions=tuple(regions),
                          run_dir_template=run_dir_template,
                          failover=failover.upper().replace("-", "_"),
                          max_attempts=max_attempts, poll_seconds=poll_seconds)
    history = Launcher(spec, policy, state_path=state_path,
                       history_uri=history_uri or None).run()
    final = history.final_region if history.succeeded else None
    checkpoint_uri, model_uri = final_uris(policy, final)
    return SpotTrainResult(history_json=json.dumps(history.to_dict()),
                           metrics=launch_metrics(history, policy),
                           checkpoint_uri=checkpoint_uri, model_uri=model_uri,
                           run_dir=policy.run_dir(final) if final else "",
                           checkpoint_dir=policy.checkpoint_dir(final) if final else "",
                           succeeded=history.succeeded, failure=history.failure)
