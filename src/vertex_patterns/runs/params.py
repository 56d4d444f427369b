"""Pipeline parameters: parsed, typed and validated before anything is submitted.

Plain Python (no kfp): `vertex-patterns submit`/`schedule create`/`run` and the compile step
all call `check_parameters`, so a bad value is one line and exit 2 at compile and at submit
time instead of a failed task an hour later. Per-pipeline rules reuse the launcher's own
checks (`JobSpec`, `LaunchPolicy`: regions, machine types, accelerators, strategies).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from vertex_patterns.errors import ConfigError
from vertex_patterns.storage.uri import parse_uri

_TYPES: dict[str, tuple[type, ...]] = {
    "STRING": (str,), "NUMBER_INTEGER": (int,), "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": (bool,), "LIST": (list,), "STRUCT": (dict,),
}


def declared_parameters(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A compiled PipelineSpec's root parameters: name -> {parameterType, defaultValue?}."""
    params: dict[str, dict[str, Any]] = (
        spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {}))
    return params


def parse_assignment(text: str, declared: Mapping[str, Mapping[str, Any]]) -> tuple[str, Any]:
    """``k=v`` from the command line, typed by the parameter's declared type.

    Strings are taken as they are; numbers, booleans, lists and structs are JSON
    (``--param regions='["us-central1","us-east1"]'``).

    Raises:
        ConfigError: No ``=``, an unknown name, or a value that does not parse as its type.
    """
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ConfigError(f"--param {text!r}: expected NAME=VALUE")
    if name not in declared:
        raise ConfigError(f"--param {name}: the pipeline has no such parameter (it has: "
                          f"{', '.join(sorted(declared))})")
    kind = declared[name].get("parameterType", "STRING")
    if kind == "STRING":
        return name, raw
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise ConfigError(f"--param {name}: {raw!r} is not a {kind} value (give JSON, e.g. "
                          f"{_EXAMPLES.get(kind, '1')})") from None
    return name, value


_EXAMPLES = {"NUMBER_INTEGER": "3", "NUMBER_DOUBLE": "0.5", "BOOLEAN": "true",
             "LIST": '\'["a","b"]\'', "STRUCT": '\'{"k":"v"}\''}


def check_parameters(spec: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """All parameter values (defaults filled in), checked against the spec and the
    pipeline's own rules.

    Returns:
        The complete values.

    Raises:
        ConfigError: Unknown, missing or mistyped parameters, or a value the pipeline's rules
            refuse; one line naming the parameter.
    """
    declared = declared_parameters(spec)
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ConfigError(f"unknown parameter {unknown[0]} (the pipeline has: "
                          f"{', '.join(sorted(declared))})")
    values: dict[str, Any] = {}
    for name, definition in declared.items():
        if name in given:
            values[name] = given[name]
        elif "defaultValue" in definition:
            values[name] = definition["defaultValue"]
        elif not definition.get("isOptional"):
            raise ConfigError(f"parameter {name} is required: pass --param {name}=VALUE")
        kind = definition.get("parameterType", "STRING")
        if name in values and not _is(values[name], kind):
            raise ConfigError(f"parameter {name}: {values[name]!r} is not a {kind}")
    rule = RULES.get(spec.get("pipelineInfo", {}).get("name", ""))
    if rule is not None:
        rule(values)
    return values


def _is(value: Any, kind: str) -> bool:
    if kind in ("NUMBER_INTEGER", "NUMBER_DOUBLE") and isinstance(value, bool):
        return False
    if kind == "NUMBER_INTEGER" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(kind, (object,)))


def _uri(name: str, value: str) -> None:
    try:
        parse_uri(value)
    except ConfigError as exc:
        raise ConfigError(f"parameter {name}: {exc}") from None


def _uris(name: str, values: list[Any]) -> None:
    if not values or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"parameter {name}: give a non-empty list of URIs")
    for v in values:
        _uri(name, v)


def _launch(values: Mapping[str, Any], regions: list[Any], command: list[Any],
            template: str) -> None:
    """The launcher's own checks, as `spot_train` will make them at run time."""
    from vertex_patterns.launcher.spec import JobSpec, LaunchPolicy, parse_accelerator

    if not regions or not all(isinstance(r, str) for r in regions):
        raise ConfigError("parameter regions: give a non-empty list of region names")
    if not command or not all(isinstance(c, str) for c in command):
        raise ConfigError("parameter train_command: give the trainer's command as a list")
    accelerator = values.get("accelerator", "")
    kind, count = parse_accelerator(accelerator) if accelerator else (None, 0)
    JobSpec(display_name="check", image=values["trainer_image"], command=tuple(command),
            machine_type=values["machine_type"], accelerator_type=kind,
            accelerator_count=count, strategy=values.get("strategy", "SPOT"))
    LaunchPolicy(project=values["project"], regions=tuple(regions),
                 run_dir_template=template, failover=values.get("failover",
                                                                "EAGER_NEXT_REGION"),
                 max_attempts=int(values.get("max_attempts", 10)),
                 poll_seconds=float(values.get("poll_seconds", 15.0)))


def _spot_training(values: Mapping[str, Any]) -> None:
    template = values["run_dir_template"]
    if "{region}" not in template:
        raise ConfigError("parameter run_dir_template must contain {region}, e.g. "
                          "gs://my-ckpt-{region}/runs/NAME: each region writes its own")
    _uri("run_dir_template", template.replace("{region}", "r"))
    _uri("data_source_uri", values["data_source_uri"])
    _uris("data_replica_uris", values["data_replica_uris"])
    _uri("report_dir", values["report_dir"])
    if values.get("rpo_tier", "production") not in ("research", "production", "critical"):
        raise ConfigError(f"parameter rpo_tier {values['rpo_tier']!r}: use research, "
                          "production or critical")
    _launch(values, values["regions"], values["train_command"], template)


def _data_replication(values: Mapping[str, Any]) -> None:
    _uri("source_uri", values["source_uri"])
    _uris("replica_uris", values["replica_uris"])
    if values["source_uri"] in values["replica_uris"]:
        raise ConfigError("parameter replica_uris: the source cannot be its own replica")
    if int(values.get("workers", 8)) < 1:
        raise ConfigError("parameter workers must be at least 1")


def _dr_drill(values: Mapping[str, Any]) -> None:
    for name in ("primary_checkpoint_dir", "backup_checkpoint_dir", "drill_run_dir"):
        _uri(name, values[name])
    if int(values.get("extra_steps", 1)) < 1:
        raise ConfigError("parameter extra_steps must be at least 1")
    command = values["train_command"]
    if not any("{max_steps}" in str(c) for c in command):
        raise ConfigError("parameter train_command needs a {max_steps} placeholder (the "
                          "restored step + extra_steps)")
    _launch(values, [values["backup_region"]], command, values["drill_run_dir"])


RULES: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "spot-training": _spot_training,
    "data-replication": _data_replication,
    "dr-drill": _dr_drill,
}
"""Per-pipeline checks, by the compiled pipeline's name."""
