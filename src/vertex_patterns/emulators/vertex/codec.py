"""JSON <-> Vertex AI protos: request bodies are parsed by the SDK's own message types, so an
unknown field or a malformed value is rejected exactly where Vertex AI would reject it.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from google.protobuf import json_format

from vertex_patterns.emulators.vertex.errors import invalid_argument

_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]+)" at "([^"]+)"')
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def snake_case(path: str) -> str:
    """``jobSpec.workerPoolSpecs`` -> ``job_spec.worker_pool_specs``."""
    return _CAMEL.sub(lambda m: "_" + m.group(1).lower(), path)


def parse(body: Any, message_type: Any, request_field: str) -> Any:
    """Parses a JSON body into a fresh protobuf message of `message_type`.

    Args:
        body: The decoded JSON request body.
        message_type: A proto-plus type, e.g. `aiplatform_v1.types.CustomJob`.
        request_field: The request's field name in errors, e.g. ``custom_job``.

    Raises:
        ApiError: 400 with the message the Google API front end gives for bad JSON.
    """
    if not isinstance(body, dict):
        raise invalid_argument("Invalid JSON payload received. Expected an object.")
    message = message_type.pb()()
    try:
        json_format.ParseDict(body, message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        text = str(exc)
        unknown = _UNKNOWN_FIELD.search(text)
        if unknown:
            name, where = unknown.groups()
            path = snake_case(where.split(".", 1)[1]) if "." in where else ""
            at = f"{request_field}.{path}" if path else request_field
            raise invalid_argument(
                f"Invalid JSON payload received. Unknown name \"{name}\" at '{at}': "
                "Cannot find field.") from None
        detail = text.split(": ")[-1] if ": " in text else text
        raise invalid_argument(f"Invalid JSON payload received. {detail}") from None
    return message


def to_json(message: Any, *, enums_as_ints: bool = False) -> dict[str, Any]:
    """A message as Vertex AI's JSON: camelCase names, int64 as strings, RFC 3339 times."""
    out: dict[str, Any] = json_format.MessageToDict(message,
                                                    use_integers_for_enums=enums_as_ints)
    return out


def to_dict(message: Any) -> dict[str, Any]:
    """A message as a plain dict with camelCase names and enum names (for internal reads)."""
    out: dict[str, Any] = json_format.MessageToDict(message)
    return out


def to_snake_dict(message: Any) -> dict[str, Any]:
    """A message with proto field names (snake_case), as `CLUSTER_SPEC["job"]` carries it."""
    out: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return out


def stamp(timestamp: Any, when: dt.datetime | None = None) -> None:
    """Sets a google.protobuf.Timestamp field to `when` (now, UTC, by default)."""
    timestamp.FromDatetime(when or dt.datetime.now(dt.timezone.utc))


def seconds(duration: Any) -> float:
    """A google.protobuf.Duration field in seconds (0.0 when unset)."""
    return float(duration.seconds) + duration.nanos / 1e9
