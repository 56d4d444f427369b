"""Replication through the fault-injecting proxy: real HTTP errors, real retries."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace

import pytest

from conftest import read_tree
from vertex_patterns.emulators.fault_proxy import FaultConfig, FaultProxy
from vertex_patterns.emulators.gcs import GcsEmulator
from vertex_patterns.replication import replicate
from vertex_patterns.storage import GcsBackend, RetryPolicy, Storage

# Quick backoff: the faults are injected, not real overload, so long sleeps only slow tests.
FAST_RETRY = RetryPolicy(max_attempts=10, initial_backoff_s=0.005, max_backoff_s=0.05, seed=7)


@pytest.fixture
def faulty(gcs_emulator: GcsEmulator, request: pytest.FixtureRequest) -> Iterator[FaultProxy]:
    """A proxy in front of the emulator; the test's `faults` marker gives the config."""
    marker = request.node.get_closest_marker("faults")
    config = FaultConfig(**(marker.kwargs if marker else {}))
    with FaultProxy(gcs_emulator.url, config) as proxy:
        yield proxy


def storage_via(proxy: FaultProxy) -> Storage:
    return Storage(gcs=GcsBackend(endpoint=proxy.url, retry=FAST_RETRY))


class TestTwentyPercentFaults:
    """With 20% of requests failing (503, 429, dropped connections), 500 objects replicate."""

    @pytest.mark.faults(seed=11, rate_503=0.08, rate_429=0.06, rate_drop=0.06)
    def test_local_to_gs_to_gs_to_local(
        self, store: Storage, make_bucket, tmp_path, faulty: FaultProxy
    ) -> None:
        src = tmp_path / "src"
        files = {f"shard-{i:04d}.bin": os.urandom(2048 + i) for i in range(500)}
        for name, data in files.items():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes(data)
        flaky = storage_via(faulty)
        primary, backup = f"gs://{make_bucket('pri')}/d", f"gs://{make_bucket('bak')}/d"
        restored = str(tmp_path / "restored")
        for s, d in [(str(src), primary), (primary, backup), (backup, restored)]:
            report = replicate(s, [d], storage=flaky, workers=8, progress=False)
            assert report.ok, report.to_table()
            assert report.destinations[0].copied == len(files)
            assert read_tree(store, d) == files  # read back without faults: every byte right
        stats = faulty.stats
        assert stats["503"] > 0 and stats["429"] > 0
        assert stats["drop_before"] > 0 and stats["drop_after"] > 0
        # The faulty run is verifiable: re-running through the proxy finds nothing to copy.
        again = replicate(primary, [backup], storage=flaky, progress=False)
        assert again.destinations[0].skipped == len(files)


class TestVerification:
    """A copy whose bytes do not match the source CRC32C is retried, then reported failed."""

    @pytest.mark.faults(seed=3, rate_corrupt=0.5)
    def test_corrupted_downloads_are_retried(
        self, store: Storage, bucket: str, tmp_path, faulty: FaultProxy
    ) -> None:
        files = {f"o{i}": os.urandom(4096) for i in range(20)}
        for k, v in files.items():
            store.write_bytes(f"gs://{bucket}/d/{k}", v)
        report = replicate(f"gs://{bucket}/d", [str(tmp_path / "out")],
                           storage=storage_via(faulty), progress=False)
        assert faulty.stats["corrupt"] > 0
        assert report.ok
        assert read_tree(store, str(tmp_path / "out")) == files

    @pytest.mark.faults(seed=3, rate_corrupt=1.0)
    def test_always_corrupt_fails_and_leaves_nothing(
        self, store: Storage, bucket: str, tmp_path, faulty: FaultProxy
    ) -> None:
        store.write_bytes(f"gs://{bucket}/d/obj", b"payload" * 100)
        out = tmp_path / "out"
        report = replicate(f"gs://{bucket}/d", [str(out)], storage=storage_via(faulty),
                           progress=False, copy_attempts=2)
        assert not report.ok and report.destinations[0].failed == 1
        assert "CRC32C" in report.destinations[0].errors[0]
        assert not out.exists() or list(out.rglob("*")) == []


class TestRequestsPerObject:
    """gs→local fetches each object with one GET (the listing already gave its generation,
    size and CRC32C); an unchanged re-run sends no request about any object."""

    @pytest.mark.faults(seed=0)
    def test_one_get_per_object(
        self, store: Storage, bucket: str, tmp_path, faulty: FaultProxy
    ) -> None:
        files = {f"o{i:02d}": os.urandom(1000 + i) for i in range(20)}
        for key, data in files.items():
            store.write_bytes(f"gs://{bucket}/d/{key}", data)
        out = str(tmp_path / "out")
        flaky = storage_via(faulty)
        faulty.reset_stats()
        assert replicate(f"gs://{bucket}/d", [out], storage=flaky, progress=False).ok
        per_object = [h for h in faulty.history if "/o/d%2Fo" in h[1]]
        assert sorted(h[1].split("/o/d%2F")[1].split("?")[0] for h in per_object) == sorted(files)
        assert all(h[0] == "GET" and "alt=media" in h[1] for h in per_object)
        assert read_tree(store, out) == files
        faulty.reset_stats()
        again = replicate(f"gs://{bucket}/d", [out], storage=flaky, progress=False)
        assert again.destinations[0].skipped == len(files)
        assert [h for h in faulty.history if "/o/d%2Fo" in h[1]] == []


class TestPermanentErrors:
    """Every request failing: retries run out with a message naming the URI; bounded attempts."""

    @pytest.mark.faults(seed=1, rate_503=1.0)
    def test_exhausted(self, bucket: str, tmp_path, faulty: FaultProxy) -> None:
        from vertex_patterns.errors import RetriesExhaustedError

        flaky = storage_via(faulty)
        with pytest.raises(RetriesExhaustedError, match=f"gs://{bucket}/x"):
            flaky.read_bytes(f"gs://{bucket}/x")
        # The client also sends background bucket-metadata GETs; count the object's requests.
        object_requests = [h for h in faulty.history if "/o/x" in h[1]]
        assert len(object_requests) == FAST_RETRY.max_attempts


class TestBatchedCopies:
    """gs→gs copies of small objects go in batch requests through the client library: one
    request per batch, no per-object rewrite, nothing through the client; a copy the batch
    did not make falls back to a rewrite of its own."""

    @pytest.mark.faults(seed=5)
    def test_small_objects_go_in_batches(
        self, store: Storage, make_bucket, faulty: FaultProxy
    ) -> None:
        src, dst = f"gs://{make_bucket('bsrc')}/d", f"gs://{make_bucket('bdst')}/d"
        files = {f"k/{i:03d}": os.urandom(100 + i) for i in range(150)}
        for key, data in files.items():
            store.write_bytes(f"{src}/{key}", data)
        faulty.reset_stats()
        report = replicate(src, [dst], storage=storage_via(faulty), workers=4, progress=False)
        assert report.ok, report.to_table()
        assert report.destinations[0].copied == len(files)
        assert report.destinations[0].bytes_through_client == 0
        assert read_tree(store, dst) == files
        batches = [h for h in faulty.history if h[0] == "POST" and "/batch/storage/v1" in h[1]]
        assert 2 <= len(batches) <= len(files) // 10
        assert not [h for h in faulty.history if "rewriteTo" in h[1] or "copyTo" in h[1]]

    def test_copy_batch_reports_each_item(self, store: Storage, make_bucket) -> None:
        """A missing source fails only its own item (None); the others are copied."""
        src, dst = make_bucket("bsrc"), make_bucket("bdst")
        present = {f"o{i}": os.urandom(50 + i) for i in range(5)}
        listed = []
        for key, data in present.items():
            listed.append(store.write_bytes(f"gs://{src}/{key}", data))
        ghost = replace(listed[0], uri=f"gs://{src}/missing", key="missing")
        items = [(info, f"gs://{dst}/{info.uri.rsplit('/', 1)[1]}", 0)
                 for info in [*listed[:2], ghost, *listed[2:]]]
        results = store.gcs.copy_batch(items)
        assert results[2] is None
        copied = [r for i, r in enumerate(results) if i != 2]
        assert all(r is not None for r in copied)
        for key, data in present.items():
            assert store.read_bytes(f"gs://{dst}/{key}") == data
        assert [r.crc32c for r in copied if r is not None] == [i.crc32c for i in listed]
