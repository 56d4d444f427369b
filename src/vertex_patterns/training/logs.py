"""Cloud Logging structured logs on stdout, and Error Reporting events for uncaught errors.

No client library: Vertex AI's logging agent turns each single-line JSON object a container
writes to stdout into a `LogEntry` with that object as `jsonPayload`, and lifts the special
fields (`severity`, `time`, `logging.googleapis.com/sourceLocation`,
`logging.googleapis.com/labels`) into the entry itself.

    setup_logging("INFO", labels={"run": "tiny-lm-1"})
    install_excepthook()
    log.info("checkpoint saved", extra={"json_fields": {"step": 100, "blocking_s": 0.2}})

Structured fields ride on `extra={"json_fields": {...}}`, the convention of
google-cloud-logging's `StructuredLogHandler`. An error event (`report_error`) carries the
`ReportedErrorEvent` `@type`, so Error Reporting groups it even without a `serviceContext`
match, and its `message` is the Python traceback, which Error Reporting parses.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
import sys
import threading
import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import IO, Any

from vertex_patterns import __version__

SOURCE_LOCATION = "logging.googleapis.com/sourceLocation"
LABELS = "logging.googleapis.com/labels"
REPORTED_ERROR_EVENT = (
    "type.googleapis.com/google.devtools.clouderrorreporting.v1beta1.ReportedErrorEvent"
)
DEFAULT_SERVICE = "vertex-patterns-trainer"

# Keys whose values are never written, whatever a caller passes in `json_fields`.
_SECRET_KEY = re.compile(r"(pass(word)?|secret|token|credential|api[_-]?key|authorization)",
                         re.IGNORECASE)
_REDACTED = "[REDACTED]"
_RESERVED = frozenset({"severity", "message", "time", "logger", "stack_trace", SOURCE_LOCATION,
                       LABELS})
_write_lock = threading.Lock()


def severity_name(levelno: int) -> str:
    """The Cloud Logging `LogSeverity` name for a Python logging level."""
    if levelno >= logging.CRITICAL:
        return "CRITICAL"
    if levelno >= logging.ERROR:
        return "ERROR"
    if levelno >= logging.WARNING:
        return "WARNING"
    if levelno >= logging.INFO:
        return "INFO"
    if levelno >= logging.DEBUG:
        return "DEBUG"
    return "DEFAULT"


def rfc3339(unix_time: float) -> str:
    """`2026-11-28T10:15:00.123456Z`: RFC 3339 in UTC with microseconds."""
    when = dt.datetime.fromtimestamp(unix_time, tz=dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CloudLoggingFormatter(logging.Formatter):
    """Formats each record as one line of Cloud Logging structured JSON.

    Args:
        labels: Labels (string to string) attached to every entry as
            `logging.googleapis.com/labels`; a record's `extra={"labels": {...}}` adds more.
    """

    def __init__(self, labels: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.labels = {str(k): str(v) for k, v in (labels or {}).items()}

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object, no newline inside (messages with newlines are escaped)."""
        message = record.getMessage()
        payload: dict[str, Any] = {
            "severity": severity_name(record.levelno),
            "message": message,
            "time": rfc3339(record.created),
            "logger": record.name,
            SOURCE_LOCATION: {
                "file": record.pathname,
                "line": record.lineno,
                "function": record.funcName,
            },
        }
        trace = None
        if record.exc_info and record.exc_info[1] is not None:
            trace = "".join(traceback.format_exception(*record.exc_info))
        elif record.exc_text:
            trace = record.exc_text
        if trace:
            payload["stack_trace"] = trace.rstrip("\n")
            payload["message"] = f"{message}\n{payload['stack_trace']}"
        if record.stack_info:
            payload["message"] = f"{payload['message']}\n{record.stack_info}"
        labels = dict(self.labels)
        extra_labels = getattr(record, "labels", None)
        if isinstance(extra_labels, Mapping):
            labels.update({str(k): str(v) for k, v in extra_labels.items()})
        if labels:
            payload[LABELS] = labels
        fields = getattr(record, "json_fields", None)
        if isinstance(fields, Mapping):
            for key, value in redact(fields).items():
                # The special fields above win: a stray "severity" in json_fields must not
                # change how Cloud Logging files the entry.
                if key not in _RESERVED:
                    payload[key] = value
        return to_json_line(payload)


def redact(fields: Mapping[str, Any]) -> dict[str, Any]:
    """`fields` with the values of secret-looking keys (token, password, ...) replaced."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if _SECRET_KEY.search(str(key)):
            out[str(key)] = _REDACTED
        elif isinstance(value, Mapping):
            out[str(key)] = redact(value)
        else:
            out[str(key)] = value
    return out


def to_json_line(payload: Mapping[str, Any]) -> str:
    """Compact JSON; NaN and infinities (invalid JSON) become strings, others via `str`."""
    return json.dumps(_json_safe(payload), separators=(",", ":"), default=str)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class CloudLoggingHandler(logging.StreamHandler):
    """A stream handler with `CloudLoggingFormatter`; `setup_logging` installs one on root."""


def setup_logging(
    level: int | str = "INFO",
    stream: IO[str] | None = None,
    *,
    labels: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Sends every log record to `stream` (default stdout) as Cloud Logging JSON lines.

    Replaces a handler installed by an earlier call, so calling it twice does not double
    lines; other handlers on the root logger are left alone.

    Args:
        level: The root logger's level (`"DEBUG"`, `logging.INFO`, ...).
        stream: Where lines go; stdout by default, which Vertex AI collects.
        labels: Labels attached to every entry.

    Returns:
        The installed handler.

    Raises:
        ValueError: `level` is not a logging level name.
    """
    if isinstance(level, str):
        resolved = logging.getLevelName(level.upper())
        if not isinstance(resolved, int):
            raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING or ERROR")
        level = resolved
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, CloudLoggingHandler)]:
        root.removeHandler(old)
    handler = CloudLoggingHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(CloudLoggingFormatter(labels))
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def _installed_handler() -> CloudLoggingHandler | None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, CloudLoggingHandler):
            return handler
    return None


def error_event(
    exc: BaseException,
    *,
    service: str = DEFAULT_SERVICE,
    version: str = __version__,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The Error Reporting event for `exc` as a structured log payload.

    Args:
        exc: The exception; one never raised gets the caller's stack as its traceback.
        service: `serviceContext.service`, the name errors are grouped under.
        version: `serviceContext.version`.
        labels: Labels for the log entry.

    Returns:
        The payload: `@type` ReportedErrorEvent, `severity` ERROR, `message` the traceback
        (starting with `Traceback (most recent call last):`), `serviceContext`,
        `context.reportLocation` (the frame that raised), `eventTime` and `time`.
    """
    now = dt.datetime.now(tz=dt.timezone.utc).timestamp()
    tb = exc.__traceback__
    where: traceback.FrameSummary | None
    if tb is not None:
        trace = "".join(traceback.format_exception(type(exc), exc, tb))
        where = traceback.extract_tb(tb)[-1]
    else:
        # Never raised: Error Reporting still needs a trace, so use the caller's stack.
        stack = [f for f in traceback.extract_stack() if f.filename != __file__]
        trace = "".join(traceback.format_exception_only(type(exc), exc))
        if stack:
            trace = "".join(traceback.format_list(stack)) + trace
        where = stack[-1] if stack else None
    if not trace.startswith("Traceback"):
        trace = "Traceback (most recent call last):\n" + trace
    location = {
        "filePath": where.filename if where else "",
        "lineNumber": (where.lineno or 0) if where else 0,
        "functionName": where.name if where else "",
    }
    payload: dict[str, Any] = {
        "@type": REPORTED_ERROR_EVENT,
        "severity": "ERROR",
        "message": trace.rstrip("\n"),
        "eventTime": rfc3339(now),
        "time": rfc3339(now),
        "serviceContext": {"service": service, "version": version},
        "context": {"reportLocation": location},
        SOURCE_LOCATION: {"file": location["filePath"], "line": location["lineNumber"],
                          "function": location["functionName"]},
    }
    if labels:
        payload[LABELS] = {str(k): str(v) for k, v in labels.items()}
    return payload


def report_error(
    exc: BaseException,
    *,
    service: str = DEFAULT_SERVICE,
    version: str = __version__,
    stream: IO[str] | None = None,
) -> dict[str, Any]:
    """Writes `exc` as one Error Reporting event line and returns the payload.

    Goes to `stream`, else to the stream of the handler `setup_logging` installed (with its
    labels), else to stdout. Never raises: a broken stream loses the event, not the caller.

    Args:
        exc: The exception to report.
        service: The service name errors are grouped under.
        version: The service version.
        stream: Where to write the line.

    Returns:
        The event payload that was written.
    """
    handler = _installed_handler()
    labels = None
    if handler is not None:
        formatter = handler.formatter
        if isinstance(formatter, CloudLoggingFormatter):
            labels = formatter.labels
    event = error_event(exc, service=service, version=version, labels=labels)
    target = stream or (handler.stream if handler is not None else sys.stdout)
    line = to_json_line(event) + "\n"
    try:
        with _write_lock:
            target.write(line)
            target.flush()
    except (OSError, ValueError):  # closed or broken stream: nothing better to do
        pass
    return event


def install_excepthook(
    *, service: str = DEFAULT_SERVICE, version: str = __version__
) -> None:
    """Reports uncaught exceptions (main thread and other threads) as Error Reporting events.

    KeyboardInterrupt still goes to the previous hook (Python's default prints it). The
    process exit status is unchanged: Python still exits 1 after an uncaught exception.

    Args:
        service: The service name errors are grouped under.
        version: The service version.
    """
    previous = sys.excepthook

    def hook(
        exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            previous(exc_type, exc, tb)
            return
        if exc.__traceback__ is None and tb is not None:
            exc = exc.with_traceback(tb)
        report_error(exc, service=service, version=version)

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or issubclass(args.exc_type, SystemExit):
            return
        report_error(args.exc_value, service=service, version=version)

    sys.excepthook = hook
    threading.excepthook = thread_hook
