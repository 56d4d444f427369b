"""`vertex-patterns compile`: regenerate components/*.yaml and pipelines/*.json."""

from __future__ import annotations

import os

from kfp import compiler

from vertex_patterns.pipelines.fan_out_checkpoints import fan_out_checkpoints
from vertex_patterns.pipelines.health_check import health_check
from vertex_patterns.pipelines.replicate_data import replicate_data
from vertex_patterns.pipelines.spot_train import spot_train
from vertex_patterns.pipelines.verify_checkpoints import verify_checkpoints

COMPONENTS = {
    "replicate_data": replicate_data,
    "fan_out_checkpoints": fan_out_checkpoints,
    "verify_checkpoints": verify_checkpoints,
    "spot_train": spot_train,
    "health_check": health_check,
}


def compile_all(output_root: str) -> list[str]:
    """Compiles every component (and pipeline) under `output_root`.

    Returns:
        The paths written.
    """
    written = []
    comp_dir = os.path.join(output_root, "components")
    os.makedirs(comp_dir, exist_ok=True)
    for name, component in COMPONENTS.items():
        path = os.path.join(comp_dir, f"{name}.yaml")
        compiler.Compiler().compile(component, path)
        written.append(path)
    return written
