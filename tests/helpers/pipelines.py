"""Small KFP pipelines for the pipeline-execution tests (no `from __future__ import
annotations`: KFP reads real annotations). Components skip installing kfp, as ours do."""

from kfp import compiler, dsl


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def produce(text: str, metrics: dsl.Output[dsl.Metrics],
            report: dsl.Output[dsl.Markdown]) -> str:
    metrics.log_metric("length", len(text))
    with open(report.path, "w") as f:
        f.write(f"# report on {text}")
    return text.upper()


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def consume(text: str) -> str:
    return f"got {text}"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def boom(message: str) -> str:
    raise RuntimeError(message)


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def final_state(status: dsl.PipelineTaskFinalStatus) -> str:
    return status.state


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def sleeper(pid_file: str, seconds: int) -> None:
    import os
    import time

    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)


@dsl.component(base_image="gcr.io/someone/custom-image:1", install_kfp_package=False)
def custom_image_task() -> str:
    return "never runs"


@dsl.pipeline(name="ok-pipeline")
def ok_pipeline(text: str = "hello", times: int = 2) -> None:
    first = produce(text=text)
    consume(text=first.outputs["Output"])
    with dsl.If(times > 1), dsl.ParallelFor(["a", "b"]) as item:
        consume(text=item)


@dsl.pipeline(name="failing-pipeline")
def failing_pipeline(message: str = "the data is gone") -> None:
    exit_task = final_state()
    with dsl.ExitHandler(exit_task):
        failed = boom(message=message)
        consume(text=failed.output)


@dsl.pipeline(name="sleepy-pipeline")
def sleepy_pipeline(pid_file: str, seconds: int = 120) -> None:
    sleeper(pid_file=pid_file, seconds=seconds)


@dsl.pipeline(name="custom-image-pipeline")
def custom_image_pipeline() -> None:
    custom_image_task()


def compile_to(pipeline, path: str) -> str:
    """Compiles `pipeline` to `path` (JSON) and returns the path."""
    compiler.Compiler().compile(pipeline, path)
    return path
