"""Which requests the emulator serves: only those a local client sends, never a web page's.

The emulator runs the command of every custom job it is given, so a request it serves is code
it executes. A page open in a browser can send "simple" cross-origin requests to loopback
(a POST with a `text/plain` body needs no CORS preflight), and a page on a domain the attacker
re-points at 127.0.0.1 (DNS rebinding) can even read the answers. A request is refused when:

- it carries an `Origin` header that is not a loopback origin (browsers set it on
  cross-origin requests; the SDK and other local clients send none);
- its `Host` header is not the address and port the emulator listens on (``localhost:PORT``
  is accepted too: no attacker controls what ``localhost`` resolves to), which is what a
  rebound domain name sends;
- it is a POST, PUT or PATCH whose `Content-Type` is not ``application/json`` (what the
  aiplatform SDK's REST transport sends on every call; a browser cannot send it cross-origin
  without a preflight, which the emulator never answers with CORS headers).

Binding to loopback only is checked by `check_loopback_bind`.
"""

from __future__ import annotations

import ipaddress
from typing import Protocol
from urllib.parse import urlsplit

from vertex_patterns.emulators.vertex.errors import ApiError

METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


class Headers(Protocol):
    """Case-insensitive header lookup, as `http.client.HTTPMessage` and dicts offer."""

    def get(self, name: str, default: None = None) -> str | None: ...


def _is_loopback_host(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_loopback_bind(host: str) -> None:
    """Raises ValueError unless `host` is a loopback address (the emulator runs commands)."""
    if not _is_loopback_host(host):
        raise ValueError(f"the Vertex AI emulator binds loopback only (127.0.0.1, ::1, "
                         f"localhost), not {host!r}: it runs the commands of the jobs it gets")


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def refusal(method: str, headers: Headers, *, listen_host: str,
            listen_port: int) -> ApiError | None:
    """The error to answer instead of serving the request, or None when it may be served.

    Args:
        method: The HTTP method.
        headers: The request headers (looked up case-insensitively by the HTTP server).
        listen_host: The address the emulator is bound to.
        listen_port: Its port.
    """
    origin = headers.get("Origin")
    if origin is not None:
        parts = urlsplit(origin.strip())
        if parts.scheme not in ("http", "https") or not _is_loopback_host(parts.hostname or ""):
            return ApiError(403, "PERMISSION_DENIED",
                            f"The Vertex AI emulator refuses requests from origin {origin!r}: "
                            "only local clients (no Origin, or a loopback one) may use it.")
    host = (headers.get("Host") or "").strip().lower()
    allowed = {_host_port(listen_host, listen_port).lower(), f"localhost:{listen_port}"}
    if host not in allowed:
        return ApiError(403, "PERMISSION_DENIED",
                        f"The Vertex AI emulator refuses Host {host!r}: it answers only "
                        f"requests addressed to {' or '.join(sorted(allowed))}.")
    if method in METHODS_WITH_BODY:
        content_type = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            return ApiError(415, "INVALID_ARGUMENT",
                            f"The Vertex AI emulator takes {method} bodies as application/json "
                            f"only, not {content_type or 'no Content-Type'!r}.")
    return None
