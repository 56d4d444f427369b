"""`vertex-patterns checkpoints` list / verify / fan-out, their core, and their KFP components."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from vertex_patterns.checkpoint import CheckpointManager
from vertex_patterns.checkpoint.fanout import fan_out
from vertex_patterns.checkpoint.follow import follow_fan_out
from vertex_patterns.checkpoint.inspect import verify_checkpoints
from vertex_patterns.checkpoint.io import list_committed
from vertex_patterns.checkpoint.layout import MANIFEST, join, step_dir_name
from vertex_patterns.cli.main import main
from vertex_patterns.storage import Storage

TENSORS = "tensors-00000.safetensors"


def save_steps(directory: str, steps: Sequence[int]) -> None:
    """Commits small checkpoints (one tensor file + state.json each) with a `loss` metric."""
    with CheckpointManager(directory) as ckpt:
        for s in steps:
            ckpt.save(s, {"w": torch.full((64,), float(s)), "step": s},
                      metrics={"loss": 1.0 / (s + 1)}, blocking=True)


def flip_bit(store: Storage, uri: str) -> None:
    """Flips the lowest bit of the last byte (tensor data) of the object at `uri`."""
    data = bytearray(store.read_bytes(uri))
    data[-1] ^= 0x01
    store.write_bytes(uri, bytes(data))


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Runs the `vertex-patterns` entry point in-process: exit code, stdout, stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(result: tuple[int, str, str], needle: str) -> None:
    code, _, err = result
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


class TestList:
    """`list` shows every committed step with size, time, files, metrics and replica presence,
    and each replica's lag in steps and seconds."""

    def test_json_and_table(self, store: Storage, root_uri: str, capsys) -> None:
        primary, partial, empty = (f"{root_uri}/{n}" for n in ("primary", "partial", "empty"))
        save_steps(primary, [0, 10, 20])
        fan_out(store, primary, partial, steps=[0, 10])
        manifests = list_committed(store, primary)

        code, out, _ = cli(capsys, "checkpoints", "list", primary, "--replica", partial,
                           "--replica", empty, "--json")
        assert code == 0
        listing = json.loads(out)
        assert [c["step"] for c in listing["checkpoints"]] == [0, 10, 20]
        first = listing["checkpoints"][0]
        assert first["size_bytes"] == manifests[0].total_bytes > 0
        assert first["files"] == 2 and first["metrics"] == {"loss": 1.0}
        assert first["committed_at"].endswith("Z") and first["committed_at"][:2] == "20"
        presence = [c["on_replicas"] for c in listing["checkpoints"]]
        assert [p[partial] for p in presence] == [True, True, False]
        assert not any(p[empty] for p in presence)
        lag_partial, lag_empty = listing["replicas"]
        assert (lag_partial["uri"], lag_partial["latest_step"]) == (partial, 10)
        assert lag_partial["steps_behind"] == 10 and lag_partial["seconds_behind"] >= 0
        assert (lag_empty["latest_step"], lag_empty["steps_behind"]) == (None, 20)

        code, out, _ = cli(capsys, "checkpoints", "list", primary, "--replica", partial)
        assert code == 0
        lines = out.splitlines()
        assert "3 committed checkpoint(s)" in lines[0]
        assert lines[1].split()[:6] == ["step", "size", "committed", "(UTC)", "files", "r0"]
        rows = {line.split()[0]: line.split() for line in lines[2:5]}
        assert list(rows) == ["0", "10", "20"]
        assert rows["20"][5:] == ["no", "loss=0.047619"]
        assert rows["10"][5:] == ["yes", "loss=0.0909091"]
        assert lines[-1] == f"r0 {partial}: latest step 10, 10 step(s) and " \
            f"{lag_partial['seconds_behind']:.1f} s behind"


class TestVerify:
    """`verify` is read-only and exits 0 iff every checked checkpoint matches its manifest;
    each damaged file is named on its own line."""

    def test_good_then_bit_flip(self, store: Storage, root_uri: str, capsys) -> None:
        directory = f"{root_uri}/ckpt"
        save_steps(directory, [0, 1])
        code, out, _ = cli(capsys, "checkpoints", "verify", directory)
        assert code == 0, out
        assert out.splitlines()[-1].endswith("2 checkpoint(s) checked, 0 damaged")

        damaged = join(directory, step_dir_name(1), TENSORS)
        flip_bit(store, damaged)
        before = sorted(o.key for o in store.list(directory))
        code, out, _ = cli(capsys, "checkpoints", "verify", directory)
        assert code == 1
        assert "step 0: ok" in out and "step 1: DAMAGED" in out
        problems = [line for line in out.splitlines() if line.startswith("damaged: ")]
        assert len(problems) == 1 and problems[0].startswith(f"damaged: {damaged}: CRC32C")
        # Only the step asked for is checked.
        assert cli(capsys, "checkpoints", "verify", directory, "--step", "0")[0] == 0
        assert cli(capsys, "checkpoints", "verify", directory, "--step", "1")[0] == 1
        # Nothing moved aside: still listed, same objects.
        assert sorted(o.key for o in store.list(directory)) == before
        assert sorted(list_committed(store, directory)) == [0, 1]

    def test_unsafe_manifest_missing_file_and_uncommitted(self, store: Storage, tmp_path,
                                                          capsys) -> None:
        directory = str(tmp_path / "ckpt")
        save_steps(directory, [3, 4, 5])
        manifest_uri = join(directory, step_dir_name(5), MANIFEST)
        body = json.loads(store.read_bytes(manifest_uri))
        body["files"][0]["name"] = "../escape.safetensors"
        store.write_bytes(manifest_uri, json.dumps(body).encode())
        os.remove(join(directory, step_dir_name(4), "state.json"))
        uncommitted = tmp_path / "ckpt" / step_dir_name(7)
        uncommitted.mkdir()
        (uncommitted / TENSORS).write_bytes(b"partial")

        report = verify_checkpoints(directory)
        assert [s.step for s in report.steps] == [3, 4, 5]  # step 7 is not committed
        assert [s.damaged_files for s in report.steps] == [(), ("state.json",), (MANIFEST,)]
        assert report.metrics() == {"checked": 3.0, "damaged": 2.0}
        code, out, _ = cli(capsys, "checkpoints", "verify", directory)
        assert code == 1
        assert f"damaged: {join(directory, step_dir_name(4))}/state.json: missing" in out
        assert f"{step_dir_name(5)}/{MANIFEST}: manifest names a file outside its step" in out
        assert_usage_error(cli(capsys, "checkpoints", "verify", directory, "--step", "7"),
                           "step 7 is not committed")


class TestBadInput:
    """Bad input: exit 2, one line on stderr naming the problem, no traceback."""

    @pytest.mark.parametrize(("argv", "needle"), [
        (["verify", "gs:/x"], "gs:/x"),
        (["list", "gs://nope-bucket-404xyz/run"], "gs://nope-bucket-404xyz does not exist"),
        (["verify", "{tmp}/absent"], "does not exist"),
        (["verify", "{ckpt}", "--step", "9"], "step 9 is not committed"),
        (["verify", "{ckpt}", "--step", "-1"], "--step must be >= 0"),
        (["list", "{ckpt}", "--replica", "{ckpt}/sub"], "overlaps"),
        (["fan-out", "{ckpt}", "{tmp}/r", "--follow"], "--until-marker"),
        (["fan-out", "{ckpt}", "{tmp}/r", "--poll-seconds", "1"], "need --follow"),
        (["fan-out", "{ckpt}", "gs://nope-bucket-404xyz/r"], "does not exist"),
        (["fan-out", "{ckpt}", "{tmp}/r", "--follow", "--until-marker", "{tmp}/m",
          "--poll-seconds", "0"], "--poll-seconds must be > 0"),
    ])
    def test_one_line_exit_2(self, gcs_emulator, tmp_path, capsys, argv: list[str],
                             needle: str) -> None:
        ckpt = tmp_path / "ckpt"
        ckpt.mkdir()
        args = [a.format(tmp=tmp_path, ckpt=ckpt) for a in argv]
        assert_usage_error(cli(capsys, "checkpoints", *args), needle)
        assert not (tmp_path / "r").exists()

    def test_real_process(self, gcs_emulator, tmp_path) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "vertex_patterns.cli", "checkpoints", "verify",
             "gs://nope-bucket-404xyz/run"], capture_output=True, text=True, timeout=120,
            # torch warns at import when numpy is not installed; that is not our output.
            env={**os.environ, "PYTHONWARNINGS": "ignore::UserWarning"})
        assert_usage_error((proc.returncode, proc.stdout, proc.stderr), "does not exist")


class TestFanOut:
    """One-shot fan-out copies every committed checkpoint once (a second run copies none);
    gs→gs copies never pass bytes through this process."""

    def test_one_shot_is_idempotent(self, store: Storage, root_uri: str, capsys) -> None:
        src, r0, r1 = (f"{root_uri}/{n}" for n in ("src", "r0", "r1"))
        save_steps(src, [0, 1, 2])
        code, out, _ = cli(capsys, "checkpoints", "fan-out", src, r0, r1)
        assert code == 0, out
        assert "copied 6 checkpoint(s), 12 file(s)" in out and out.endswith("result: OK\n")
        for replica in (r0, r1):
            assert list_committed(store, replica) == list_committed(store, src)
            assert verify_checkpoints(replica).ok
        code, out, _ = cli(capsys, "checkpoints", "fan-out", src, r0, r1)
        assert code == 0 and "copied 0 checkpoint(s), 0 file(s)" in out

    def test_gs_to_gs_is_server_side(self, store: Storage, make_bucket, tmp_path) -> None:
        src = f"gs://{make_bucket('src')}/run"
        save_steps(src, [0, 1])
        total = sum(m.total_bytes for m in list_committed(store, src).values())
        summary = follow_fan_out(src, [f"gs://{make_bucket('eu')}/run"])
        assert summary.ok and summary.checkpoints_copied == 2
        assert summary.bytes_copied == total and summary.bytes_through_client == 0
        assert summary.metrics()["lag_steps_0"] == 0
        # The same copy to a local directory streams through this process.
        local = follow_fan_out(src, [str(tmp_path / "local")])
        assert local.bytes_through_client == total


class TestFollow:
    """Follow mode keeps fanning out until the marker exists, then makes a final pass that
    includes every checkpoint committed before the marker; a failed pass is retried."""

    def test_stops_when_marker_appears(self, store: Storage, root_uri: str) -> None:
        src, replica, marker = f"{root_uri}/src", f"{root_uri}/r", f"{root_uri}/DONE"
        save_steps(src, [0])

        def training_ends() -> None:
            time.sleep(0.3)
            save_steps(src, [1])  # committed just before the marker
            store.write_bytes(marker, b"done")

        thread = threading.Thread(target=training_ends)
        thread.start()
        summary = follow_fan_out(src, [replica], until_marker=marker, poll_seconds=0.05,
                                 timeout_seconds=60)
        thread.join()
        assert summary.ok and not summary.timed_out and summary.passes >= 2
        assert sorted(list_committed(store, replica)) == [0, 1]
        assert summary.checkpoints_copied == 2 and summary.lag[0].steps_behind == 0

    def test_failed_pass_is_retried(self, store: Storage, tmp_path, capsys, caplog) -> None:
        src, replica, marker = str(tmp_path / "src"), str(tmp_path / "r"), str(tmp_path / "M")
        save_steps(src, [0, 1])
        tensors = Path(join(src, step_dir_name(1), TENSORS))
        hidden = tmp_path / "hidden"
        tensors.rename(hidden)  # step 1 cannot be copied until it is back
        code, out, _ = cli(capsys, "checkpoints", "fan-out", src, replica)
        assert code == 1 and f"error: {replica}: " in out and "missing at the source" in out
        assert "copied 1 checkpoint(s)" in out  # step 0 went before step 1 failed

        def repair_then_finish() -> None:
            time.sleep(0.3)
            hidden.rename(tensors)
            store.write_bytes(marker, b"done")

        thread = threading.Thread(target=repair_then_finish)
        thread.start()
        with caplog.at_level(logging.WARNING, logger="vertex_patterns.checkpoint"):
            summary = follow_fan_out(src, [replica], until_marker=marker, poll_seconds=0.05,
                                     timeout_seconds=60)
        thread.join()
        assert any("retried at the next pass" in r.getMessage() for r in caplog.records)
        assert summary.ok and summary.errors == {} and summary.passes >= 2
        assert summary.checkpoints_copied == 1  # step 1; step 0 came over in the one-shot run
        assert sorted(list_committed(store, replica)) == [0, 1]
        assert verify_checkpoints(replica).ok

    def test_timeout_fails(self, tmp_path, capsys) -> None:
        src = str(tmp_path / "src")
        save_steps(src, [0])
        code, out, _ = cli(capsys, "checkpoints", "fan-out", src, str(tmp_path / "r"),
                           "--follow", "--until-marker", str(tmp_path / "never"),
                           "--poll-seconds", "0.05", "--timeout-seconds", "0.3")
        assert code == 1
        assert "timed out before the marker appeared" in out and "copied 1 checkpoint(s)" in out


class TestComponents:
    """Both components run under kfp.local against the emulator and report their metrics."""

    def test_fan_out_checkpoints(self, store: Storage, make_bucket, kfp_local) -> None:
        from vertex_patterns.pipelines.fan_out_checkpoints import fan_out_checkpoints

        src = f"gs://{make_bucket('src')}/run"
        save_steps(src, [0, 1, 2])
        total = sum(m.total_bytes for m in list_committed(store, src).values())
        replicas = [f"gs://{make_bucket('us')}/run", f"gs://{make_bucket('eu')}/run"]
        task = fan_out_checkpoints(source_dir=src, replica_dirs=replicas)
        metrics = task.outputs["metrics"].metadata
        assert metrics["checkpoints_copied"] == 6 and metrics["files_copied"] == 12
        assert metrics["bytes_copied"] == 2 * total and metrics["bytes_through_client"] == 0
        assert metrics["lag_steps_0"] == metrics["lag_steps_1"] == 0
        assert metrics["lag_seconds_0"] == 0
        for replica in replicas:
            assert sorted(list_committed(store, replica)) == [0, 1, 2]
        # Follow mode with the marker already there: one final pass, nothing left to copy.
        marker = f"{src}-DONE"
        store.write_bytes(marker, b"done")
        again = fan_out_checkpoints(source_dir=src, replica_dirs=replicas, follow=True,
                                    until_marker=marker, poll_seconds=1)
        assert again.outputs["metrics"].metadata["checkpoints_copied"] == 0

    def test_verify_checkpoints(self, store: Storage, make_bucket, kfp_local) -> None:
        from vertex_patterns.pipelines.verify_checkpoints import verify_checkpoints as component

        directory = f"gs://{make_bucket('ck')}/run"
        save_steps(directory, [0, 1, 2])
        task = component(checkpoint_dir=directory)
        assert task.outputs["metrics"].metadata == {"checked": 3, "damaged": 0}
        assert ": OK" in Path(task.outputs["report"].path).read_text()
        one = component(checkpoint_dir=directory, step=1)
        assert one.outputs["metrics"].metadata == {"checked": 1, "damaged": 0}
        flip_bit(store, join(directory, step_dir_name(2), TENSORS))
        with pytest.raises(RuntimeError):
            component(checkpoint_dir=directory)
