"""`vertex-patterns emulators up`: run the local emulators in the foreground.

Jobs the Vertex AI emulator runs get `STORAGE_EMULATOR_HOST` pointing at the GCS emulator
started beside it (as jobs on Vertex AI reach real GCS) and `VERTEX_AI_EMULATOR_HOST`
pointing at the Vertex AI emulator; with `--only vertex`, jobs inherit whatever
`STORAGE_EMULATOR_HOST` the command itself was started with.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

from vertex_patterns.emulators.gcs import DEFAULT_KIND, EMULATOR_ENV, check_kind, start_gcs_server
from vertex_patterns.errors import ConfigError

DEFAULT_VERTEX_PORT = 9024


def serve_forever(
    *,
    gcs_port: int,
    data_dir: str | None = None,
    vertex_port: int = DEFAULT_VERTEX_PORT,
    scenario_path: str | None = None,
    only: str | None = None,
    state_dir: str | None = None,
    gcs_emulator: str = DEFAULT_KIND,
    gcs_stock: bool = False,
) -> None:
    """Starts the emulators, prints their export lines, and blocks until SIGINT/SIGTERM.

    Args:
        gcs_port: The GCS emulator's port.
        data_dir: Keep GCS objects on disk there (default: in memory).
        vertex_port: The Vertex AI emulator's port.
        scenario_path: A fault scenario JSON file for the Vertex AI emulator.
        only: ``gcs`` or ``vertex`` to start just that one.
        state_dir: Keep everything the emulators write there: job logs and work directories
            (``customJobs/ID/attempt-N/``) and, unless `data_dir` is given, GCS objects
            (``gcs/``). None: a temporary directory removed on exit, GCS objects in memory.
        gcs_emulator: Which GCS emulator (`gcs.KINDS`) serves behind the front.
        gcs_stock: Serve that emulator as published, without the front.

    Raises:
        ConfigError: A port is out of range or taken, the scenario file is invalid, or the
            state directory cannot be created.
    """
    from vertex_patterns.emulators.vertex.scenario import Scenario
    from vertex_patterns.vertex_client import EMULATOR_ENV as VERTEX_ENV

    for flag, port in (("--gcs-port", gcs_port), ("--vertex-port", vertex_port)):
        if not 0 < port < 65536:
            raise ConfigError(f"{flag} {port} is not a TCP port (1-65535)")
    check_kind(gcs_emulator)
    scenario = Scenario.from_file(scenario_path) if scenario_path else Scenario()
    if state_dir is not None:
        state_dir = os.path.abspath(state_dir)
        try:
            os.makedirs(state_dir, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--state-dir {state_dir}: {exc.strerror}") from exc
        if data_dir is None and only in (None, "gcs"):
            data_dir = os.path.join(state_dir, "gcs")
            os.makedirs(data_dir, exist_ok=True)
    gcs_url = f"http://127.0.0.1:{gcs_port}"
    gcs: Any = None
    vertex: Any = None
    try:
        if only in (None, "gcs"):
            gcs = _listen("--gcs-port", gcs_port,
                          lambda: start_gcs_server("127.0.0.1", gcs_port, kind=gcs_emulator,
                                                   data_dir=data_dir, stock=gcs_stock))
        if only in (None, "vertex"):
            # Imported only when wanted: the aiplatform protos take seconds to import.
            from vertex_patterns.emulators.vertex.emulator import VertexEmulator

            # Jobs reach this GCS emulator as jobs on Vertex AI reach GCS.
            job_env = {EMULATOR_ENV: gcs_url} if gcs is not None else {}
            vertex = _listen("--vertex-port", vertex_port,
                             lambda: VertexEmulator(port=vertex_port, scenario=scenario,
                                                    state_dir=state_dir, job_env=job_env
                                                    ).start())
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            if gcs is not None:
                print(f"export {EMULATOR_ENV}={gcs_url}", flush=True)
            if vertex is not None:
                print(f"export {VERTEX_ENV}={vertex.url}", flush=True)
            print("# emulators running; Ctrl-C to stop", flush=True)
            while not stop.wait(0.5):
                pass
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
    finally:
        if vertex is not None:
            vertex.stop()
        if gcs is not None:
            gcs.stop()
    print("# emulators stopped", flush=True)


def _listen(flag: str, port: int, start: Any) -> Any:
    try:
        return start()
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on 127.0.0.1:{port} ({exc.strerror}): pick another {flag}"
        ) from exc
