"""KFP component `health_check`.

No `from __future__ import annotations` here: KFP reads the parameter annotations at
decoration time and needs real types, not strings.
"""

from kfp import dsl

from vertex_patterns.pipelines.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def health_check(
    run_dir: str,
    report: dsl.Output[dsl.Markdown],
    metrics: dsl.Output[dsl.Metrics],
    rpo: str = "production",
    follow: bool = False,
    poll_seconds: float = 30.0,
    timeout_seconds: float = 0.0,
) -> str:
    """Checks a training run's health and returns the verdict for `dsl.If`.

    Evaluates the health rules (non-finite loss, loss spike, divergence, stall, checkpoint
    staleness against the RPO tier, low utilisation, throughput regression, stragglers) over
    the trainer's run directory: its metrics stream, committed checkpoints and final model.
    Read-only. A critical verdict does not fail the task: branch on the returned verdict.

    Args:
        run_dir: The trainer's run directory (for `spot_train`, the final region's run dir).
        report: The verdict and one row per finding, as Markdown.
        metrics: `verdict_level` (0 healthy, 1 warning, 2 critical), finding counts per
            severity and `steps_seen`.
        rpo: Recovery-point objective tier for checkpoint staleness: `research` (24 h),
            `production` (1 h) or `critical` (15 min).
        follow: Follow a running job: check every `poll_seconds` until it completes or
            turns critical. False checks once, after the run.
        poll_seconds: Seconds between checks when following.
        timeout_seconds: Stop following after this long; 0 follows until the run ends.

    Returns:
        The verdict: `healthy`, `warning` or `critical`.

    Raises:
        ValueError: An unknown tier, a run directory or bucket that does not exist.
    """
    from vertex_patterns.health import HealthConfig, check_run, follow_run, rpo_seconds

    config = HealthConfig(rpo_s=rpo_seconds(rpo))
    result = follow_run(run_dir, config, poll_s=poll_seconds,
                        timeout_s=timeout_seconds or None) if follow \
        else check_run(run_dir, config)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    with open(report.path, "w") as f:
        f.write(result.to_markdown())
    return result.verdict.value
