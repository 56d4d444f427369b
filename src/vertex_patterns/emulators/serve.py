"""`vertex-patterns emulators up`: run the local emulators in the foreground."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from vertex_patterns.emulators.gcs import EMULATOR_ENV, start_gcs_server
from vertex_patterns.errors import ConfigError


def serve_forever(*, gcs_port: int, data_dir: str | None = None) -> None:
    """Starts the emulators, prints their export lines, and blocks until SIGINT/SIGTERM.

    Raises:
        ConfigError: The port is out of range or already taken.
    """
    if not 0 < gcs_port < 65536:
        raise ConfigError(f"--gcs-port {gcs_port} is not a TCP port (1-65535)")
    try:
        server = start_gcs_server("127.0.0.1", gcs_port, data_dir=data_dir)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on 127.0.0.1:{gcs_port} ({exc.strerror}): pick another --gcs-port"
        ) from exc
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"export {EMULATOR_ENV}=http://127.0.0.1:{gcs_port}", flush=True)
        print("# emulators running; Ctrl-C to stop", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        for s, h in previous.items():
            signal.signal(s, h)
        print("# emulators stopped", flush=True)
