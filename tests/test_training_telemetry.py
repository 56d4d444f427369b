"""Trainer telemetry: structured logs, metrics stream, TensorBoard, W&B mirror, goodput ledger."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Iterator

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vertex_patterns import __version__
from vertex_patterns.storage import Storage
from vertex_patterns.training.goodput import GoodputRecorder, process_start_time
from vertex_patterns.training.goodput_summary import (
    CATEGORY_KEYS,
    AttemptRecord,
    read_attempts,
    summarize,
)
from vertex_patterns.training.logs import (
    LABELS,
    REPORTED_ERROR_EVENT,
    SOURCE_LOCATION,
    report_error,
    setup_logging,
)
from vertex_patterns.training.metrics import (
    MetricsStream,
    accelerator_stats,
    list_chunks,
    read_metrics,
)
from vertex_patterns.training.tensorboard import TensorBoardWriter
from vertex_patterns.training.wandb_mirror import WandbMirror


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Restores the root logger's handlers and level after a test that installs ours."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _run_python(code: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, **kwargs)


# --- structured logs ----------------------------------------------------------------------


class TestLogLineShape:
    """Each record is one JSON object on one line with Cloud Logging's special fields."""

    def test_fields(self, root_logging):
        out = io.StringIO()
        setup_logging("INFO", out, labels={"run": "r1"})
        line_no = sys._getframe().f_lineno + 1
        logging.getLogger("vertex_patterns.test").info("saved %s", "ckpt\nx",
                                                       extra={"json_fields": {"step": 7}})
        (entry,) = _lines(out)
        assert entry["severity"] == "INFO"
        assert entry["message"] == "saved ckpt\nx"
        assert entry["logger"] == "vertex_patterns.test"
        assert entry["step"] == 7
        assert entry[LABELS] == {"run": "r1"}
        assert entry[SOURCE_LOCATION] == {"file": __file__, "line": line_no,
                                          "function": "test_fields"}
        when = dt.datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert abs(when.replace(tzinfo=dt.timezone.utc).timestamp() - time.time()) < 3600
        assert out.getvalue().count("\n") == 1

    def test_setup_twice_does_not_double_lines(self, root_logging):
        out = io.StringIO()
        setup_logging("INFO", out)
        setup_logging("INFO", out)
        logging.getLogger("x").warning("once")
        assert len(_lines(out)) == 1

    def test_level_filters_and_bad_level_rejected(self, root_logging):
        out = io.StringIO()
        setup_logging("WARNING", out)
        logging.getLogger("x").info("hidden")
        assert out.getvalue() == ""
        with pytest.raises(ValueError, match="unknown log level"):
            setup_logging("LOUD", out)


class TestSeverityMapping:
    """Python levels map to Cloud Logging LogSeverity names."""

    @pytest.mark.parametrize(("level", "name"), [
        (logging.DEBUG, "DEBUG"), (logging.INFO, "INFO"), (logging.WARNING, "WARNING"),
        (logging.ERROR, "ERROR"), (logging.CRITICAL, "CRITICAL"), (25, "INFO"), (5, "DEFAULT"),
    ])
    def test_mapping(self, root_logging, level, name):
        out = io.StringIO()
        setup_logging(1, out)
        logging.getLogger("x").log(level, "m")
        assert _lines(out)[0]["severity"] == name


class TestJsonFields:
    """json_fields add payload keys but cannot override special fields or leak secrets."""

    def test_reserved_and_secrets(self, root_logging):
        out = io.StringIO()
        setup_logging("INFO", out)
        logging.getLogger("x").error("m", extra={"json_fields": {
            "severity": "DEBUG", "api_key": "AKIA-SECRET-1", "nested": {"password": "hunter2"},
            "loss": float("nan"), "uri": "gs://b/run"}})
        (entry,) = _lines(out)
        assert entry["severity"] == "ERROR"
        assert entry["api_key"] == "[REDACTED]"
        assert entry["nested"] == {"password": "[REDACTED]"}
        assert entry["loss"] == "nan"
        assert entry["uri"] == "gs://b/run"
        assert "AKIA-SECRET-1" not in out.getvalue() and "hunter2" not in out.getvalue()


class TestExceptionTrace:
    """A record logged with exc_info carries the traceback in message and stack_trace."""

    def test_exc_info(self, root_logging):
        out = io.StringIO()
        setup_logging("INFO", out)
        try:
            raise KeyError("missing")
        except KeyError:
            logging.getLogger("x").exception("step failed")
        (entry,) = _lines(out)
        assert entry["severity"] == "ERROR"
        assert entry["stack_trace"].startswith("Traceback (most recent call last):")
        assert entry["stack_trace"].endswith("KeyError: 'missing'")
        assert entry["message"].startswith("step failed\nTraceback (most recent call last):")


class TestErrorReportingEvent:
    """report_error writes a ReportedErrorEvent whose message is a Python traceback."""

    def test_raised(self):
        out = io.StringIO()

        def explode():
            raise ValueError("bad shard")

        try:
            explode()
        except ValueError as exc:
            report_error(exc, service="svc", version="9", stream=out)
        (event,) = _lines(out)
        assert event["@type"] == REPORTED_ERROR_EVENT
        assert event["severity"] == "ERROR"
        assert event["message"].startswith("Traceback (most recent call last):")
        assert event["message"].endswith("ValueError: bad shard")
        assert event["serviceContext"] == {"service": "svc", "version": "9"}
        assert event["context"]["reportLocation"]["functionName"] == "explode"
        assert event["context"]["reportLocation"]["filePath"] == __file__

    def test_never_raised_gets_callers_stack(self):
        out = io.StringIO()
        report_error(RuntimeError("not raised"), stream=out)
        (event,) = _lines(out)
        assert event["message"].startswith("Traceback (most recent call last):")
        assert event["message"].endswith("RuntimeError: not raised")
        assert event["context"]["reportLocation"]["functionName"] == \
            "test_never_raised_gets_callers_stack"
        assert event["serviceContext"]["version"] == __version__


class TestExcepthook:
    """An uncaught error in a real process becomes one Error Reporting line on stdout."""

    SCRIPT = """
        import logging, threading
        from vertex_patterns.training.logs import install_excepthook, setup_logging
        setup_logging("INFO", labels={"run": "r9"})
        install_excepthook(service="trainer-test")
        logging.getLogger("t").info("starting")
        def in_thread():
            raise OSError("thread died")
        t = threading.Thread(target=in_thread); t.start(); t.join()
        def train():
            raise RuntimeError("loss is nan")
        train()
    """

    def test_uncaught(self):
        proc = _run_python(self.SCRIPT)
        assert proc.returncode == 1
        entries = [json.loads(line) for line in proc.stdout.splitlines()]
        assert entries[0]["message"] == "starting"
        errors = [e for e in entries if e.get("@type") == REPORTED_ERROR_EVENT]
        assert [e["message"].splitlines()[-1] for e in errors] == [
            "OSError: thread died", "RuntimeError: loss is nan"]
        main = errors[1]
        assert main["message"].startswith("Traceback (most recent call last):")
        assert main["serviceContext"] == {"service": "trainer-test", "version": __version__}
        assert main["context"]["reportLocation"]["functionName"] == "train"
        assert main[LABELS] == {"run": "r9"}
        assert "Traceback" not in proc.stderr


# --- metrics stream -----------------------------------------------------------------------


class TestMetricsChunks:
    """Flushes write new numbered chunk objects; readers get every record in order."""

    def test_chunks_in_order(self, root_uri, store):
        uri = f"{root_uri}/metrics"
        with MetricsStream(uri, attempt="a1", storage=store, flush_every_s=3600,
                           flush_every_records=100) as stream:
            for step in range(250):
                stream.write({"step": step, "loss": 1.0 / (step + 1)})
        chunks = list_chunks(uri, store)
        assert [(a, s) for a, s, _ in chunks] == [("a1", 0), ("a1", 1), ("a1", 2)]
        assert [o.key for o in store.list(uri)] == [
            "a1-000000.jsonl", "a1-000001.jsonl", "a1-000002.jsonl"]
        sizes = [len(store.read_bytes(u).splitlines()) for _, _, u in chunks]
        assert sizes == [100, 100, 50]
        records = read_metrics(uri, store)
        assert [r["step"] for r in records] == list(range(250))
        assert all(isinstance(r["time"], float) for r in records)

    def test_attempts_and_reused_attempt_id(self, root_uri, store):
        uri = f"{root_uri}/metrics"
        for attempt, steps in [("a1", range(0, 3)), ("a2", range(2, 5)), ("a2", range(5, 6))]:
            with MetricsStream(uri, attempt=attempt, storage=store) as stream:
                for step in steps:
                    stream.write({"step": step, "time": 1.0})
        assert [(a, s) for a, s, _ in list_chunks(uri, store)] == [
            ("a1", 0), ("a2", 0), ("a2", 1)]
        records = read_metrics(uri, store)
        assert [r["step"] for r in records] == [0, 1, 2, 2, 3, 4, 5]
        assert {r["time"] for r in records} == {1.0}


class TestMetricsNothingLostOnClose:
    """Records buffered below every threshold are written by close()."""

    def test_close_writes_tail(self, root_uri, store):
        uri = f"{root_uri}/metrics"
        stream = MetricsStream(uri, attempt="a1", storage=store, flush_every_s=3600)
        stream.write({"event": "checkpoint", "step": 10, "blocking_s": 0.2})
        stream.write({"step": 11, "loss": 0.5})
        assert read_metrics(uri, store) == []
        stream.close()
        assert [r.get("step") for r in read_metrics(uri, store)] == [10, 11]
        with pytest.raises(ValueError, match="closed"):
            stream.write({"step": 12})

    def test_failed_chunk_is_retried_in_order(self, tmp_path, store):
        blocker = tmp_path / "run"
        blocker.write_text("a file where the run directory should be")
        uri = str(blocker / "metrics")
        stream = MetricsStream(uri, attempt="a1", storage=store)
        stream.write({"step": 1})
        with pytest.raises(Exception, match="not written"):
            stream.flush()
        blocker.unlink()
        stream.write({"step": 2})
        stream.close()
        assert [r["step"] for r in read_metrics(uri, store)] == [1, 2]
        assert len(list_chunks(uri, store)) == 1


class TestAcceleratorStats:
    """Without a GPU there is nothing to report, and asking never raises."""

    def test_cpu(self):
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        assert accelerator_stats() == {}


# --- TensorBoard --------------------------------------------------------------------------


def _read_scalars(log_dir: str) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(log_dir)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _local_copy(store: Storage, uri: str, dest: str) -> str:
    for info in store.list(uri):
        path = os.path.join(dest, *info.key.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        store.download_file(info.uri, path)
    return dest


class TestTensorBoardScalars:
    """Scalars written through the writer read back with TensorBoard's own reader."""

    def test_scalars(self, root_uri, store, tmp_path):
        uri = f"{root_uri}/logs"
        with TensorBoardWriter(uri, storage=store) as tb:
            for step in range(1, 4):
                tb.scalars(step, {"loss": 1.0 / step, "lr": 0.5, "note": "x", "ok": True})
        scalars = _read_scalars(_local_copy(store, uri, str(tmp_path / "read")))
        assert set(scalars) == {"loss", "lr"}
        assert scalars["loss"] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
        assert [s for s, _ in scalars["lr"]] == [1, 2, 3]

    def test_gcs_upload_is_incremental(self, bucket, store, tmp_path):
        uri = f"gs://{bucket}/run/logs"
        tb = TensorBoardWriter(uri, storage=store, prefix="train/")
        tb.scalars(1, {"loss": 2.0})
        tb.flush()
        first = _read_scalars(_local_copy(store, uri, str(tmp_path / "r1")))
        assert first == {"train/loss": [(1, 2.0)]}
        tb.scalars(2, {"loss": 1.0})
        tb.flush()
        second = _read_scalars(_local_copy(store, uri, str(tmp_path / "r2")))
        assert second == {"train/loss": [(1, 2.0), (2, 1.0)]}
        local_dir = tb.local_dir
        tb.close()
        assert not os.path.exists(local_dir)


# --- W&B mirror ---------------------------------------------------------------------------


class TestWandbNeverFatal:
    """A missing or failing wandb warns once, disables the mirror and never raises."""

    def test_off_by_default_imports_nothing(self, monkeypatch, caplog):
        monkeypatch.setitem(sys.modules, "wandb", None)
        mirror = WandbMirror.maybe(False, "p", "r", {})
        mirror.log(1, {"loss": 1.0})
        mirror.finish()
        assert not mirror.enabled
        assert not caplog.records

    def test_not_installed(self, monkeypatch, caplog):
        monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
        with caplog.at_level(logging.WARNING):
            mirror = WandbMirror.maybe(True, "p", "r", {"lr": 1e-3})
            mirror.log(1, {"loss": 1.0})
            mirror.finish()
        assert not mirror.enabled
        assert [r.getMessage() for r in caplog.records if "not installed" in r.getMessage()]
        assert len(caplog.records) == 1

    def test_init_and_log_failures(self, monkeypatch, caplog):
        # wandb itself is not installed here; a stand-in module shows the failure handling.
        fake = types.ModuleType("wandb")
        calls: list[dict] = []

        class Run:
            def log(self, values, step):
                calls.append(values)
                if len(calls) > 1:
                    raise ConnectionError("api.wandb.ai unreachable")

            def finish(self):
                raise AssertionError("finish must not be called on a disabled mirror")

        fake.init = lambda **kwargs: Run()  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "wandb", fake)
        with caplog.at_level(logging.WARNING):
            mirror = WandbMirror.maybe(True, "p", "r", {}, run_id="run-1")
            mirror.log(1, {"loss": 1.0})
            mirror.log(2, {"loss": 0.5})
            mirror.log(3, {"loss": 0.2})
            mirror.finish()
        assert calls == [{"loss": 1.0}, {"loss": 0.5}]
        assert len(caplog.records) == 1 and "log failed" in caplog.records[0].getMessage()

        def refuse(**kwargs):
            raise PermissionError("no API key")

        fake.init = refuse  # type: ignore[attr-defined]
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert not WandbMirror.maybe(True, "p", "r", {}).enabled
        assert len(caplog.records) == 1 and "init failed" in caplog.records[0].getMessage()


# --- goodput ledger -----------------------------------------------------------------------


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _attempt(run_dir, store, clock, attempt, start, startup, prep, restore, resume_from,
             steps, checkpoints, step_s=1.0):
    """Drives a recorder through one attempt; the clock ends at the attempt's last step."""
    clock.now = start
    rec = GoodputRecorder(run_dir, attempt=attempt, storage=store, process_start=start,
                          clock=clock, flush_every_s=3600)
    clock.now += startup
    rec.startup_done()
    rec.training_prep(prep)
    clock.now += prep
    rec.restore(restore, resume_from)
    clock.now += restore
    for step in steps:
        rec.data_loading(0.125)
        clock.now += 0.125
        rec.step(step, step_s)
        clock.now += step_s
        if step in checkpoints:
            rec.checkpoint(step, 0.25)
            clock.now += 0.25
    return rec


class TestGoodputAggregation:
    """Steps beyond the next attempt's resume point move from productive to wasted; every
    second between first start and last record lands in exactly one category."""

    def test_two_attempts(self, root_uri, store):
        run_dir = f"{root_uri}/run"
        clock = FakeClock(0.0)
        # Attempt 1: steps 1..12, checkpoint at 10, then SIGKILLed after a flush.
        a1 = _attempt(run_dir, store, clock, "a1", start=1000.0, startup=2.0, prep=1.0,
                      restore=0.5, resume_from=None, steps=range(1, 13), checkpoints={10})
        clock.now += 0.5  # idle time inside the attempt, unaccounted
        a1.flush()
        end1 = clock.now
        # Attempt 2 starts 10 s later, restores step 10: steps 11 and 12 are recomputed.
        a2 = _attempt(run_dir, store, clock, "a2", start=end1 + 10.0, startup=1.5, prep=1.0,
                      restore=0.75, resume_from=10, steps=range(11, 21), checkpoints={20})
        summary = a2.finish("completed")

        first, second = summary.attempts
        # Attempt 1: 2 + 1 + 0.5 + 12 * (0.125 + 1) + 0.25 + 0.5 idle = 17.75 s.
        assert end1 - 1000.0 == 17.75
        assert first.seconds == {
            "productive_s": 10.0, "program_startup_s": 2.0, "accelerator_init_s": 0.0,
            "training_prep_s": 1.0, "data_loading_s": 1.5, "checkpoint_save_s": 0.25,
            "checkpoint_restore_s": 0.5, "wasted_progress_s": 2.0, "wasted_by_rewind_s": 0.0,
            "infrastructure_recovery_s": 0.0, "other_s": 0.5}
        assert (first.steps_lost, first.outcome, first.resumed_from_step) == (2, None, None)
        # Attempt 2: 1.5 + 1 + 0.75 + 10 * 1.125 + 0.25 = 14.75 s, preceded by a 10 s gap.
        assert second.seconds == {
            "productive_s": 10.0, "program_startup_s": 1.5, "accelerator_init_s": 0.0,
            "training_prep_s": 1.0, "data_loading_s": 1.25, "checkpoint_save_s": 0.25,
            "checkpoint_restore_s": 0.75, "wasted_progress_s": 0.0, "wasted_by_rewind_s": 0.0,
            "infrastructure_recovery_s": 10.0, "other_s": 0.0}
        assert (second.steps_lost, second.outcome, second.resumed_from_step) == \
            (0, "completed", 10)

        wall = 17.75 + 10.0 + 14.75
        assert summary.wall_s == wall
        assert summary.seconds["productive_s"] == 20.0
        assert sum(summary.seconds[k] for k in CATEGORY_KEYS) == wall
        assert summary.steps_lost == 2
        assert summary.goodput_pct == pytest.approx(100 * 20.0 / wall)
        assert summary.goodput_after_startup_pct == pytest.approx(
            100 * 20.0 / (wall - 3.5 - 10.0))

        written = json.loads(store.read_bytes(f"{run_dir}/goodput.json"))
        assert written == json.loads(json.dumps(summary.to_dict()))
        assert written["total"]["steps_lost"] == 2
        assert written["total"]["wall_s"] == wall
        assert [a["attempt"] for a in written["attempts"]] == ["a1", "a2"]
        assert written["categories"]["wasted_progress_s"] == \
            "BadputType.WASTED_PROGRESS_FROM_DISRUPTION"
        assert sorted(o.key for o in store.list(f"{run_dir}/goodput")) == ["a1.json", "a2.json"]

        table = summary.to_table()
        assert "wasted progress" in table and "#2: a2 (completed)" in table
        assert f"goodput {100 * 20.0 / wall:.1f}% of wall time" in table


class TestLostWorkRules:
    """Which attempt's restore decides lost work, and how lost time is measured."""

    @staticmethod
    def record(attempt, start, *, restored=True, resumed=None, first=None, last=None,
               marks=None, step_s=1.0):
        steps = 0 if first is None else last - first + 1
        return AttemptRecord(attempt=attempt, process_start=start, updated=start + 100.0,
                             restored=restored, resumed_from_step=resumed, first_step=first,
                             last_step=last, steps=steps, step_time_s=steps * step_s,
                             marks=marks or {})

    def test_fresh_restart_wastes_every_step(self):
        summary = summarize([self.record("b", 500.0, resumed=None, first=1, last=3),
                             self.record("a", 0.0, resumed=None, first=1, last=5)])
        assert [a.attempt for a in summary.attempts] == ["a", "b"]
        assert summary.attempts[0].steps_lost == 5
        assert summary.attempts[0].seconds["wasted_progress_s"] == 5.0
        assert summary.attempts[0].seconds["productive_s"] == 0.0

    def test_attempt_that_never_restored_is_skipped(self):
        summary = summarize([
            self.record("a", 0.0, first=1, last=12, marks={10: 10.0}),
            self.record("b", 200.0, restored=False),           # killed during startup
            self.record("c", 400.0, resumed=10, first=11, last=15),
        ])
        assert [a.steps_lost for a in summary.attempts] == [2, 0, 0]
        assert summary.attempts[1].resumed_from_step is None

    def test_resume_without_mark_uses_mean_step_time(self):
        summary = summarize([
            self.record("a", 0.0, first=1, last=10, step_s=0.5),
            self.record("b", 200.0, resumed=6, first=7, last=10),
        ])
        assert summary.attempts[0].steps_lost == 4
        assert summary.attempts[0].seconds["wasted_progress_s"] == pytest.approx(2.0)

    def test_resume_from_own_restore_point_loses_all(self):
        summary = summarize([
            self.record("a", 0.0, resumed=10, first=11, last=15),
            self.record("b", 200.0, resumed=10, first=11, last=20),
        ])
        assert summary.attempts[0].steps_lost == 5

    def test_empty(self):
        summary = summarize([])
        assert (summary.wall_s, summary.goodput_pct, summary.steps_lost) == (0.0, 0.0, 0)


class TestGoodputSurvivesSigkill:
    """An attempt's file holds everything up to its last flush when the process is killed."""

    SCRIPT = """
        import sys, time
        from vertex_patterns.training.goodput import GoodputRecorder
        rec = GoodputRecorder(sys.argv[1], attempt="a1", flush_every_s=3600)
        rec.startup_done()
        rec.restore(0.5, None)
        for step in range(1, 13):
            rec.step(step, 0.25)
            if step == 10:
                rec.checkpoint(10, 0.125)
        rec.flush()
        rec.step(13, 0.25)          # never flushed: lost with the process
        print("flushed", flush=True)
        time.sleep(600)
    """

    def test_sigkill(self, root_uri, store):
        run_dir = f"{root_uri}/run"
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(self.SCRIPT), run_dir],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "flushed"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL

        (killed,) = read_attempts(run_dir, store)
        assert (killed.first_step, killed.last_step, killed.steps) == (1, 12, 12)
        assert killed.marks == {10: 2.5} and killed.outcome is None
        assert killed.process_start <= killed.updated

        # This process started long before the killed one; a real attempt 2 starts after it.
        rec = GoodputRecorder(run_dir, attempt="a2", storage=store, process_start=time.time())
        rec.startup_done()
        rec.restore(0.5, 10)
        for step in range(11, 15):
            rec.step(step, 0.25)
        summary = rec.finish("completed")
        first, second = summary.attempts
        assert first.attempt == "a1" and first.steps_lost == 2
        assert first.seconds["wasted_progress_s"] == 0.5
        assert first.seconds["productive_s"] == 2.5
        assert second.seconds["productive_s"] == 1.0
        assert json.loads(store.read_bytes(f"{run_dir}/goodput.json"))["total"]["steps_lost"] == 2


class TestGoodputPeriodicFlush:
    """step() writes the attempt file once flush_every_s has passed, without being asked."""

    def test_step_flushes(self, tmp_path, store):
        clock = FakeClock(100.0)
        rec = GoodputRecorder(str(tmp_path), attempt="a1", storage=store, process_start=99.0,
                              flush_every_s=10.0, clock=clock)
        rec.step(1, 1.0)
        assert not (tmp_path / "goodput" / "a1.json").exists()
        clock.now = 111.0
        rec.step(2, 1.0)
        deadline = time.monotonic() + 30
        path = tmp_path / "goodput" / "a1.json"
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        record = AttemptRecord.from_json(path.read_bytes())
        assert (record.last_step, record.updated, record.process_start) == (2, 111.0, 99.0)

    def test_bad_input(self, tmp_path, store):
        with pytest.raises(ValueError, match="attempt id"):
            GoodputRecorder(str(tmp_path), attempt="a/b", storage=store)
        rec = GoodputRecorder(str(tmp_path), attempt="a1", storage=store)
        with pytest.raises(ValueError, match="negative"):
            rec.step(1, -1.0)


class TestGoodputAfterFinish:
    """Calls after finish() (a trainer's finally block) still write and never raise."""

    def test_finish_twice(self, tmp_path, store):
        clock = FakeClock(10.0)
        rec = GoodputRecorder(str(tmp_path), attempt="a1", storage=store, process_start=0.0,
                              clock=clock)
        rec.step(1, 2.0)
        first = rec.finish("preempted")
        clock.now = 12.0
        rec.step(2, 2.0)
        second = rec.finish("completed")
        assert (first.wall_s, second.wall_s) == (10.0, 12.0)
        assert second.seconds["productive_s"] == 4.0
        assert AttemptRecord.from_json(
            (tmp_path / "goodput" / "a1.json").read_bytes()).outcome == "completed"


class TestProcessStartTime:
    """The default process start is when the process started, not when the recorder did."""

    def test_fresh_process(self):
        proc = _run_python("""
            import time
            time.sleep(0.5)
            from vertex_patterns.training.goodput import process_start_time
            print(time.time() - process_start_time())
        """)
        assert proc.returncode == 0, proc.stderr
        assert 0.5 <= float(proc.stdout) < 120

    def test_not_in_future(self):
        assert process_start_time() <= time.time()
