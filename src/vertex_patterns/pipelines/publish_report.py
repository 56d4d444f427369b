"""KFP component `publish_report`.

No `from __future__ import annotations` here: KFP reads the parameter annotations at
decoration time and needs real types, not strings.
"""

from kfp import dsl

from vertex_patterns.pipelines.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def publish_report(
    status: dsl.PipelineTaskFinalStatus,
    report_dir: str,
    run_dir_template: str,
    regions: list,  # KFP accepts only a bare `list`
    html: dsl.Output[dsl.HTML],
    markdown: dsl.Output[dsl.Markdown],
) -> None:
    """Publishes the run report of a spot training pipeline, whether the run succeeded or not.

    Use it as the exit task of a `dsl.ExitHandler` around the training steps. It reads the
    launch history, each region's metrics, goodput ledger and checkpoints, and renders: a
    timeline of attempts by region with preemptions marked, the loss curve with preemption
    and resume markers, the goodput breakdown and the checkpoint replicas with their lag. A
    run that failed early (no history yet, no checkpoints) still gets a report of what exists,
    naming what is missing. Turn KFP caching off for this task.

    Args:
        status: The pipeline's final status (KFP fills it in for an exit task).
        report_dir: Where `spot_train` keeps the launch history (`history.json`, its
            `report_dir` input) and where `report.html` and `summary.json` are written.
        run_dir_template: Per-region run directory, e.g. `gs://bucket-{region}/runs/NAME`.
        regions: The regions the launch was given, in order of preference.
        html: The report page (plots drawn as inline SVG).
        markdown: The same figures as Markdown tables.

    Raises:
        StorageError: `report_dir` could not be written (the outputs are written first).
    """
    from vertex_patterns.report import publish_report as publish

    base = report_dir.rstrip("/")
    report = publish(f"{base}/history.json", run_dir_template, list(regions),
                     state=status.state, error=status.error_message or None)
    with open(html.path, "w") as f:
        f.write(report.html)
    with open(markdown.path, "w") as f:
        f.write(report.markdown)
    report.save(base)
