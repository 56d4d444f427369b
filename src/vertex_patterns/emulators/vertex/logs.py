"""Job logs: what each replica of a custom job wrote to stdout and stderr, kept on disk and
served by the emulator, read by `vertex-patterns emulators logs` and the launcher.

On disk (under the emulator's state directory, kept when `emulators up --state-dir DIR` is
given)::

    DIR/customJobs/JOB_ID/attempt-N/workerpool0-0.log

A replica's log is the concatenation of its attempts (a preempted job runs again), each
attempt after the first introduced by a ``--- attempt N ---`` line. The emulator serves it at
``GET /_emulator/logs/JOB?replica=R&offset=B`` (JOB: the job's resource name or ID) as
``{"name", "replica", "state", "error", "text", "offset", "done"}``: the text from byte
offset B, the offset to ask for next, and `done` once the job has ended and nothing is left.
With ``tail=N`` instead of an offset it answers the last N lines.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from vertex_patterns.errors import ConfigError, VertexPatternsError

DEFAULT_REPLICA = "workerpool0-0"
MAX_CHUNK_BYTES = 1 << 20
_TAIL_WINDOW_BYTES = 64 << 10


def _pieces(log_dirs: list[str], replica: str) -> list[bytes | str]:
    """The replica's virtual log in order: attempt headers (bytes) and log file paths."""
    pieces: list[bytes | str] = []
    for i, log_dir in enumerate(log_dirs):
        if i:
            pieces.append(f"--- attempt {i + 1} ---\n".encode())
        pieces.append(os.path.join(log_dir, f"{replica}.log"))
    return pieces


def _length(piece: bytes | str) -> int:
    if isinstance(piece, bytes):
        return len(piece)
    try:
        return os.path.getsize(piece)
    except OSError:  # the attempt has not opened its log yet
        return 0


def read_log(log_dirs: list[str], replica: str, offset: int = 0,
             limit: int = MAX_CHUNK_BYTES) -> tuple[bytes, int]:
    """Up to `limit` bytes of `replica`'s log from byte `offset`; returns them and the next
    offset. Attempts end before the next one starts, so the log only ever grows at its end."""
    offset = max(offset, 0)
    out = bytearray()
    position = 0
    for piece in _pieces(log_dirs, replica):
        length = _length(piece)
        if offset < position + length and len(out) < limit:
            start = max(offset - position, 0)
            size = min(limit - len(out), length - start)
            out += piece[start:start + size] if isinstance(piece, bytes) else \
                _read_at(piece, start, size)
        position += length
    data = _whole_characters(bytes(out))
    return data, offset + len(data)


def _read_at(path: str, start: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(size)


def _whole_characters(data: bytes) -> bytes:
    """`data` without a UTF-8 sequence cut at its end (it is sent on the next read)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # a continuation byte: keep looking for the lead byte
            continue
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else \
            4 if byte & 0xF8 == 0xF0 else 1
        return data if need <= back else data[:-back]
    return data


def tail_log(log_dirs: list[str], replica: str, lines: int) -> bytes:
    """The last `lines` lines of `replica`'s log."""
    total = sum(_length(piece) for piece in _pieces(log_dirs, replica))
    data, _ = read_log(log_dirs, replica, max(0, total - _TAIL_WINDOW_BYTES),
                       _TAIL_WINDOW_BYTES)
    kept = data.splitlines(keepends=True)[-lines:] if lines > 0 else []
    return b"".join(kept)


# --- the client side: what `emulators logs` and the launcher call ---------------------------


class LogsUnavailableError(VertexPatternsError):
    """The emulator could not be reached, or answered something unexpected."""


def fetch_log(base_url: str, job: str, *, replica: str = DEFAULT_REPLICA, offset: int = 0,
              tail: int | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """One read of job `job`'s log from the emulator at `base_url` (see the module docstring).

    Raises:
        ConfigError: The emulator has no such job or replica.
        LogsUnavailableError: The emulator cannot be reached or failed.
    """
    import requests

    params: dict[str, Any] = {"replica": replica}
    if tail is not None:
        params["tail"] = tail
    else:
        params["offset"] = offset
    try:
        response = requests.get(f"{base_url}/_emulator/logs/{job}", params=params,
                                timeout=timeout)
    except requests.RequestException as exc:
        raise LogsUnavailableError(f"cannot reach the Vertex AI emulator at {base_url}: "
                                   f"{exc}") from exc
    body = response.json() if response.headers.get("Content-Type", "").startswith(
        "application/json") else {}
    if response.status_code in (400, 404):
        message = body.get("error", {}).get("message", response.text)
        raise ConfigError(f"{message} (emulator at {base_url})")
    if response.status_code != 200:
        raise LogsUnavailableError(f"the Vertex AI emulator at {base_url} answered "
                                   f"{response.status_code}: {response.text[:200]}")
    return dict(body)


def stream_log(base_url: str, job: str, write: Callable[[str], Any], *,
               replica: str = DEFAULT_REPLICA, follow: bool = False,
               poll_seconds: float = 0.5) -> dict[str, Any]:
    """Writes job `job`'s log through `write`; with `follow`, until the job has ended.

    Returns:
        The last answer (``state`` and ``error`` say how the job stands or ended).

    Raises:
        ConfigError: No such job or replica.
        LogsUnavailableError: The emulator cannot be reached.
    """
    offset = 0
    while True:
        answer = fetch_log(base_url, job, replica=replica, offset=offset)
        if answer["text"]:
            write(answer["text"])
        offset = int(answer["offset"])
        if answer["done"] or (not follow and not answer["text"]):
            return answer
        if not answer["text"]:
            time.sleep(poll_seconds)
