"""Retrying transient storage failures with exponential backoff and full jitter.

Only idempotent calls go through `RetryPolicy.call`; writes are made idempotent with
generation preconditions by the callers (see `gcs.py`). The client library's own retries are
switched off (`retry=None`) so attempts do not multiply.
"""

from __future__ import annotations

import http.client
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse

from vertex_patterns.errors import (
    NotFoundError,
    PermanentError,
    PreconditionFailedError,
    RetriesExhaustedError,
    StorageError,
    TransientError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})

_TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    gexc.TooManyRequests,
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.ServiceUnavailable,
    gexc.GatewayTimeout,
    gexc.RequestRangeNotSatisfiable,  # a resumable session the server lost track of
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    auth_exc.TransportError,
    http.client.HTTPException,
    ConnectionError,
    socket.timeout,
    TimeoutError,
    DataCorruption,
)


def _status_of(exc: BaseException) -> int | None:
    if isinstance(exc, gexc.GoogleAPICallError) and exc.code is not None:
        return int(exc.code)
    if isinstance(exc, InvalidResponse):
        response = getattr(exc, "response", None)
        code = getattr(response, "status_code", None)
        return int(code) if code is not None else None
    return None


def is_transient(exc: BaseException) -> bool:
    """True when `exc` is worth retrying: 408/429/5xx, resets, timeouts, corrupted transfers."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, StorageError):
        return False
    status = _status_of(exc)
    if status is not None:
        return status in TRANSIENT_STATUS
    return isinstance(exc, _TRANSIENT_EXCEPTIONS)


def translate(exc: BaseException, uri: str) -> StorageError:
    """Maps a client-library exception onto this library's typed errors, naming the URI."""
    if isinstance(exc, StorageError):
        return exc
    status = _status_of(exc)
    text = str(exc)
    detail = getattr(exc, "message", None) or (text.splitlines()[0] if text else "")
    detail = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    if status == 404:
        return NotFoundError(f"{uri}: not found", uri=uri)
    if status == 412:
        return PreconditionFailedError(
            f"{uri}: changed by someone else while we worked on it (precondition failed)",
            uri=uri,
        )
    if status == 403:
        return PermanentError(f"{uri}: permission denied ({detail})", uri=uri)
    if is_transient(exc):
        return TransientError(f"{uri}: {detail}", uri=uri)
    return PermanentError(f"{uri}: {detail}", uri=uri)


@dataclass(kw_only=True, frozen=True)
class RetryPolicy:
    """How transient failures are retried.

    Backoff is "full jitter": attempt n sleeps uniformly in [0, min(max_backoff_s,
    initial_backoff_s * multiplier**n)], which spreads out clients that failed together.
    """

    max_attempts: int = 8
    """Attempts in all, the first one included."""
    initial_backoff_s: float = 0.25
    """Upper bound of the first sleep."""
    max_backoff_s: float = 16.0
    """Upper bound of any one sleep."""
    multiplier: float = 2.0
    """Growth of the sleep bound per attempt."""
    deadline_s: float = 300.0
    """No new attempt starts after this many seconds since the first one."""
    seed: int | None = None
    """Seed for the jitter (tests); None draws from the OS."""
    _rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("backoff times must not be negative")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier}")
        if self.deadline_s <= 0:
            raise ValueError(f"deadline_s must be > 0, got {self.deadline_s}")
        if self.seed is not None:
            self._rng.seed(self.seed)

    def backoff(self, attempt: int) -> float:
        """The sleep before retry number `attempt` (0-based)."""
        bound = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**attempt)
        return self._rng.uniform(0, bound)

    def call(
        self,
        fn: Callable[[], T],
        *,
        uri: str,
        what: str,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> T:
        """Calls `fn` until it succeeds, fails permanently, or attempts/deadline run out.

        Args:
            fn: The idempotent operation.
            uri: The URI the operation is about, for error messages.
            what: A short verb phrase for logs ("upload", "list").
            on_retry: Called with the transient error before each retry (for example to
                rewind a stream).

        Returns:
            What `fn` returned.

        Raises:
            PermanentError: A non-retryable failure, at once.
            RetriesExhaustedError: The last transient failure, once attempts or deadline ran out.
        """
        start = time.monotonic()
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:  # classified below; non-transient errors re-raised at once
                if not is_transient(exc):
                    raise translate(exc, uri) from exc
                attempt += 1
                elapsed = time.monotonic() - start
                sleep = self.backoff(attempt - 1)
                if attempt >= self.max_attempts or elapsed + sleep > self.deadline_s:
                    raise RetriesExhaustedError(
                        f"{uri}: {what} failed after {attempt} attempts in {elapsed:.1f}s: "
                        f"{translate(exc, uri)}",
                        uri=uri,
                    ) from exc
                log.debug("retrying %s of %s after %s (attempt %d)", what, uri, exc, attempt)
                if on_retry is not None:
                    on_retry(exc)
                time.sleep(sleep)


DEFAULT_RETRY = RetryPolicy()
