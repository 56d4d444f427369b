"""A user's own pipeline reusing vertex-patterns components both ways: the compiled YAML
and the Python import (no `from __future__ import annotations`: KFP reads annotations)."""

from pathlib import Path

from kfp import compiler, components, dsl

from vertex_patterns.pipelines import verify_replicas

REPO = Path(__file__).resolve().parents[2]
replicate_data = components.load_component_from_file(
    str(REPO / "components" / "replicate_data.yaml"))


@dsl.pipeline(name="my-data-pipeline")
def my_data_pipeline(source: str, replica: str) -> None:
    copy = replicate_data(source_uri=source, destination_uris=[replica])
    copy.set_caching_options(False)
    check = verify_replicas(source_uri=source, replica_uris=[replica])
    check.after(copy)
    check.set_caching_options(False)


def compile_to(path: str) -> str:
    """Compiles the user's pipeline to `path` and returns it."""
    compiler.Compiler().compile(my_data_pipeline, path)
    return path
