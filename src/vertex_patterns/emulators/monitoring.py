"""A loopback stand-in for the monitoring-as-code APIs, strict about what it accepts.

- gRPC (the only transport the client libraries have for these):
  `google.monitoring.v3.AlertPolicyService` and `google.logging.v2.MetricsServiceV2`.
- REST (the clients' `transport="rest"`, `api_endpoint="http://127.0.0.1:PORT"`):
  Cloud Monitoring dashboards (`/v1/projects/P/dashboards`) and Billing budgets
  (`/v1/billingAccounts/B/budgets`).

Every request is decoded into the API's own message type: a field the type does not have
fails the call (INVALID_ARGUMENT / 400), as the real service would reject it. What is created
is kept, with names and etags assigned as the services do, so `apply` run twice meets its own
first run. `writes` counts create and update calls per kind.

    with MonitoringEmulator() as emulator:
        report = apply(rendered, project="p", billing_account=None, clients=emulator.clients())
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.protobuf import json_format, unknown_fields
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

log = logging.getLogger("vertex_patterns.emulators.monitoring")


def reject_unknown(pb: Message) -> None:
    """Raises ValueError when `pb` (or a message inside it) carries fields its type lacks."""
    if len(unknown_fields.UnknownFieldSet(pb)):
        raise ValueError(f"unknown fields in {pb.DESCRIPTOR.full_name}")
    for fd, value in pb.ListFields():
        if fd.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if isinstance(value, Message):
            items = [value]
        elif hasattr(value, "values"):  # a map field: its values may be messages
            items = list(value.values())
        else:
            items = list(value)
        for item in items:
            if isinstance(item, Message):
                reject_unknown(item)


class _Store:
    """Resources by name, per kind; a lock around every change."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: dict[str, dict[Any, Any]] = {
            "alert_policy": {}, "log_metric": {}, "dashboard": {}, "budget": {},
            "time_series": {}}
        self.writes: Counter[str] = Counter()


def _grpc_handlers(store: _Store) -> list[grpc.GenericRpcHandler]:
    from google.cloud import monitoring_v3
    from google.cloud.logging_v2 import types as logging_types

    def unary(fn: Callable[[Any, grpc.ServicerContext], Any], request: Any, response: Any
              ) -> grpc.RpcMethodHandler:
        def decode(data: bytes) -> Any:
            message = request.deserialize(data)
            reject_unknown(request.pb(message))
            return message

        def call(message: Any, context: grpc.ServicerContext) -> Any:
            try:
                return fn(message, context)
            except KeyError as exc:
                context.abort(grpc.StatusCode.NOT_FOUND, f"{exc.args[0]} not found")
                raise

        return grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=decode, response_serializer=response.serialize)

    policies, metrics = store.items["alert_policy"], store.items["log_metric"]

    def list_policies(req: Any, _ctx: grpc.ServicerContext) -> Any:
        with store.lock:
            found = [p for n, p in policies.items() if n.startswith(f"{req.name}/")]
        return monitoring_v3.ListAlertPoliciesResponse(alert_policies=found,
                                                       total_size=len(found))

    def create_policy(req: Any, _ctx: grpc.ServicerContext) -> Any:
        policy = monitoring_v3.AlertPolicy(req.alert_policy)
        policy.name = f"{req.name}/alertPolicies/{uuid.uuid4().hex[:16]}"
        for i, condition in enumerate(policy.conditions):
            condition.name = f"{policy.name}/conditions/{i}"
        with store.lock:
            policies[policy.name] = policy
            store.writes["alert_policy"] += 1
        return policy

    def update_policy(req: Any, _ctx: grpc.ServicerContext) -> Any:
        policy = monitoring_v3.AlertPolicy(req.alert_policy)
        with store.lock:
            if policy.name not in policies:
                raise KeyError(policy.name)
            policies[policy.name] = policy
            store.writes["alert_policy"] += 1
        return policy

    def list_metrics(req: Any, _ctx: grpc.ServicerContext) -> Any:
        with store.lock:
            found = [m for n, m in metrics.items() if n.startswith(f"{req.parent}/")]
        return logging_types.ListLogMetricsResponse(metrics=found)

    def get_metric(req: Any, _ctx: grpc.ServicerContext) -> Any:
        with store.lock:
            return metrics[req.metric_name]

    def create_metric(req: Any, ctx: grpc.ServicerContext) -> Any:
        metric = logging_types.LogMetric(req.metric)
        key = f"{req.parent}/metrics/{metric.name}"
        with store.lock:
            if key in metrics:
                ctx.abort(grpc.StatusCode.ALREADY_EXISTS, f"{key} exists")
            # The service fills in the descriptor's type, as the real one does.
            metric.metric_descriptor.type = f"logging.googleapis.com/user/{metric.name}"
            metrics[key] = metric
            store.writes["log_metric"] += 1
        return metric

    def update_metric(req: Any, _ctx: grpc.ServicerContext) -> Any:
        metric = logging_types.LogMetric(req.metric)
        with store.lock:
            if req.metric_name not in metrics:
                raise KeyError(req.metric_name)
            metric.metric_descriptor.type = f"logging.googleapis.com/user/{metric.name}"
            metrics[req.metric_name] = metric
            store.writes["log_metric"] += 1
        return metric

    series = store.items["time_series"]

    def create_time_series(req: Any, ctx: grpc.ServicerContext) -> Any:
        from google.protobuf import empty_pb2

        accepted = []
        for ts in req.time_series:
            if len(ts.points) != 1:
                ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "one point per time series")
            key = (ts.metric.type, tuple(sorted(ts.metric.labels.items())),
                   ts.resource.type, tuple(sorted(ts.resource.labels.items())))
            end = ts.points[0].interval.end_time.timestamp()
            with store.lock:
                previous = series.get(key, [])
            if previous and end - previous[-1][0] < 5.0:
                # The real API's rule: one point per series per 5 s.
                ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "One or more points were written "
                          "more frequently than the maximum sampling period configured for "
                          "the metric")
            accepted.append((key, end, ts.points[0].value.double_value))
        with store.lock:
            for key, end, value in accepted:
                series.setdefault(key, []).append((end, value))
            store.writes["time_series"] += 1
        return empty_pb2.Empty()

    m3, lt = monitoring_v3, logging_types
    return [
        grpc.method_handlers_generic_handler("google.monitoring.v3.MetricService", {
            "CreateTimeSeries": grpc.unary_unary_rpc_method_handler(
                create_time_series,
                request_deserializer=lambda data: _strict(m3.CreateTimeSeriesRequest, data),
                response_serializer=lambda empty: empty.SerializeToString())}),
        grpc.method_handlers_generic_handler("google.monitoring.v3.AlertPolicyService", {
            "ListAlertPolicies": unary(list_policies, m3.ListAlertPoliciesRequest,
                                       m3.ListAlertPoliciesResponse),
            "CreateAlertPolicy": unary(create_policy, m3.CreateAlertPolicyRequest,
                                       m3.AlertPolicy),
            "UpdateAlertPolicy": unary(update_policy, m3.UpdateAlertPolicyRequest,
                                       m3.AlertPolicy)}),
        grpc.method_handlers_generic_handler("google.logging.v2.MetricsServiceV2", {
            "ListLogMetrics": unary(list_metrics, lt.ListLogMetricsRequest,
                                    lt.ListLogMetricsResponse),
            "GetLogMetric": unary(get_metric, lt.GetLogMetricRequest, lt.LogMetric),
            "CreateLogMetric": unary(create_metric, lt.CreateLogMetricRequest, lt.LogMetric),
            "UpdateLogMetric": unary(update_metric, lt.UpdateLogMetricRequest,
                                     lt.LogMetric)}),
    ]


def _strict(request: Any, data: bytes) -> Any:
    message = request.deserialize(data)
    reject_unknown(request.pb(message))
    return message


class _RestError(Exception):
    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code, self.status = code, status


_REST = re.compile(r"^/v1/(?P<parent>projects/[^/]+|billingAccounts/[^/]+)/"
                   r"(?P<collection>dashboards|budgets)(?:/(?P<id>[^/]+))?$")


def _rest_call(store: _Store, method: str, path: str, raw: bytes) -> Any:
    from google.cloud import monitoring_dashboard_v1
    from google.cloud.billing import budgets_v1

    match = _REST.match(urlsplit(path).path)
    if not match:
        raise _RestError(404, "NOT_FOUND", f"no route for {method} {path}")
    kind = "dashboard" if match["collection"] == "dashboards" else "budget"
    cls = monitoring_dashboard_v1.Dashboard if kind == "dashboard" else budgets_v1.Budget
    items = store.items[kind]
    prefix = f"{match['parent']}/{match['collection']}"
    if method == "GET" and match["id"] is None:
        with store.lock:
            return {match["collection"]: [_json(cls, m) for n, m in items.items()
                                          if n.startswith(f"{prefix}/")]}
    if method == "GET":
        with store.lock:
            if f"{prefix}/{match['id']}" not in items:
                raise _RestError(404, "NOT_FOUND", f"{prefix}/{match['id']} not found")
            return _json(cls, items[f"{prefix}/{match['id']}"])
    if method not in ("POST", "PATCH"):
        raise _RestError(405, "UNIMPLEMENTED", f"{method} is not served")
    try:
        pb = cls.pb(cls())
        json_format.Parse(raw.decode() or "{}", pb, ignore_unknown_fields=False)
    except (json_format.ParseError, UnicodeDecodeError) as exc:
        raise _RestError(400, "INVALID_ARGUMENT",
                         f"Invalid JSON payload received. {exc}") from None
    message = cls.wrap(pb)
    with store.lock:
        if method == "POST":
            if match["id"] is not None:
                raise _RestError(404, "NOT_FOUND", f"no route for POST {path}")
            message.name = f"{prefix}/{uuid.uuid4().hex[:16]}"
        else:
            name = f"{prefix}/{match['id']}"
            if name not in items:
                raise _RestError(404, "NOT_FOUND", f"{name} not found")
            if message.etag and message.etag != items[name].etag:
                raise _RestError(409, "ABORTED", f"etag mismatch for {name}")
            message.name = name
        message.etag = uuid.uuid4().hex[:12]
        items[message.name] = message
        store.writes[kind] += 1
    return _json(cls, message)


def _json(cls: Any, message: Any) -> Any:
    return json_format.MessageToDict(cls.pb(message))


class MonitoringEmulator:
    """Both servers on loopback ports chosen by the OS; `clients()` builds real clients for
    them."""

    def __init__(self) -> None:
        self._store = _Store()
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self.grpc_port = 0
        self.http_port = 0

    @property
    def writes(self) -> Counter[str]:
        """Create and update calls per kind so far."""
        with self._store.lock:
            return Counter(self._store.writes)

    def resources(self, kind: str) -> dict[str, Any]:
        """What is stored for `kind` (name -> message)."""
        with self._store.lock:
            return dict(self._store.items[kind])

    def start(self) -> MonitoringEmulator:
        """Starts both servers."""
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        for handler in _grpc_handlers(self._store):
            server.add_generic_rpc_handlers((handler,))
        self.grpc_port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._grpc = server
        self._http = _http_server(self._store)
        self.http_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, name="monitoring-emulator",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        """Stops both servers."""
        if self._grpc is not None:
            self._grpc.stop(grace=None)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def metric_client(self) -> Any:
        """A `monitoring_v3.MetricServiceClient` talking to this emulator."""
        from google.cloud import monitoring_v3
        from google.cloud.monitoring_v3.services.metric_service.transports import (
            MetricServiceGrpcTransport,
        )

        return monitoring_v3.MetricServiceClient(transport=MetricServiceGrpcTransport(
            channel=grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")))

    def clients(self) -> Any:
        """`monitoring.apply.Clients` whose four clients talk to this emulator."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import monitoring_dashboard_v1, monitoring_v3
        from google.cloud.billing import budgets_v1
        from google.cloud.logging_v2.services.metrics_service_v2 import MetricsServiceV2Client
        from google.cloud.logging_v2.services.metrics_service_v2.transports import (
            MetricsServiceV2GrpcTransport,
        )
        from google.cloud.monitoring_v3.services.alert_policy_service.transports import (
            AlertPolicyServiceGrpcTransport,
        )

        from vertex_patterns.monitoring.apply import Clients

        target = f"127.0.0.1:{self.grpc_port}"
        rest = {"api_endpoint": f"http://127.0.0.1:{self.http_port}"}
        return Clients(
            alert_policies=monitoring_v3.AlertPolicyServiceClient(
                transport=AlertPolicyServiceGrpcTransport(
                    channel=grpc.insecure_channel(target))),
            log_metrics=MetricsServiceV2Client(
                transport=MetricsServiceV2GrpcTransport(channel=grpc.insecure_channel(target))),
            dashboards=monitoring_dashboard_v1.DashboardsServiceClient(
                transport="rest", credentials=AnonymousCredentials(), client_options=rest),
            budgets=budgets_v1.BudgetServiceClient(
                transport="rest", credentials=AnonymousCredentials(), client_options=rest))

    def __enter__(self) -> MonitoringEmulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _http_server(store: _Store) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                # A web page can make a browser send requests to loopback: refuse those.
                if self.headers.get("Origin") or self.headers.get("Sec-Fetch-Site"):
                    raise _RestError(403, "PERMISSION_DENIED", "browser requests refused")
                payload, status = _rest_call(store, self.command, self.path, raw), 200
            except _RestError as exc:
                payload = {"error": {"code": exc.code, "message": str(exc),
                                     "status": exc.status}}
                status = exc.code
            except Exception as exc:  # an emulator bug: answer 500, keep serving
                log.exception("monitoring emulator: %s %s failed", self.command, self.path)
                payload = {"error": {"code": 500, "message": repr(exc), "status": "INTERNAL"}}
                status = 500
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server
