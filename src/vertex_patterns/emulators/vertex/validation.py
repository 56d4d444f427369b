"""Checks Vertex AI makes on a create request beyond the JSON schema the protos enforce.

Machine types and the accelerators each takes come from the launcher's catalog
(`vertex_patterns.launcher.catalog`), so the emulator refuses what the launcher refuses; a
machine type outside its families is refused rather than guessed at. Image URIs must be
container image references (`images.is_valid_reference`).

Errors are collected and reported together, in the "List of found errors" form Vertex AI's
validator uses, with snake_case field paths from the request root (``custom_job.…``).
"""

from __future__ import annotations

import re
from typing import Any

from vertex_patterns.emulators.vertex.errors import field_errors, invalid_argument
from vertex_patterns.emulators.vertex.images import is_valid_reference
from vertex_patterns.errors import ConfigError

REQUIRED = "Required field is not set."
PIPELINE_JOB_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")


def check_custom_job(job: dict[str, Any]) -> None:
    """Validates a CustomJob (as camelCase JSON).

    Raises:
        ApiError: 400 listing every problem found.
    """
    problems: list[tuple[str, str]] = []
    if not job.get("displayName"):
        problems.append(("custom_job.display_name", REQUIRED))
    spec = job.get("jobSpec", {})
    pools = spec.get("workerPoolSpecs", [])
    if not pools:
        problems.append(("custom_job.job_spec.worker_pool_specs", REQUIRED))
    for i, pool in enumerate(pools):
        where = f"custom_job.job_spec.worker_pool_specs[{i}]"
        if not pool and i > 0:
            continue  # an unused pool: the SDK sends {} to keep later pools' positions
        problems.extend(_check_pool(pool, where))
    prefix = spec.get("baseOutputDirectory", {}).get("outputUriPrefix")
    if "baseOutputDirectory" in spec and not prefix:
        problems.append(("custom_job.job_spec.base_output_directory.output_uri_prefix",
                         REQUIRED))
    if problems:
        raise field_errors(problems)


def _check_pool(pool: dict[str, Any], where: str) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    machine = pool.get("machineSpec", {})
    if not machine.get("machineType"):
        problems.append((f"{where}.machine_spec.machine_type", REQUIRED))
    accelerator = machine.get("acceleratorType", "ACCELERATOR_TYPE_UNSPECIFIED")
    count = int(machine.get("acceleratorCount", 0))
    if accelerator != "ACCELERATOR_TYPE_UNSPECIFIED" and count <= 0:
        problems.append((f"{where}.machine_spec.accelerator_count",
                         "Must be positive when accelerator_type is set."))
    if count > 0 and accelerator == "ACCELERATOR_TYPE_UNSPECIFIED":
        problems.append((f"{where}.machine_spec.accelerator_type",
                         "Must be set when accelerator_count is positive."))
    if machine.get("machineType") and not problems:
        problems.extend(_check_machine(machine, where))
    if int(pool.get("replicaCount", 0)) < 1:
        problems.append((f"{where}.replica_count", "Must be at least 1."))
    has_container = "containerSpec" in pool
    has_package = "pythonPackageSpec" in pool
    if has_container == has_package:
        problems.append((f"{where}.task",
                         "Exactly one of container_spec or python_package_spec must be set."))
    elif has_container:
        problems.extend(_check_image(pool["containerSpec"].get("imageUri", ""),
                                     f"{where}.container_spec.image_uri"))
    else:
        package = pool["pythonPackageSpec"]
        if not package.get("pythonModule"):
            problems.append((f"{where}.python_package_spec.python_module", REQUIRED))
        problems.extend(_check_image(package.get("executorImageUri", ""),
                                     f"{where}.python_package_spec.executor_image_uri"))
    return problems


def _check_image(uri: str, where: str) -> list[tuple[str, str]]:
    if not uri:
        return [(where, REQUIRED)]
    if not is_valid_reference(uri):
        return [(where, f"Invalid image URI {uri!r}: expected a container image reference "
                        "such as us-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE:TAG.")]
    return []


def _check_machine(machine: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """The launcher's catalog decides which machine types exist and what they take."""
    from vertex_patterns.launcher.catalog import allowed_accelerators, requires_accelerator

    machine_type = machine["machineType"]
    accelerator = machine.get("acceleratorType", "ACCELERATOR_TYPE_UNSPECIFIED")
    count = int(machine.get("acceleratorCount", 0))
    try:
        allowed = allowed_accelerators(machine_type)
    except ConfigError:
        return [(f"{where}.machine_spec.machine_type",
                 f'Machine type "{machine_type}" is not supported.')]
    if accelerator == "ACCELERATOR_TYPE_UNSPECIFIED":
        if requires_accelerator(machine_type):
            ((kind, counts),) = allowed.items()
            return [(f"{where}.machine_spec.accelerator_type",
                     f'Machine type "{machine_type}" requires accelerator_type {kind} with '
                     f"accelerator_count {counts[0]}.")]
        return []
    if accelerator not in allowed:
        offer = ", ".join(sorted(allowed)) or "no accelerators"
        return [(f"{where}.machine_spec.accelerator_type",
                 f'Accelerator "{accelerator}" is not supported for machine type '
                 f'"{machine_type}" (it takes {offer}).')]
    if count not in allowed[accelerator]:
        takes = ", ".join(str(c) for c in allowed[accelerator])
        return [(f"{where}.machine_spec.accelerator_count",
                 f"{count} x {accelerator} is not supported for machine type "
                 f'"{machine_type}" (it takes {takes}).')]
    return []


def check_pipeline_job(job: dict[str, Any], root: str = "pipeline_job") -> None:
    """Validates a PipelineJob (camelCase JSON): a compiled PipelineSpec and its parameters.

    Raises:
        ApiError: 400 naming the problem.
    """
    spec = job.get("pipelineSpec")
    if not spec:
        raise field_errors([(f"{root}.pipeline_spec", REQUIRED)])
    problems: list[tuple[str, str]] = []
    if not spec.get("pipelineInfo", {}).get("name"):
        problems.append((f"{root}.pipeline_spec.pipeline_info.name", REQUIRED))
    if not spec.get("root", {}).get("dag"):
        problems.append((f"{root}.pipeline_spec.root.dag", REQUIRED))
    if not spec.get("schemaVersion"):
        problems.append((f"{root}.pipeline_spec.schema_version", REQUIRED))
    runtime = job.get("runtimeConfig", {})
    output_dir = runtime.get("gcsOutputDirectory", "")
    if not output_dir:
        problems.append((f"{root}.runtime_config.gcs_output_directory", REQUIRED))
    elif not re.match(r"^gs://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/.*)?$", output_dir):
        problems.append((f"{root}.runtime_config.gcs_output_directory",
                         f"Must be a Cloud Storage path gs://BUCKET[/PATH], got {output_dir!r}."))
    if problems:
        raise field_errors(problems)
    declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    given = {**runtime.get("parameters", {}), **runtime.get("parameterValues", {})}
    for name in given:
        if name not in declared:
            raise invalid_argument(
                f"The pipeline parameter {name} is not found in the pipeline job input "
                "definitions.")
    for name, definition in declared.items():
        optional = definition.get("isOptional") or "defaultValue" in definition
        if name not in given and not optional:
            raise invalid_argument(f"The pipeline parameter {name} is required, but no value "
                                   "was given in runtime_config.parameter_values.")
        values = runtime.get("parameterValues", {})
        if name in values and not _has_type(values[name], definition.get("parameterType", "")):
            raise invalid_argument(
                f"The value of pipeline parameter {name} does not match its type "
                f"{definition.get('parameterType')}: {values[name]!r}.")


# JSON value checks per KFP parameter type (runtime_config.parameter_values is a map of
# google.protobuf.Value, so numbers arrive as floats).
_TYPE_CHECKS: dict[str, Any] = {
    "STRING": lambda v: isinstance(v, str),
    "NUMBER_INTEGER": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    and float(v).is_integer(),
    "NUMBER_DOUBLE": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "BOOLEAN": lambda v: isinstance(v, bool),
    "LIST": lambda v: isinstance(v, list),
    "STRUCT": lambda v: isinstance(v, dict),
}


def _has_type(value: Any, parameter_type: str) -> bool:
    check = _TYPE_CHECKS.get(parameter_type)
    return check is None or bool(check(value))
