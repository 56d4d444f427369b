"""The retry policy: transient errors retried with bounded backoff, permanent ones not."""

from __future__ import annotations

import pytest
import requests
from google.api_core import exceptions as gexc

from vertex_patterns.errors import (
    NotFoundError,
    PermanentError,
    PreconditionFailedError,
    RetriesExhaustedError,
)
from vertex_patterns.storage.retry import RetryPolicy, is_transient


class Flaky:
    """Fails with the given exceptions in turn, then returns 'ok'."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


FAST = RetryPolicy(max_attempts=5, initial_backoff_s=0.001, max_backoff_s=0.002, seed=1)


class TestClassification:
    """429, 5xx, resets and timeouts are transient; 400/403/404/412 are not."""

    @pytest.mark.parametrize("exc", [
        gexc.TooManyRequests("x"), gexc.ServiceUnavailable("x"), gexc.InternalServerError("x"),
        gexc.BadGateway("x"), gexc.GatewayTimeout("x"), requests.ConnectionError("reset"),
        requests.Timeout("slow"), ConnectionResetError(), TimeoutError(),
    ])
    def test_transient(self, exc: BaseException) -> None:
        assert is_transient(exc)

    @pytest.mark.parametrize("exc", [
        gexc.BadRequest("x"), gexc.Forbidden("x"), gexc.NotFound("x"),
        gexc.PreconditionFailed("x"), ValueError("bug"),
    ])
    def test_permanent(self, exc: BaseException) -> None:
        assert not is_transient(exc)


class TestRetryLoop:
    """Retries until success, stops at once on permanent errors, and gives up when bounded."""

    def test_succeeds_after_transient_failures(self) -> None:
        fn = Flaky(gexc.ServiceUnavailable("a"), requests.ConnectionError("b"))
        assert FAST.call(fn, uri="gs://b/o", what="read") == "ok"
        assert fn.calls == 3

    def test_permanent_is_not_retried_and_names_uri(self) -> None:
        fn = Flaky(gexc.Forbidden("denied"))
        with pytest.raises(PermanentError, match="gs://b/o"):
            FAST.call(fn, uri="gs://b/o", what="read")
        assert fn.calls == 1

    def test_typed_permanent_errors(self) -> None:
        with pytest.raises(NotFoundError):
            FAST.call(Flaky(gexc.NotFound("x")), uri="gs://b/o", what="read")
        with pytest.raises(PreconditionFailedError):
            FAST.call(Flaky(gexc.PreconditionFailed("x")), uri="gs://b/o", what="write")

    def test_attempts_exhausted(self) -> None:
        fn = Flaky(*[gexc.ServiceUnavailable("down")] * 10)
        with pytest.raises(RetriesExhaustedError, match="after 5 attempts"):
            FAST.call(fn, uri="gs://b/o", what="read")
        assert fn.calls == 5

    def test_deadline_bounds_total_time(self) -> None:
        policy = RetryPolicy(max_attempts=1000, initial_backoff_s=0.05, max_backoff_s=0.05,
                             multiplier=1.0, deadline_s=0.2, seed=2)
        fn = Flaky(*[gexc.ServiceUnavailable("down")] * 1000)
        with pytest.raises(RetriesExhaustedError):
            policy.call(fn, uri="gs://b/o", what="read")
        assert fn.calls < 1000

    def test_backoff_grows_and_is_capped_with_jitter(self) -> None:
        policy = RetryPolicy(initial_backoff_s=1.0, max_backoff_s=8.0, seed=3)
        samples = [[policy.backoff(n) for _ in range(200)] for n in range(6)]
        assert all(0 <= s <= min(8.0, 2.0**n) for n, row in enumerate(samples) for s in row)
        assert max(samples[0]) <= 1.0 < max(samples[3])
        assert len({round(s, 6) for s in samples[2]}) > 100  # jittered, not a fixed sleep

    def test_invalid_policy(self) -> None:
        with pytest.raises(ValueError, match="max_attempts"):
            RetryPolicy(max_attempts=0)
