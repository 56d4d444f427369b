"""KFP component `health_check` under kfp.local: the verdict as a return value that `dsl.If`
can branch on, a Markdown report and metrics."""

from __future__ import annotations

from pathlib import Path

from helpers.health_runs import write_run


class TestHealthCheckComponent:
    """The component returns the verdict and writes its report; a critical run does not
    fail the task (the pipeline branches on the verdict instead)."""

    def test_healthy_run(self, tmp_path, kfp_local) -> None:
        from vertex_patterns.pipelines.health_check import health_check

        run = str(tmp_path / "run")
        write_run(run, [2.0] * 30, completed=True)
        task = health_check(run_dir=run)
        assert task.outputs["Output"] == "healthy"
        assert task.outputs["metrics"].metadata["verdict_level"] == 0
        assert task.outputs["metrics"].metadata["steps_seen"] == 30
        assert "**healthy**" in Path(task.outputs["report"].path).read_text()

    def test_critical_run_branches_with_dsl_if(self, tmp_path, kfp_local) -> None:
        from helpers.health_pipeline import watch

        run = str(tmp_path / "run")
        write_run(run, [2.0] * 30 + [float("nan")])
        result = watch(run_dir=run)
        assert result.output == "critical"
        ran = {p.name for p in Path(kfp_local).rglob("*") if p.is_dir()}
        assert any(name.startswith("react") for name in ran), ran
