"""Cost on a real run: the trainer's `auto` interval, and the cost report, ledger and interval
of a launch through the real SDK on the Vertex AI emulator (stockout, preemption, success).

Invariants: `auto` saves periodically at Young/Daly's interval for the cost it measured; the
cost of a launch prices each attempt by its strategy and region, counts the preemption, and
the component writes Markdown, an HTML page with an inline SVG plot and no script, and
metrics that agree with `cost ledger` on the same files.
"""

from __future__ import annotations

import json
import math
import uuid

import pytest

from conftest import VERTEX_TEST_TIMINGS
from vertex_patterns.cli.main import main as cli_main
from vertex_patterns.emulators.vertex import RegionFaults, Scenario, Timings
from vertex_patterns.storage import Storage

R1, R2, R3 = "us-east1", "us-west1", "europe-west4"


def test_bad_auto_flags() -> None:
    """Parsed as the trainer parses (not run in-process: its logging setup would outlive the
    test's captured streams)."""
    from vertex_patterns.cli.parser import OneLineParser
    from vertex_patterns.cli.train import add_train_arguments, config_from_args
    from vertex_patterns.errors import ConfigError

    parser = OneLineParser(prog="train")
    add_train_arguments(parser)
    base = ["--workload", "digits", "--run-dir", "/tmp/never", "--max-steps", "5"]
    config = config_from_args(parser.parse_args([*base, "--checkpoint-every-seconds", "auto"]))
    assert config.checkpoint_auto and config.checkpoint_every_seconds is None
    with pytest.raises(ConfigError, match="--mtbf-hours"):
        config_from_args(parser.parse_args([*base, "--checkpoint-every-seconds", "auto",
                                            "--mtbf-hours", "0"]))
    with pytest.raises(ConfigError, match="only with --checkpoint-every-seconds auto"):
        config_from_args(parser.parse_args([*base, "--checkpoint-every-seconds", "60",
                                            "--mtbf-hours", "2"]))
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--checkpoint-every-seconds", "often"])


@pytest.fixture(scope="module")
def launched(vertex_emulator, gcs_emulator, tmp_path_factory):
    """A launch: stockout in R1, preempted in R2 after 4 s, completes in R3 (once for the
    module: it runs the trainer twice). 2500 steps cannot finish within 4 s of the process
    start on any machine; a notice during startup still ends the attempt as preempted."""
    from vertex_patterns.launcher import JobSpec, Launcher, LaunchPolicy

    store = Storage()
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    vertex_emulator.set_scenario(Scenario(
        seed=5, regions={R1: RegionFaults(stockout_strategies=("SPOT",)),
                         R2: RegionFaults(preempt_after_seconds=(4.0,))},
        timings=Timings(**VERTEX_TEST_TIMINGS), max_preemption_restarts=0))
    stem = f"cr{uuid.uuid4().hex[:8]}"
    for region in (R1, R2, R3):
        store.gcs.client().create_bucket(f"{stem}-{region}")
    template = f"gs://{stem}-{{region}}/runs/digits"
    command = ("python", "-m", "vertex_patterns.train", "--workload", "digits", "--run-dir",
               "{run_dir}", "--max-steps", "2500", "--checkpoint-every-seconds", "auto",
               "--mtbf-hours", "0.0002", "--seed", "3", "--log-every-steps", "5000",
               "--grace-seconds", "1.8", "--grace-margin-seconds", "0.3")
    try:
        history = Launcher(JobSpec(display_name="cost", image="img:1",
                                   machine_type="n1-standard-4", command=command),
                           LaunchPolicy(project="emu-project", regions=(R1, R2, R3),
                                        run_dir_template=template, poll_seconds=0.2)).run()
    finally:
        vertex_emulator.reset_scenario()
        monkeypatch.undo()
    assert [a.outcome for a in history.attempts] == ["stockout", "preempted", "succeeded"]
    path = tmp_path_factory.mktemp("launch") / "history.json"
    path.write_text(history.to_json())
    return path, template.format(region=R3), history


def test_auto_interval_in_the_launched_run(launched, capsys) -> None:
    """`--checkpoint-every-seconds auto`: periodic saves, each followed by the new interval."""
    from vertex_patterns.training.metrics import read_metrics

    _, run_dir, _ = launched
    saves = [r for r in read_metrics(f"{run_dir}/metrics")
             if r.get("event") == "checkpoint" and r["blocking"] is False]
    assert saves
    code = cli_main(["cost", "interval", "--from-run", run_dir, "--mtbf-hours", "0.001",
                     "--json"])
    body = json.loads(capsys.readouterr().out)
    c = body["checkpoint_seconds"]
    assert code == 0 and c > 0
    assert body["interval_seconds"] == pytest.approx(math.sqrt(2 * c * 3.6), abs=1e-3)


def test_cost_report_component_and_ledger(launched, kfp_local, capsys) -> None:
    from kfp import dsl

    from vertex_patterns.pipelines.cost_report import cost_report

    history_path, run_dir, _ = launched

    @dsl.pipeline(name="cost-report-test")
    def pipe():  # no annotations: this module's postponed ones would be strings to KFP
        hist = dsl.importer(artifact_uri=str(history_path), artifact_class=dsl.Artifact)
        cost_report(history=hist.output, run_dir=run_dir, machine_type="n1-standard-4")

    pipe()
    page = next(p for p in kfp_local.rglob("plot") if p.is_file()).read_text()
    assert page.count("<svg") == 1 and "<script" not in page.lower()
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "this run" in page and "Spot" in page and "on demand" in page
    report = next(p for p in kfp_local.rglob("report") if p.is_file()).read_text()
    assert "| SPOT | us-west1 |" in report

    # The CLI ledger on the same files: one preemption, Spot cheaper than on demand.
    capsys.readouterr()
    code = cli_main(["cost", "ledger", str(history_path), "--machine-type", "n1-standard-4",
                     "--run-dir", run_dir, "--json"])
    body = json.loads(capsys.readouterr().out)
    assert code == 0 and body["preemptions"] == 1
    rows = {r["region"]: r for r in body["by_strategy_region"]}
    assert set(rows) == {R1, R2, R3} and {r["strategy"] for r in rows.values()} == {"SPOT"}
    assert rows[R1]["machine_hours"] == 0 and rows[R1]["cost"] == 0
    assert 0 < body["cost"] < body["on_demand_cost"]
    # Lost: the final attempt's restore (a fraction of a second), at its Spot rate.
    spot_rate = rows[R3]["cost"] / rows[R3]["machine_hours"]
    assert body["lost_hours"] > 0
    assert body["lost_cost"] == pytest.approx(body["lost_hours"] * spot_rate, abs=2e-6)

    # The run directory alone: its attempt, at the Spot price of the region given.
    code = cli_main(["cost", "ledger", run_dir, "--machine-type", "n1-standard-4", "--region",
                     R3, "--json"])
    alone = json.loads(capsys.readouterr().out)
    assert code == 0 and alone["by_strategy_region"][0]["region"] == R3
    assert 0 < alone["cost"] < alone["on_demand_cost"]
