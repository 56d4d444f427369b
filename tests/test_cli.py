"""The CLI: one-line errors with exit 2 on bad input, reports, exit codes, interrupt-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import read_tree, write_tree
from vertex_patterns.emulators.gcs import EMULATOR_ENV, GcsEmulator, free_port
from vertex_patterns.storage import Storage


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vertex_patterns.cli", *args],
                          capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


def assert_one_line_error(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert needle in lines[0]


class TestBadInput:
    """Each bad input: one line naming the problem, exit 2, nothing written."""

    def test_bad_uris_and_options(self, gcs_emulator: GcsEmulator, tmp_path) -> None:
        dst = str(tmp_path / "dst")
        assert_one_line_error(run_cli("replicate", "gs:/x", dst), "gs:/x")
        assert_one_line_error(run_cli("replicate", "gs://", dst), "no bucket")
        assert_one_line_error(run_cli("replicate", str(tmp_path), dst, "--workers", "0"),
                              "--workers")
        assert_one_line_error(run_cli("replicate", str(tmp_path)), "DST")
        assert_one_line_error(run_cli("replicate", "--bogus", str(tmp_path), dst), "--bogus")
        assert not os.path.exists(dst)

    def test_missing_bucket_and_overlap(self, store: Storage, bucket: str, tmp_path) -> None:
        write_tree(store, f"gs://{bucket}/d", {"a": b"1"})
        assert_one_line_error(run_cli("replicate", f"gs://{bucket}/d", "gs://nope-bkt-404/x"),
                              "gs://nope-bkt-404")
        assert_one_line_error(run_cli("replicate", f"gs://{bucket}/d", f"gs://{bucket}/d"),
                              "equal to the source")
        assert_one_line_error(run_cli("replicate", f"gs://{bucket}/d", f"gs://{bucket}/d/x"),
                              "overlapping")
        assert [o.key for o in store.list(f"gs://{bucket}")] == ["d/a"]

    def test_empty_source_with_delete(self, store: Storage, bucket: str, tmp_path) -> None:
        empty = tmp_path / "empty"
        empty.mkdir()
        write_tree(store, f"gs://{bucket}/d", {"keep": b"1"})
        proc = run_cli("replicate", str(empty), f"gs://{bucket}/d", "--delete")
        assert_one_line_error(proc, "--allow-empty-source")
        assert store.exists(f"gs://{bucket}/d/keep")


class TestReport:
    """The table goes to stdout; --report writes the documented JSON shape; exit 0 on success."""

    def test_report_json(self, store: Storage, bucket: str, tmp_path) -> None:
        src = tmp_path / "src"
        write_tree(store, str(src), {"a": b"12345", "b/c": b"6"})
        report_file = tmp_path / "report.json"
        proc = run_cli("replicate", str(src), f"gs://{bucket}/d", "--report", str(report_file))
        assert proc.returncode == 0, proc.stderr
        assert "result: OK" in proc.stdout
        report = json.loads(report_file.read_text())
        assert set(report) == {"source", "ok", "destinations"}
        assert report["ok"] is True and report["source"] == str(src)
        (dest,) = report["destinations"]
        assert set(dest) == {"uri", "copied", "skipped", "deleted", "failed", "bytes_copied",
                             "bytes_through_client", "seconds"}
        assert (dest["copied"], dest["bytes_copied"], dest["bytes_through_client"]) == (2, 6, 6)


class TestInterruptResume:
    """A run killed mid-way leaves no partial file; re-running finishes without recopying."""

    def test_sigkill_then_resume(self, store: Storage, bucket: str, tmp_path) -> None:
        src = f"gs://{bucket}/data"
        files = {f"obj-{i:04d}": os.urandom(256 * 1024) for i in range(120)}
        write_tree(store, src, files)
        dest = tmp_path / "dest"
        proc = subprocess.Popen(
            [sys.executable, "-m", "vertex_patterns.cli", "replicate", src, str(dest),
             "--workers", "2", "--no-progress"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = len(os.listdir(dest)) if dest.exists() else 0
            if done >= 20 or proc.poll() is not None:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        copied_before = {p.name for p in dest.iterdir() if not p.name.startswith(".")}
        assert 0 < len(copied_before) < len(files), "the kill should land mid-run"
        for name in copied_before:  # whatever sits at a final name is complete
            assert (dest / name).read_bytes() == files[name]
        report_file = tmp_path / "r.json"
        rerun = run_cli("replicate", src, str(dest), "--report", str(report_file))
        assert rerun.returncode == 0, rerun.stderr
        (d,) = json.loads(report_file.read_text())["destinations"]
        assert d["skipped"] == len(copied_before)
        assert d["copied"] == len(files) - len(copied_before)
        assert read_tree(store, str(dest)) == files
        assert [p for p in os.listdir(dest) if "vptmp" in p] == []


class TestEmulatorsUp:
    """`emulators up` prints the export line, serves the GCS API, and stops on SIGTERM."""

    def test_up_and_sigterm(self, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != EMULATOR_ENV}
        proc = subprocess.Popen(
            [sys.executable, "-m", "vertex_patterns.cli", "emulators", "up", "--gcs-port",
             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline().strip()
            assert first == f"export {EMULATOR_ENV}=http://127.0.0.1:{port}"
            monkeypatch.setenv(EMULATOR_ENV, first.split("=", 1)[1])
            store = Storage()
            store.gcs.client().create_bucket("up-test")
            store.write_bytes("gs://up-test/x", b"hi")
            assert store.read_bytes("gs://up-test/x") == b"hi"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
            assert "Traceback" not in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()

    def test_port_taken(self, gcs_emulator: GcsEmulator) -> None:
        proc = run_cli("emulators", "up", "--gcs-port", str(gcs_emulator.port), timeout=30)
        assert_one_line_error(proc, "--gcs-port")


@pytest.mark.parametrize("argv", [["--version"], ["replicate", "--help"]])
def test_help_and_version(argv: list[str]) -> None:
    proc = run_cli(*argv)
    assert proc.returncode == 0 and proc.stdout
