"""A pipeline that branches on `health_check`'s verdict with `dsl.If`.

No `from __future__ import annotations`: KFP needs real annotations.
"""

from kfp import dsl

from vertex_patterns.pipelines.health_check import health_check


@dsl.component(base_image="python:3.11")
def react(verdict: str) -> str:
    """Stands in for paging someone or cancelling the job."""
    return f"paged on {verdict}"


@dsl.pipeline
def watch(run_dir: str) -> str:
    """Checks the run; reacts only when the verdict is critical."""
    check = health_check(run_dir=run_dir, rpo="critical")
    with dsl.If(check.outputs["Output"] == "critical"):
        react(verdict=check.outputs["Output"])
    return check.outputs["Output"]
