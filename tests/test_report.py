"""The run report, from a real small run: the Spot launcher on the Vertex AI emulator runs the
real trainer with run dirs on the GCS emulator; region 1 stocks out, region 2 preempts, region 3
resumes and finishes. The trainer is digits, paused in region 2 only so that the preemption
15 s into region 2's job always lands before its 80 steps are done (and, on any but a very
loaded machine, after its first ones); region 3 then trains the rest at full speed.

Invariants: every figure of the summary is what the run's files say; the HTML page is
self-contained and each of its plots really draws (headless Chromium measures the marks);
the text renderings carry the same figures; a run that failed before writing anything still
gets a report naming what is missing, also from the `publish_report` exit task under kfp.local.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import VERTEX_TEST_TIMINGS
from vertex_patterns.checkpoint.inspect import list_checkpoints
from vertex_patterns.emulators.vertex import RegionFaults, Scenario, Timings
from vertex_patterns.launcher import JobSpec, Launcher, LaunchPolicy
from vertex_patterns.launcher.history import iso
from vertex_patterns.report import (
    collect_run_summary,
    publish_report,
    render_html,
    render_markdown,
    render_table,
)
from vertex_patterns.report.collect import parse_time
from vertex_patterns.storage import Storage
from vertex_patterns.training.goodput_summary import read_attempts

REGIONS = ("us-east1", "us-west1", "europe-west4")
R1, R2, R3 = REGIONS
MAX_STEPS = 80
HELPERS = str(Path(__file__).parent / "helpers")
CONTRACT_KEYS = {"state", "regions_used", "preemptions", "steps", "goodput_pct", "model_uri",
                 "tasks"}


def launch(vertex_emulator, preempt_after_s: float):
    """One launch over fresh buckets: R1 stocks out, R2 is preempted `preempt_after_s` into
    its job, R3 finishes. R2 pauses `preempt_after_s / MAX_STEPS` a batch, so even with no
    startup time it could not finish before the preemption."""
    store = Storage()
    stem = f"rp{uuid.uuid4().hex[:8]}"
    for region in REGIONS:
        store.gcs.client().create_bucket(f"{stem}-{region}")
    template = f"gs://{stem}-{{region}}/runs/digits"
    vertex_emulator.set_scenario(Scenario(
        seed=1, regions={R1: RegionFaults(stockout_strategies=("SPOT",)),
                         R2: RegionFaults(preempt_after_seconds=(preempt_after_s,))},
        timings=Timings(**VERTEX_TEST_TIMINGS), max_preemption_restarts=0))
    command = ("python", "-m", "vertex_patterns.train", "--workload", "paced_digits:build",
               "--run-dir", "{run_dir}", "--max-steps", str(MAX_STEPS),
               "--checkpoint-every-steps", "10", "--seed", "1", "--grace-seconds", "1.8",
               "--grace-margin-seconds", "0.3")
    env = (("PYTHONPATH", HELPERS), ("PACED_SLOW_REGION", R2),
           ("PACED_PAUSE_S", str(preempt_after_s / MAX_STEPS)), ("OMP_NUM_THREADS", "1"))
    spec = JobSpec(display_name=stem, image="{region}-docker.pkg.dev/emu/trainer:1",
                   machine_type="n1-standard-4", command=command, env=env)
    policy = LaunchPolicy(project="emu-project", regions=REGIONS, run_dir_template=template,
                          poll_seconds=0.2)
    try:
        history = Launcher(spec, policy).run()
    finally:
        vertex_emulator.reset_scenario()
    return template, history


@pytest.fixture(scope="module")
def real_run(gcs_emulator, vertex_emulator):
    """One launch (stockout, preemption, resume) whose history lies on the GCS emulator.

    The preemption comes 15 s into region 2's job. On a machine so loaded that the trainer
    had not reached its first step by then (nothing to resume from), the launch is made once
    more with 40 s: the report needs a run that resumed.
    """
    for preempt_after_s in (15.0, 40.0):
        template, history = launch(vertex_emulator, preempt_after_s)
        assert [a.outcome for a in history.attempts] == ["stockout", "preempted", "succeeded"]
        if any(r.steps for r in read_attempts(template.format(region=R2))):
            break
    history_uri = f"{template.format(region=R1)}/history.json"
    Storage().write_bytes(history_uri, history.to_json().encode())
    return history_uri, template, history


def task_list(history) -> list[dict]:
    """Pipeline tasks around the real launch: replication before it, verification after."""
    first = parse_time(history.attempts[0].started)
    last = parse_time(history.attempts[-1].ended)
    assert first is not None and last is not None

    def task(name: str, start: float, end: float) -> dict:
        return {"name": name, "state": "SUCCEEDED", "start_time": iso(start),
                "end_time": iso(end), "seconds": round(end - start, 6)}

    return [task("replicate-data", first - 6.0, first - 2.0),
            task("spot-train", first - 1.0, last),
            task("verify-checkpoints", last + 1.0, last + 3.0)]


class TestSummaryIsWhatTheRunWrote:
    """Each figure of the summary equals what the history, ledgers, metrics and checkpoints
    of the run say, read here independently."""

    def test_figures(self, real_run) -> None:
        history_uri, template, _ = real_run
        summary = collect_run_summary(history_uri, template, REGIONS)
        body = json.loads(json.dumps(summary.to_dict()))
        assert body.keys() >= CONTRACT_KEYS
        assert body["state"] == "SUCCEEDED" and summary.missing == []
        assert body["preemptions"] == 1 and summary.stockouts == 1
        assert body["regions_used"] == [R2, R3]  # the stockout's job never ran
        assert body["steps"] == MAX_STEPS
        final_dir = template.format(region=R3)
        assert body["model_uri"] == f"{final_dir}/model"
        assert 0 < body["goodput_pct"] <= 100
        assert [a["outcome"] for a in body["attempts"]] == ["stockout", "preempted",
                                                              "succeeded"]
        assert [a["start_s"] for a in body["attempts"]] == sorted(
            a["start_s"] for a in body["attempts"])

        # Loss: the preempted attempt's series, then the resumed one's, up to the last step.
        assert [s.region for s in summary.loss] == [R2, R3]
        assert summary.loss[-1].points[-1][0] == MAX_STEPS
        resumed = read_attempts(final_dir)[0].resumed_from_step
        preempted = read_attempts(template.format(region=R2))[0].last_step
        assert resumed is not None and resumed > 0 and preempted is not None
        assert summary.loss[-1].points[0][0] == resumed + 1
        assert [(m.kind, m.step, m.region) for m in summary.markers] == [
            ("preempted", preempted, R2), ("resumed", resumed, R3)]

        # Replicas: as `checkpoints list` sees them, the final region's first.
        listing = list_checkpoints(f"{final_dir}/checkpoints",
                                   [f"{template.format(region=r)}/checkpoints"
                                    for r in (R1, R2)])
        assert [(c.region, c.primary, c.latest_step, c.steps_behind)
                for c in summary.checkpoints] == [
            (R3, True, listing.checkpoints[-1].step, 0),
            *((r, False, lag.latest_step, lag.steps_behind)
              for r, lag in zip((R1, R2), listing.lag, strict=True))]
        assert summary.checkpoint_uri == f"{final_dir}/checkpoints/step-{MAX_STEPS:012d}"
        goodput = summary.goodput
        assert goodput is not None and goodput.attempts == 2
        assert sum(c.seconds for c in goodput.categories) == pytest.approx(goodput.wall_s,
                                                                           rel=0.02)

    def test_orchestration_overhead(self, real_run) -> None:
        history_uri, template, history = real_run
        tasks = task_list(history)
        summary = collect_run_summary(history_uri, template, REGIONS, tasks=tasks,
                                      state="SUCCEEDED")
        overhead = summary.overhead
        assert overhead is not None
        # From the first task's start to the last one's end (4 + 1 + launch + 1 + 2 s), less
        # the tasks' run time (4 + launch + 2 s): the two 1 s gaps between tasks.
        launch = tasks[1]["seconds"]
        assert overhead.job_s == pytest.approx(launch + 8.0, abs=1e-3)
        assert overhead.tasks_s == pytest.approx(launch + 6.0, abs=1e-3)
        assert overhead.overhead_s == pytest.approx(2.0, abs=1e-3)
        assert overhead.overhead_pct == pytest.approx(200 / (launch + 8.0), abs=0.01)
        assert [t["name"] for t in summary.to_dict()["tasks"]] == [
            "replicate-data", "spot-train", "verify-checkpoints"]


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium is not installed: `make browser-deps` installs Debian's chromium")
    return path


class _Plots(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.plots: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "svg" and "plot" in (attributes.get("class") or "").split():
            self.plots.append(attributes)


def drawn_plots(page: Path, tmp_path: Path) -> dict[str, dict]:
    """Loads `page` in headless Chromium; each plot's `data-drawn` after its script ran."""
    profile = tmp_path / "chromium-profile"
    result = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True)
    parser = _Plots()
    parser.feed(result.stdout)
    return {str(p["data-plot"]): {**json.loads(p.get("data-drawn") or "{}"),
                                  "expected_marks": int(p["data-marks"] or -1),
                                  "expected_markers": int(p["data-markers"] or -1)}
            for p in parser.plots}


class TestEveryPlotDraws:
    """In a real browser every plot of the page draws: as many marks as the run has
    attempts, loss series, goodput categories and checkpoint copies, with non-zero extent,
    and as many markers as preemptions and resumes; the page loads nothing from outside."""

    def test_in_chromium(self, real_run, tmp_path) -> None:
        history_uri, template, history = real_run
        summary = collect_run_summary(history_uri, template, REGIONS, tasks=task_list(history))
        html = render_html(summary)
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
        assert "@import" not in html and "url(" not in html
        page = tmp_path / "report.html"
        page.write_text(html)
        plots = drawn_plots(page, tmp_path)
        goodput = summary.goodput
        assert goodput is not None
        want = {"timeline": (len(summary.attempts), summary.preemptions),
                "loss": (len(summary.loss), len(summary.markers)),
                "goodput": (sum(c.seconds > 0 for c in goodput.categories), 0),
                "replicas": (len(summary.checkpoints), 0)}
        assert set(plots) == set(want)
        for name, (marks, markers) in want.items():
            drawn = plots[name]
            assert drawn.get("marks") == marks == drawn["expected_marks"], (name, drawn)
            assert drawn["drawn"] == marks, (name, drawn)
            assert drawn["markers"] == markers == drawn["expected_markers"], (name, drawn)
            assert drawn["width"] > 10 and drawn["height"] > 10, (name, drawn)
        assert plots["timeline"]["markers"] == 1 and plots["loss"]["markers"] == 2


class TestTextRenderings:
    """The terminal table and the Markdown carry the report's figures."""

    def test_table_and_markdown(self, real_run) -> None:
        history_uri, template, history = real_run
        summary = collect_run_summary(history_uri, template, REGIONS, tasks=task_list(history))
        table = render_table(summary)
        assert re.search(rf"^steps\s+{MAX_STEPS}$", table, re.M)
        assert re.search(r"^preemptions\s+1 \(1 survived\); 1 stockout", table, re.M)
        assert re.search(rf"^regions used\s+{R2} → {R3}$", table, re.M)
        assert f"{summary.goodput_pct:.1f}% of" in table
        assert re.search(rf"^final model\s+{re.escape(str(summary.model_uri))}$", table, re.M)
        for copy in summary.replicas:
            assert re.search(rf"^replica {copy.region}\s+step {copy.latest_step}, "
                             rf"{copy.steps_behind} step\(s\)", table, re.M)
        spot = summary.tasks[1]
        assert re.search(rf"^spot-train\s+SUCCEEDED\s+{spot.seconds:.1f}$", table, re.M)
        overhead = summary.overhead
        assert overhead is not None
        assert re.search(rf"^orchestration overhead\s+2\.0 s of {overhead.job_s:.1f} s "
                         rf"\({overhead.overhead_pct:.1f}%\)$", table, re.M)
        markdown = render_markdown(summary)
        assert markdown.startswith("# Run report: SUCCEEDED")
        assert f"| steps | {MAX_STEPS} |" in markdown
        assert "| spot-train | SUCCEEDED |" in markdown
        assert "## Preemptions and resumes" in markdown


class TestRunThatFailedEarly:
    """Nothing written yet (no history, empty buckets): the report still renders, in every
    form, and names what is missing instead of failing; the error text is escaped."""

    def test_renders_what_exists(self, store, make_bucket) -> None:
        stem = make_bucket("early")
        error = "replicate-data: no bucket <script>alert(1)</script>"
        report = publish_report(f"gs://{stem}/history.json", f"gs://{stem}/{{region}}/run",
                                [R1, R2], state="PIPELINE_STATE_FAILED", error=error)
        summary = report.summary
        assert summary.state == "FAILED" and summary.steps is None
        assert summary.goodput_pct is None and summary.model_uri is None
        assert summary.attempts == [] and summary.checkpoints == []
        assert any(m.startswith(f"launch history gs://{stem}/history.json")
                   for m in summary.missing)
        assert 'class="plot"' not in report.html and "Not available" in report.html
        # Text from the run is escaped: the one script on the page is the report's own.
        assert "<script>alert" not in report.html and report.html.count("<script>") == 1
        assert "replicate-data: no bucket" in report.markdown
        assert "launch history" in report.table

    def test_bad_template_is_a_config_error(self) -> None:
        from vertex_patterns.errors import ConfigError

        with pytest.raises(ConfigError, match="only \\{region\\}"):
            collect_run_summary("h.json", "gs://b/{zone}/run", [R1])


class TestPublishReportComponent:
    """As the exit task of a pipeline whose first task failed (before any history existed),
    publish_report runs, gets the FAILED status, writes its HTML and Markdown outputs and
    `report.html`/`summary.json` under `report_uri`."""

    def test_exit_task_under_kfp_local(self, store, make_bucket, kfp_local, tmp_path) -> None:
        from kfp import local

        from helpers.report_pipeline import report_on_failure

        local.init(runner=local.SubprocessRunner(use_venv=False),
                   pipeline_root=str(kfp_local), raise_on_error=False)
        stem = make_bucket("exit")
        report_on_failure(report_dir=f"gs://{stem}/report",
                          run_dir_template=f"gs://{stem}/{{region}}", regions=[R1, R2])
        summary = json.loads(store.read_bytes(f"gs://{stem}/report/summary.json"))
        assert summary["state"] == "FAILED" and summary["steps"] is None
        assert any("launch history" in m for m in summary["missing"])
        page = store.read_bytes(f"gs://{stem}/report/report.html").decode()
        assert "Not available" in page
        outputs = {p.name: p for p in kfp_local.rglob("*") if p.is_file()}
        assert "html" in outputs and "markdown" in outputs, sorted(outputs)
        assert outputs["html"].read_text() == page
        assert outputs["markdown"].read_text().startswith("# Run report: FAILED")

