"""A one-step KFP pipeline for Vertex AI emulator tests (no `from __future__ import
annotations`: KFP reads real annotations)."""

from kfp import compiler, dsl


@dsl.component(base_image="python:3.11")
def echo(text: str) -> str:
    return text


@dsl.pipeline(name="tiny-pipeline")
def tiny(text: str, times: int = 1) -> None:
    echo(text=text)


def compile_to(path: str) -> str:
    """Compiles the pipeline to `path` (JSON) and returns the path."""
    compiler.Compiler().compile(tiny, path)
    return path
