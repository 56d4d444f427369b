"""Shared fixtures: a real GCS emulator for the session, fresh buckets, storage facades."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest

from vertex_patterns.emulators.gcs import DEFAULT_KIND, EMULATOR_ENV, KINDS, GcsEmulator
from vertex_patterns.storage import Storage


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GcsEmulator]:
    """The default GCS emulator (fake-gcs-server behind the front that adds preconditions,
    split rewrites and batches) as a child process; STORAGE_EMULATOR_HOST points at it."""
    previous = os.environ.get(EMULATOR_ENV)
    with GcsEmulator(kind=DEFAULT_KIND) as emulator:
        os.environ[EMULATOR_ENV] = emulator.url
        try:
            yield emulator
        finally:
            if previous is None:
                os.environ.pop(EMULATOR_ENV, None)
            else:
                os.environ[EMULATOR_ENV] = previous


@pytest.fixture(scope="session")
def other_gcs_emulator() -> Iterator[GcsEmulator]:
    """The second, independent emulator (gcp-storage-emulator behind the same front), for
    suites that run against both; started only when a test asks for it."""
    other = next(k for k in KINDS if k != DEFAULT_KIND)
    with GcsEmulator(kind=other) as emulator:
        yield emulator


@pytest.fixture(params=KINDS)
def each_gcs_emulator(request: pytest.FixtureRequest, gcs_emulator: GcsEmulator,
                      monkeypatch: pytest.MonkeyPatch) -> GcsEmulator:
    """Each GCS emulator in turn; STORAGE_EMULATOR_HOST points at it for the test."""
    if request.param == DEFAULT_KIND:
        return gcs_emulator
    emulator: GcsEmulator = request.getfixturevalue("other_gcs_emulator")
    monkeypatch.setenv(EMULATOR_ENV, emulator.url)
    return emulator


@pytest.fixture
def store(gcs_emulator: GcsEmulator) -> Storage:
    """The storage facade, talking to the emulator for gs:// URIs."""
    return Storage()


@pytest.fixture
def make_bucket(store: Storage):
    """Creates uniquely named buckets on the emulator: `make_bucket("src") -> "src-1a2b3c"`."""

    def make(stem: str = "b") -> str:
        name = f"{stem}-{uuid.uuid4().hex[:10]}"
        store.gcs.client().create_bucket(name)
        return name

    return make


@pytest.fixture
def bucket(make_bucket) -> str:
    """One fresh bucket name."""
    return make_bucket("t")


@pytest.fixture(params=["local", "gcs"])
def root_uri(request: pytest.FixtureRequest, tmp_path, make_bucket) -> str:
    """A writable root URI on each backend, for suites that must behave the same on both."""
    if request.param == "local":
        return str(tmp_path / "root")
    return f"gs://{make_bucket('conf')}/root"


def write_tree(store: Storage, root: str, files: dict[str, bytes]) -> None:
    """Writes `files` (key -> bytes) below `root`."""
    for key, data in files.items():
        store.write_bytes(f"{root.rstrip('/')}/{key}", data)


def read_tree(store: Storage, root: str) -> dict[str, bytes]:
    """Reads every object below `root` as key -> bytes."""
    return {o.key: store.read_bytes(o.uri) for o in store.list(root)}


@pytest.fixture
def kfp_local(tmp_path):
    """kfp.local running components as subprocesses of this venv; returns the pipeline root."""
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str(tmp_path / "pipeline-root"))
    return tmp_path / "pipeline-root"


# Fast phases for tests: seconds on Vertex AI are hundredths here; SIGKILL follows SIGTERM
# after 2 s instead of 30 s.
VERTEX_TEST_TIMINGS = dict(queued_seconds=0.05, pending_seconds=0.05, restart_seconds=0.05,
                           grace_seconds=2.0)


@pytest.fixture(scope="session")
def vertex_emulator(gcs_emulator: GcsEmulator):
    """The Vertex AI emulator in this process with fast timings and no faults, its jobs
    pointed at the GCS emulator; VERTEX_AI_EMULATOR_HOST points at it. A test that calls
    `set_scenario` calls `reset_scenario()` when done."""
    from vertex_patterns.emulators.vertex import Scenario, Timings, VertexEmulator
    from vertex_patterns.vertex_client import EMULATOR_ENV as VERTEX_ENV

    scenario = Scenario(timings=Timings(**VERTEX_TEST_TIMINGS))
    previous = os.environ.get(VERTEX_ENV)
    with VertexEmulator(scenario=scenario,
                        job_env={EMULATOR_ENV: gcs_emulator.url}) as emulator:
        os.environ[VERTEX_ENV] = emulator.url
        try:
            yield emulator
        finally:
            if previous is None:
                os.environ.pop(VERTEX_ENV, None)
            else:
                os.environ[VERTEX_ENV] = previous


def wait_for(predicate, timeout: float = 90.0, what: str = "condition"):
    """Polls `predicate` until it returns something truthy (returned), or fails the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
