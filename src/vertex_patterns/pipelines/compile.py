"""`vertex-patterns compile`: regenerate components/*.yaml and pipelines/*.json.

Both are what `compile_all` writes; the tests compare a fresh compile with what is checked
in. `--image` points every component (and the trainer image's default) at a user's registry;
without it the image is the package version's (`pipelines.image.IMAGE`), never read from the
environment.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable
from typing import Any

from kfp import compiler

from vertex_patterns.errors import ConfigError
from vertex_patterns.pipelines.cost_report import cost_report
from vertex_patterns.pipelines.data_replication import data_replication
from vertex_patterns.pipelines.dr_drill import dr_drill
from vertex_patterns.pipelines.dr_drill_steps import dr_report, dr_restore
from vertex_patterns.pipelines.fan_out_checkpoints import fan_out_checkpoints
from vertex_patterns.pipelines.health_check import health_check
from vertex_patterns.pipelines.health_incident import health_incident
from vertex_patterns.pipelines.image import IMAGE
from vertex_patterns.pipelines.publish_report import publish_report
from vertex_patterns.pipelines.replicate_data import replicate_data
from vertex_patterns.pipelines.spot_train import spot_train
from vertex_patterns.pipelines.spot_training import spot_training
from vertex_patterns.pipelines.verify_checkpoints import verify_checkpoints
from vertex_patterns.pipelines.verify_replicas import verify_replicas
from vertex_patterns.runs.params import check_parameters

COMPONENTS: dict[str, Callable[..., Any]] = {
    "replicate_data": replicate_data,
    "verify_replicas": verify_replicas,
    "fan_out_checkpoints": fan_out_checkpoints,
    "verify_checkpoints": verify_checkpoints,
    "spot_train": spot_train,
    "dr_restore": dr_restore,
    "dr_report": dr_report,
    "publish_report": publish_report,
    "cost_report": cost_report,
    "health_check": health_check,
    "health_incident": health_incident,
}

PIPELINES: dict[str, Callable[..., Any]] = {
    "spot_training": spot_training,
    "data_replication": data_replication,
    "dr_drill": dr_drill,
}

# What a user must give that has no default: used at compile time to check that the
# defaults make a valid run (the README's examples use the same shapes).
EXAMPLE_PARAMETERS: dict[str, dict[str, Any]] = {
    "spot_training": {
        "project": "my-project",
        "data_source_uri": "gs://my-data-us-central1/datasets/train",
        "data_replica_uris": ["gs://my-data-us-east1/datasets/train",
                              "gs://my-data-europe-west4/datasets/train"],
        "run_dir_template": "gs://my-ckpt-{region}/runs/digits",
        "report_dir": "gs://my-ckpt-us-central1/reports/digits",
    },
    "data_replication": {
        "source_uri": "gs://my-data-us-central1/datasets/train",
        "replica_uris": ["gs://my-data-us-east1/datasets/train"],
    },
    "dr_drill": {
        "project": "my-project", "backup_region": "us-east1",
        "primary_checkpoint_dir": "gs://my-ckpt-us-central1/runs/digits/checkpoints",
        "backup_checkpoint_dir": "gs://my-ckpt-us-east1/runs/digits/checkpoints",
        "drill_run_dir": "gs://my-ckpt-us-east1/drills/digits-1",
    },
}


def check_image(image: str) -> None:
    """Raises ConfigError unless `image` is a container image reference."""
    from vertex_patterns.emulators.vertex.images import is_valid_reference

    if not is_valid_reference(image.replace("{region}", "region")):
        raise ConfigError(f"--image {image!r} is not a container image reference, e.g. "
                          "us-docker.pkg.dev/PROJECT/REPO/vertex-patterns-python:0.1.0")


def _compile(func: Callable[..., Any], path: str, image: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, os.path.basename(path))
        with warnings.catch_warnings():  # JSON output is what Vertex AI's SDK submits
            warnings.simplefilter("ignore", DeprecationWarning)
            compiler.Compiler().compile(func, out)
        with open(out, encoding="utf-8") as f:
            text = f.read()
    if image != IMAGE:
        text = text.replace(IMAGE, image)
    tmp_path = f"{path}.tmp"
    with open(tmp_path, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp_path, path)


def compile_all(output_root: str, image: str = IMAGE) -> list[str]:
    """Compiles every component and pipeline under `output_root`, checking each pipeline's
    defaults with the example parameters.

    Args:
        output_root: Where `components/` and `pipelines/` are written.
        image: The image every component runs in.

    Returns:
        The paths written.

    Raises:
        ConfigError: A bad image, or a pipeline whose defaults do not make a valid run.
    """
    check_image(image)
    written = []
    comp_dir = os.path.join(output_root, "components")
    pipe_dir = os.path.join(output_root, "pipelines")
    os.makedirs(comp_dir, exist_ok=True)
    os.makedirs(pipe_dir, exist_ok=True)
    for name, component in COMPONENTS.items():
        path = os.path.join(comp_dir, f"{name}.yaml")
        _compile(component, path, image)
        written.append(path)
    for name, pipeline in PIPELINES.items():
        path = os.path.join(pipe_dir, f"{name}.json")
        _compile(pipeline, path, image)
        with open(path, encoding="utf-8") as f:
            check_parameters(json.load(f), EXAMPLE_PARAMETERS[name])
        written.append(path)
    return written
