"""Create or update the rendered resources through the Google Cloud client libraries.

Each resource is matched by display name (log-based metrics by their name) and compared with
what is there: equal -> `unchanged`, different -> `updated` (the whole resource is replaced),
missing -> `created`. "Equal" means every field we render has the same value after both sides
went through the API type, so fields the server adds (names, etags, creation records, a log
metric's filled-in descriptor) never count as a change, and a second apply changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format

from vertex_patterns.errors import ConfigError, VertexPatternsError
from vertex_patterns.formatting import format_table
from vertex_patterns.monitoring.render import Resource, api_type, parse_as


class ApplyError(VertexPatternsError):
    """An API call of `apply` failed; the message names the resource and the API's error."""


@dataclass
class Clients:
    """The four API clients `apply` talks to (tests point them at a loopback server).

    Attributes:
        alert_policies: `monitoring_v3.AlertPolicyServiceClient`.
        log_metrics: `logging_v2.services.metrics_service_v2.MetricsServiceV2Client`.
        dashboards: `monitoring_dashboard_v1.DashboardsServiceClient`.
        budgets: `billing.budgets_v1.BudgetServiceClient`.
    """

    alert_policies: Any
    log_metrics: Any
    dashboards: Any
    budgets: Any


def default_clients() -> Clients:
    """Clients with Application Default Credentials and the public endpoints.

    Raises:
        ConfigError: No Application Default Credentials.
    """
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import monitoring_dashboard_v1, monitoring_v3
    from google.cloud.billing import budgets_v1
    from google.cloud.logging_v2.services.metrics_service_v2 import MetricsServiceV2Client

    try:
        google.auth.default()
    except DefaultCredentialsError:
        raise ConfigError("no Google Cloud credentials: run `gcloud auth application-default "
                          "login` or set GOOGLE_APPLICATION_CREDENTIALS") from None
    return Clients(alert_policies=monitoring_v3.AlertPolicyServiceClient(),
                   log_metrics=MetricsServiceV2Client(),
                   dashboards=monitoring_dashboard_v1.DashboardsServiceClient(),
                   budgets=budgets_v1.BudgetServiceClient())


@dataclass
class ApplyReport:
    """What `apply` did: (kind, key, action, name) rows; action created|updated|unchanged."""

    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def count(self, action: str) -> int:
        """Rows with `action`."""
        return sum(1 for row in self.rows if row[2] == action)

    def to_dict(self) -> dict[str, Any]:
        """`{"resources": [{"kind", "key", "action", "name"}], "created", "updated",
        "unchanged"}`."""
        return {"resources": [dict(zip(("kind", "key", "action", "name"), row, strict=True))
                              for row in self.rows],
                **{a: self.count(a) for a in ("created", "updated", "unchanged")}}

    def to_table(self) -> str:
        """One row per resource and a count line."""
        lines = format_table(["action", "kind", "resource"],
                             [[a, k, key] for k, key, a, _ in self.rows], left={0, 1, 2})
        lines.append(f"{self.count('created')} created, {self.count('updated')} updated, "
                     f"{self.count('unchanged')} unchanged")
        return "\n".join(lines) + "\n"


def canonical(kind: str, message: Any) -> dict[str, Any]:
    """`message` (or a JSON body) as the API's canonical JSON dict."""
    cls = api_type(kind)
    if isinstance(message, dict):
        message = parse_as(kind, message)
    return json_format.MessageToDict(cls.pb(message))


def covers(actual: Any, wanted: Any) -> bool:
    """Whether `actual` has every field of `wanted` with the same value (lists: same length,
    element by element)."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            k in actual and covers(actual[k], v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return isinstance(actual, list) and len(actual) == len(wanted) and all(
            covers(a, w) for a, w in zip(actual, wanted, strict=True))
    return bool(actual == wanted)


class _Api:
    """list / create / update for one kind, in the client library's own calls."""

    def __init__(self, kind: str, listing: Callable[[], list[Any]],
                 create: Callable[[Any], Any], update: Callable[[Any, Any], Any],
                 key: Callable[[Any], str]) -> None:
        self.kind, self.listing, self.create, self.update, self.key = \
            kind, listing, create, update, key


def _apis(clients: Clients, project: str, billing_account: str | None) -> dict[str, _Api]:
    from google.cloud import monitoring_dashboard_v1

    parent = f"projects/{project}"

    def update_policy(old: Any, new: Any) -> Any:
        new.name = old.name
        return clients.alert_policies.update_alert_policy(alert_policy=new)

    def update_metric(old: Any, new: Any) -> Any:
        return clients.log_metrics.update_log_metric(
            metric_name=f"{parent}/metrics/{new.name}", metric=new)

    def update_dashboard(old: Any, new: Any) -> Any:
        new.name, new.etag = old.name, old.etag
        return clients.dashboards.update_dashboard(
            request=monitoring_dashboard_v1.UpdateDashboardRequest(dashboard=new))

    def update_budget(old: Any, new: Any) -> Any:
        new.name, new.etag = old.name, old.etag
        return clients.budgets.update_budget(budget=new)

    apis = {
        "alert_policy": _Api(
            "alert_policy",
            lambda: list(clients.alert_policies.list_alert_policies(name=parent)),
            lambda new: clients.alert_policies.create_alert_policy(
                name=parent, alert_policy=new),
            update_policy, lambda p: p.display_name),
        "log_metric": _Api(
            "log_metric", lambda: list(clients.log_metrics.list_log_metrics(parent=parent)),
            lambda new: clients.log_metrics.create_log_metric(parent=parent, metric=new),
            update_metric, lambda m: m.name),
        "dashboard": _Api(
            "dashboard", lambda: list(clients.dashboards.list_dashboards(parent=parent)),
            lambda new: clients.dashboards.create_dashboard(
                request=monitoring_dashboard_v1.CreateDashboardRequest(parent=parent,
                                                                       dashboard=new)),
            update_dashboard, lambda d: d.display_name),
    }
    if billing_account is not None:
        account = f"billingAccounts/{billing_account}"
        apis["budget"] = _Api(
            "budget", lambda: list(clients.budgets.list_budgets(parent=account)),
            lambda new: clients.budgets.create_budget(parent=account, budget=new),
            update_budget, lambda b: b.display_name)
    return apis


def apply(rendered: list[Resource], *, project: str, billing_account: str | None,
          clients: Clients) -> ApplyReport:
    """Creates or updates every resource; a second call with the same input changes nothing.

    Args:
        rendered: From `render` or `read_rendered`.
        project: The project the alert policies, log metrics and dashboard live in.
        billing_account: Where the budget lives (required when a budget is rendered).
        clients: The API clients.

    Returns:
        One row per resource: created, updated or unchanged.

    Raises:
        ConfigError: A budget without a billing account, or two existing resources with
            the same display name (apply would not know which one to update).
        ApplyError: An API call failed (the resources before it are applied).
    """
    from google.api_core.exceptions import GoogleAPICallError

    try:
        return _apply(rendered, project=project, billing_account=billing_account,
                      clients=clients)
    except GoogleAPICallError as exc:
        raise ApplyError(f"monitoring apply: {exc}") from exc


def _apply(rendered: list[Resource], *, project: str, billing_account: str | None,
           clients: Clients) -> ApplyReport:
    if any(r.kind == "budget" for r in rendered) and billing_account is None:
        raise ConfigError("a budget is rendered: give --billing-account")
    apis = _apis(clients, project, billing_account)
    existing: dict[str, dict[str, list[Any]]] = {}
    report = ApplyReport()
    for resource in rendered:
        api = apis[resource.kind]
        if resource.kind not in existing:
            by_key: dict[str, list[Any]] = {}
            for item in api.listing():
                by_key.setdefault(api.key(item), []).append(item)
            existing[resource.kind] = by_key
        matches = existing[resource.kind].get(resource.key, [])
        if len(matches) > 1:
            raise ConfigError(f"{len(matches)} {resource.kind} resources are named "
                              f"{resource.key!r}: delete the duplicates, then apply again")
        desired = parse_as(resource.kind, resource.body)
        if not matches:
            created = api.create(desired)
            report.rows.append((resource.kind, resource.key, "created", _name(created)))
            continue
        old = matches[0]
        if covers(canonical(resource.kind, old), canonical(resource.kind, desired)):
            report.rows.append((resource.kind, resource.key, "unchanged", _name(old)))
            continue
        updated = api.update(old, desired)
        report.rows.append((resource.kind, resource.key, "updated", _name(updated)))
    return report


def _name(message: Any) -> str:
    return str(getattr(message, "name", ""))


def to_json(report: ApplyReport) -> str:
    """The report as indented JSON."""
    return json.dumps(report.to_dict(), indent=2) + "\n"
