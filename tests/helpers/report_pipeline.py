"""A pipeline whose only step fails before anything is written, with `publish_report` as its
exit task (no `from __future__ import annotations`: KFP reads real annotations)."""

from kfp import dsl

from vertex_patterns.pipelines.publish_report import publish_report


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def fail_early() -> None:
    raise RuntimeError("no capacity anywhere")


@dsl.pipeline(name="report-on-failure")
def report_on_failure(report_dir: str, run_dir_template: str, regions: list) -> None:
    report = publish_report(report_dir=report_dir, run_dir_template=run_dir_template,
                            regions=regions)
    report.set_caching_options(False)
    with dsl.ExitHandler(report):
        fail_early()
