"""The emulator's resources in memory: naming, lookup, list filters and pages.

One `ResourceStore` holds a collection per resource kind (customJobs, pipelineJobs, schedules);
each entry is a protobuf message plus whatever the service keeps beside it. A single lock
guards every message: services mutate them only while holding `store.lock`.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from vertex_patterns.emulators.vertex.codec import to_dict
from vertex_patterns.emulators.vertex.errors import already_exists, invalid_argument, not_found

T = TypeVar("T")

_CLAUSE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(!=|=)\s*(.+?)\s*$")
_SNAKE = re.compile(r"_([a-z0-9])")


def numeric_id() -> str:
    """A 19-digit resource ID, the form Vertex AI gives custom jobs and schedules."""
    return str(10**18 + secrets.randbelow(9 * 10**18))


@dataclass
class Entry(Generic[T]):
    """One stored resource: its message and the service's extra state."""

    message: Any
    extra: T
    order: int = 0


@dataclass
class Collection(Generic[T]):
    """The resources of one kind, keyed by full resource name."""

    kind: str
    lock: threading.RLock
    entries: dict[str, Entry[T]] = field(default_factory=dict)
    _counter: int = 0

    def add(self, name: str, message: Any, extra: T) -> Entry[T]:
        """Stores a new resource.

        Raises:
            ApiError: 409 when `name` exists.
        """
        with self.lock:
            if name in self.entries:
                raise already_exists(name)
            self._counter += 1
            entry = Entry(message=message, extra=extra, order=self._counter)
            self.entries[name] = entry
            return entry

    def get(self, name: str) -> Entry[T]:
        """The resource called `name`.

        Raises:
            ApiError: 404 when there is none.
        """
        with self.lock:
            entry = self.entries.get(name)
            if entry is None:
                raise not_found(name)
            return entry

    def delete(self, name: str) -> Entry[T]:
        """Removes and returns `name` (404 when absent)."""
        with self.lock:
            entry = self.get(name)
            del self.entries[name]
            return entry

    def under(self, parent: str) -> Iterator[Entry[T]]:
        """Resources directly below `parent` (``projects/P/locations/L``), oldest first."""
        prefix = f"{parent}/{self.kind}/"
        with self.lock:
            found = [e for n, e in self.entries.items() if n.startswith(prefix)]
        yield from sorted(found, key=lambda e: e.order)


class ResourceStore:
    """All collections, sharing one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.custom_jobs: Collection[Any] = Collection("customJobs", self.lock)
        self.pipeline_jobs: Collection[Any] = Collection("pipelineJobs", self.lock)
        self.schedules: Collection[Any] = Collection("schedules", self.lock)


def _camel(name: str) -> str:
    return _SNAKE.sub(lambda m: m.group(1).upper(), name)


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _clauses(expression: str) -> list[tuple[list[str], str, str]]:
    """The (field path, operator, value) clauses of a filter; 400 when it does not parse."""
    clauses = []
    for part in re.split(r"\s+AND\s+", expression, flags=re.IGNORECASE):
        m = _CLAUSE.match(part)
        if not m or re.search(r"\s(OR|NOT)\s", f" {part} ", flags=re.IGNORECASE):
            raise invalid_argument(f"Unsupported filter: {expression!r} (the emulator "
                                   "supports field=value and field!=value joined by AND)")
        key, op, value = m.groups()
        if value[0] in "\"'":
            if len(value) < 2 or value[-1] != value[0] or value[0] in value[1:-1]:
                raise invalid_argument(f"Invalid filter {expression!r}: unbalanced quotes in "
                                       f"{value}")
            value = value[1:-1]
        elif any(c in value for c in "\"'() "):
            raise invalid_argument(f"Invalid filter {expression!r}: quote the value {value}")
        clauses.append((key.split("."), op, value))
    return clauses


def check_filter(expression: str, message_type: Any) -> None:
    """Checks a list filter against the fields of `message_type` (a proto-plus type).

    A filter naming a field the resource does not have, or an enum value its field does not
    have, would match nothing; Vertex AI answers 400 instead, and so does the emulator.

    Raises:
        ApiError: 400 naming the field or value.
    """
    if not expression.strip():
        return
    for path, _op, value in _clauses(expression.strip()):
        descriptor = message_type.pb().DESCRIPTOR
        for i, part in enumerate(path):
            if descriptor is None:  # below a map such as labels: the keys are user strings
                break
            field = descriptor.fields_by_name.get(_snake(part)) or next(
                (f for f in descriptor.fields if f.json_name == part), None)
            if field is None:
                raise invalid_argument(
                    f"Unsupported field in filter {expression!r}: {'.'.join(path[:i + 1])} "
                    f"is not a field of {message_type.__name__}.")
            if field.enum_type is not None and i == len(path) - 1 and \
                    value not in field.enum_type.values_by_name:
                raise invalid_argument(
                    f"Invalid filter {expression!r}: {value!r} is not a value of "
                    f"{field.enum_type.name}.")
            is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
            descriptor = None if is_map else field.message_type


def parse_filter(expression: str) -> Callable[[dict[str, Any]], bool]:
    """A predicate over a resource's JSON for a list `filter` of ``field=value`` clauses.

    Supports ``=`` and ``!=``, values quoted or bare, clauses joined by AND; field names in
    snake_case or camelCase, ``labels.KEY`` included (what the SDK's list helpers send).

    Raises:
        ApiError: 400 for anything else (OR, NOT, comparisons, functions, unbalanced quotes).
    """
    expression = expression.strip()
    if not expression:
        return lambda _resource: True
    clauses = _clauses(expression)

    def matches(resource: dict[str, Any]) -> bool:
        for path, op, value in clauses:
            node: Any = resource
            for i, part in enumerate(path):
                if not isinstance(node, dict):
                    node = None
                    break
                # Label keys are user strings: only the field names before them are camelCased.
                under_labels = i > 0 and path[i - 1] == "labels"
                node = node.get(part if under_labels else _camel(part))
            actual = "" if node is None else str(node)
            if (actual == value) != (op == "="):
                return False
        return True

    return matches


def page(
    messages: list[Any],
    *,
    filter_expression: str,
    page_size: int,
    page_token: str,
) -> tuple[list[Any], str]:
    """Applies a filter and cuts one page; returns the page and the next page token ("")."""
    predicate = parse_filter(filter_expression)
    kept = [m for m in messages if predicate(to_dict(m))]
    try:
        start = int(page_token) if page_token else 0
    except ValueError:
        raise invalid_argument(f"Invalid page_token {page_token!r}") from None
    size = page_size if page_size > 0 else 100
    chunk = kept[start:start + size]
    next_token = str(start + size) if start + size < len(kept) else ""
    return chunk, next_token


def cancel_and_join(runners: list[Any], *, grace_seconds: float) -> None:
    """Asks every live job runner to cancel (its processes get `grace_seconds` between SIGTERM
    and SIGKILL), then waits for each; what `stop` does for custom and pipeline jobs alike."""
    for runner in runners:
        if runner.is_alive():
            runner.request_cancel(grace_seconds=grace_seconds)
    for runner in runners:
        runner.join(timeout=grace_seconds + 10)
