"""Exception types shared by every area of the library.

The split follows SkyPilot's: a user mistake (`ConfigError`), a failure worth retrying
(`TransientError`), one that is not (`PermanentError`), and retries that ran out
(`RetriesExhaustedError`). The CLI reports `ConfigError` as one line with exit code 2.
"""

from __future__ import annotations


class VertexPatternsError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(VertexPatternsError, ValueError):
    """Bad input from the user: a malformed URI, a missing bucket, an impossible option.

    The message names what is wrong and what to do; the CLI prints it as one line, exit 2.
    """


class StorageError(VertexPatternsError):
    """A storage call failed; the message names the URI."""

    def __init__(self, message: str, *, uri: str | None = None) -> None:
        super().__init__(message)
        self.uri = uri


class TransientError(StorageError):
    """A failure that may succeed when tried again (429, 5xx, dropped connection, timeout)."""


class PermanentError(StorageError):
    """A failure that will not succeed when tried again (400, 403, 404, precondition)."""


class NotFoundError(PermanentError):
    """The object or bucket does not exist."""


class PreconditionFailedError(PermanentError):
    """A generation precondition did not hold: someone else changed the object."""


class RetriesExhaustedError(StorageError):
    """A transient failure persisted past the retry policy's attempts or deadline."""


class IntegrityError(StorageError):
    """Bytes at the destination do not match the source checksum."""


class StoppedError(VertexPatternsError):
    """Work stopped on purpose before it finished (a save past its deadline was told to
    stop): nothing it was doing was committed. An internal signal, never a failure of its
    own; the caller that asked for the stop reports what it means."""
