"""KFP component `health_incident`.

No `from __future__ import annotations` here: KFP reads the parameter annotations at
decoration time and needs real types, not strings.
"""

from kfp import dsl

from vertex_patterns.pipelines.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def health_incident(report: dsl.Input[dsl.Markdown], run_dir: str) -> None:
    """Fails the pipeline on a critical health verdict, with the findings as its error.

    Put it under `dsl.If(health.outputs["Output"] == "critical")` after `health_check`: the run then
    ends FAILED with the findings in the job's error (what alerting on failed pipeline jobs
    picks up), instead of succeeding with a model that should not be used.

    Args:
        report: `health_check`'s Markdown report.
        run_dir: The run directory that was checked (named in the error).

    Raises:
        RuntimeError: Always: that is its job.
    """
    with open(report.path) as f:
        findings = f.read()
    raise RuntimeError(f"critical health verdict for {run_dir}:\n{findings}")
