"""Render the resources to one JSON file each, every one parsed as its API's own type first.

    resources = render(MonitoringConfig(project="my-project", billing_account="0123..."))
    write_rendered(resources, "monitoring/")   # alert_policies/*.json, log_metrics/*.json,
                                               # dashboard.json, budget.json
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from vertex_patterns.monitoring import resources
from vertex_patterns.monitoring.config import MonitoringConfig
from vertex_patterns.storage.local import atomic_write

KINDS = ("alert_policy", "log_metric", "dashboard", "budget")


def api_type(kind: str) -> Any:
    """The proto-plus class of `kind`: AlertPolicy, LogMetric, Dashboard, Budget."""
    if kind == "alert_policy":
        from google.cloud.monitoring_v3 import AlertPolicy
        return AlertPolicy
    if kind == "log_metric":
        from google.cloud.logging_v2.types import LogMetric
        return LogMetric
    if kind == "dashboard":
        from google.cloud.monitoring_dashboard_v1 import Dashboard
        return Dashboard
    if kind == "budget":
        from google.cloud.billing.budgets_v1 import Budget
        return Budget
    raise ValueError(f"unknown resource kind {kind!r}")


def parse_as(kind: str, body: dict[str, Any]) -> Any:
    """`body` parsed into `kind`'s API type; an unknown field or a bad value raises.

    Raises:
        json_format.ParseError: The body is not a valid message of that type.
    """
    cls = api_type(kind)
    message = cls.pb(cls())
    json_format.ParseDict(body, message, ignore_unknown_fields=False)
    return cls.wrap(message)


@dataclass(frozen=True)
class Resource:
    """One rendered resource.

    Attributes:
        kind: `alert_policy`, `log_metric`, `dashboard` or `budget`.
        key: What `apply` matches it by: the display name (the metric name for log metrics).
        path: Its file, relative to the output directory.
        body: The API's JSON.
    """

    kind: str
    key: str
    path: str
    body: dict[str, Any]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def render(config: MonitoringConfig) -> list[Resource]:
    """Every resource for `config`, each checked to parse as its API's type."""
    out = [Resource("alert_policy", p["displayName"],
                    f"alert_policies/{_slug(p['displayName'].split(':', 1)[1])}.json", p)
           for p in resources.alert_policies(config)]
    out += [Resource("log_metric", m["name"], f"log_metrics/{m['name']}.json", m)
            for m in resources.log_metrics()]
    board = resources.dashboard(config)
    out.append(Resource("dashboard", board["displayName"], "dashboard.json", board))
    budget = resources.budget(config)
    if budget is not None:
        out.append(Resource("budget", budget["displayName"], "budget.json", budget))
    for resource in out:
        parse_as(resource.kind, resource.body)
    return out


def write_rendered(rendered: list[Resource], out_dir: str) -> list[str]:
    """Writes each resource as indented JSON (sorted keys) under `out_dir`; returns the paths."""
    written = []
    for resource in rendered:
        path = os.path.join(out_dir, resource.path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_write(path) as f:
            f.write((json.dumps(resource.body, indent=2, sort_keys=True) + "\n").encode())
        written.append(path)
    return written


def read_rendered(out_dir: str) -> list[Resource]:
    """The resources `write_rendered` wrote (for `apply --from DIR`), each parsed again.

    Raises:
        ValueError: A file that is not valid JSON or not its API's type.
    """
    found = []
    for sub, kind in (("alert_policies", "alert_policy"), ("log_metrics", "log_metric")):
        folder = os.path.join(out_dir, sub)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            found.append((kind, f"{sub}/{name}"))
    for name, kind in (("dashboard.json", "dashboard"), ("budget.json", "budget")):
        if os.path.isfile(os.path.join(out_dir, name)):
            found.append((kind, name))
    out = []
    for kind, rel in found:
        with open(os.path.join(out_dir, rel)) as f:
            body = json.load(f)
        parse_as(kind, body)
        key = body["name"] if kind == "log_metric" else body["displayName"]
        out.append(Resource(kind, key, rel, body))
    return out
