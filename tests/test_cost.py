"""Cost: the price catalog, the calculators, Young/Daly, right-sizing and the CLI's bad input.

Invariants: the seed's golden numbers; costs are never negative and never fall as usage
grows; a CUD never costs more than on demand at full utilisation; Young/Daly matches its
closed form and minimises the first-order model; a missing price names the machine and the
region; bad input is one line and exit 2.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vertex_patterns.cli.main import main as cli_main
from vertex_patterns.cost import (
    HourlyRate,
    PriceCatalog,
    SpotRunInputs,
    estimate_spot_run,
    expected_lost_s,
    expected_wall_s,
    plan_fleet,
    young_daly_interval,
)
from vertex_patterns.cost.compare import monthly_costs
from vertex_patterns.cost.fleet import FleetOptions
from vertex_patterns.cost.interval import AutoCheckpointInterval, decide_interval
from vertex_patterns.cost.rightsize import WorkloadProfile, recommend
from vertex_patterns.errors import ConfigError

CATALOG = PriceCatalog.load()
SEED_RATE = HourlyRate.bare(CATALOG, 24.80)
MACHINES = [("n1-standard-8", "NVIDIA_TESLA_V100", 8), ("n1-highmem-4", "NVIDIA_TESLA_T4", 1),
            ("n1-standard-4", None, 0), ("a2-highgpu-1g", None, 0), ("a3-highgpu-8g", None, 0),
            ("g2-standard-8", None, 0), ("a3-ultragpu-8g", None, 0), ("e2-standard-4", None, 0)]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli_main(["cost", *argv])
    out, err = capsys.readouterr()
    return code, out, err


class TestSeedGolden:
    """The design document's example: 720 h/month at $24.80/h."""

    def test_compare_json(self, capsys) -> None:
        code, out, _ = cli(capsys, "compare", "--on-demand-hourly", "24.80",
                           "--hours-per-month", "720", "--json")
        body = json.loads(out)
        assert code == 0 and set(body) == {"on_demand", "spot", "cud_1y", "cud_3y", "sud"}
        assert round(body["on_demand"]) == 17856
        assert round(body["cud_1y"]) == 11249
        assert round(body["cud_3y"]) == 8035
        assert body["sud"] == pytest.approx(17856 * 0.7)  # 100/80/60/40% quarters

    def test_commitment_billed_when_idle(self) -> None:
        """A commitment is billed for the whole month: at half use it costs the same."""
        half = monthly_costs(SEED_RATE, 360, 720)
        assert half["cud_1y"] == pytest.approx(11249.28)
        assert half["cud_1y"] > half["on_demand"]


class TestCatalog:
    """Every entry dated and sourced; overrides replace entries; missing prices are errors."""

    def test_every_entry_dated_and_sourced(self) -> None:
        from importlib import resources

        doc = json.loads(resources.files("vertex_patterns.cost").joinpath("prices.json")
                         .read_text())
        entries = [e for region in doc["prices"].values() for e in region.values()]
        assert len(entries) > 100
        for entry in [*entries, *doc["plans"].values(), doc["bare_rate"]]:
            assert entry["as_of"] and entry["source"].startswith("https://")

    @pytest.mark.parametrize(("machine", "gpu", "count"), MACHINES)
    def test_prices_positive_spot_cheaper(self, machine, gpu, count) -> None:
        price = CATALOG.price(machine, gpu, count, region="us-central1")
        assert 0 < price.spot < price.on_demand

    def test_n1_is_vcpu_memory_and_gpus(self) -> None:
        price = CATALOG.price("n1-standard-8", "NVIDIA_TESLA_V100", 8, region="us-central1")
        assert price.on_demand == pytest.approx(8 * 0.031611 + 30 * 0.004237 + 8 * 2.48)

    def test_missing_price_names_machine_and_region(self) -> None:
        with pytest.raises(ConfigError, match=r"a2-highgpu-1g in asia-east1"):
            CATALOG.price("a2-highgpu-1g", region="asia-east1")
        with pytest.raises(ConfigError, match="unknown machine type"):
            CATALOG.price("z9-standard-4", region="us-central1")
        with pytest.raises(ConfigError, match="unknown Vertex AI region"):
            CATALOG.price("n1-standard-4", region="mars-north1")

    def test_user_file_overrides(self, tmp_path) -> None:
        path = tmp_path / "prices.json"
        path.write_text(json.dumps({"prices": {"asia-east1": {"a2-highgpu-1g": {
            "on_demand": 4.0, "spot": 1.0, "plan": "accelerator_optimized",
            "as_of": "2026-12-01", "source": "contract 42"}}}}))
        catalog = PriceCatalog.load(str(path))
        assert catalog.price("a2-highgpu-1g", region="asia-east1").on_demand == 4.0
        assert catalog.price("a2-highgpu-1g", region="us-central1").on_demand == \
            CATALOG.price("a2-highgpu-1g", region="us-central1").on_demand

    def test_undated_override_refused(self, tmp_path) -> None:
        path = tmp_path / "prices.json"
        path.write_text(json.dumps({"prices": {"us-central1": {"n1-vcpu": {
            "on_demand": 0.02, "spot": 0.01, "plan": "n1"}}}}))
        with pytest.raises(ConfigError, match="dated and sourced"):
            PriceCatalog.load(str(path))


class TestCostProperties:
    """Costs never negative, monotone in usage; CUD <= on demand at full utilisation."""

    @settings(max_examples=200, deadline=None)
    @given(rate=st.floats(0, 500), hours=st.floats(0, 20000), more=st.floats(0, 5000),
           machine=st.sampled_from(MACHINES))
    def test_monotone_and_non_negative(self, rate, hours, more, machine) -> None:
        for r in (HourlyRate.bare(CATALOG, rate),
                  HourlyRate.of_machine(CATALOG.price(*machine, region="europe-west4"))):
            low = monthly_costs(r, hours, 720)
            high = monthly_costs(r, hours + more, 720)
            for key in low:
                assert low[key] >= 0
                assert high[key] >= low[key] - 1e-6 * max(1.0, low[key])

    @settings(max_examples=100, deadline=None)
    @given(machines=st.integers(1, 50), machine=st.sampled_from(MACHINES))
    def test_cud_not_above_on_demand_at_full_use(self, machines, machine) -> None:
        rate = HourlyRate.of_machine(CATALOG.price(*machine, region="us-east1"))
        costs = monthly_costs(rate, machines * 720.0, 720)
        assert costs["cud_3y"] <= costs["cud_1y"] <= costs["on_demand"]
        assert costs["sud"] <= costs["on_demand"]


class TestYoungDaly:
    """interval = sqrt(2 C MTBF), and it (nearly) minimises the expected lost time."""

    @settings(max_examples=200, deadline=None)
    @given(c=st.floats(1e-3, 600), mtbf=st.floats(60, 1e6))
    def test_closed_form(self, c, mtbf) -> None:
        assert young_daly_interval(c, mtbf) == pytest.approx(math.sqrt(2 * c * mtbf))

    @pytest.mark.parametrize(("c", "mtbf"), [(3.4, 6 * 3600), (30, 3600), (0.3, 1800)])
    def test_near_the_exact_optimum(self, c, mtbf) -> None:
        tau = young_daly_interval(c, mtbf)
        lost = expected_lost_s(1e5, tau, c, 60, 1 / mtbf)
        best = min(expected_lost_s(1e5, t, c, 60, 1 / mtbf)
                   for t in (tau * k / 100 for k in range(20, 500)))
        assert lost <= best * 1.05

    def test_model_limits(self) -> None:
        assert expected_wall_s(100, 10, 1, 5, 0) == pytest.approx(110)
        assert expected_wall_s(100, 10, 1, 5, 1e-9) == pytest.approx(110, rel=1e-6)

    def test_zero_mtbf_refused(self) -> None:
        with pytest.raises(ConfigError, match="MTBF"):
            young_daly_interval(3, 0)
        with pytest.raises(ConfigError, match="--mtbf-hours"):
            decide_interval(checkpoint_s=3, mtbf_hours=0)

    def test_auto_adapts_to_measured_cost(self) -> None:
        auto = AutoCheckpointInterval(3600, initial_s=60)
        assert auto.interval_s == pytest.approx(60)  # sqrt(2 * 1 * 3600) = 84.9, capped
        for c in (2.0, 2.0, 50.0):  # one slow save does not move the median
            auto.observe(c)
        assert auto.interval_s == pytest.approx(math.sqrt(2 * 2.0 * 3600))


class TestSpotRun:
    """Spot's expected cost rises with the preemption rate and crosses on demand once."""

    def test_break_even(self) -> None:
        inputs = SpotRunInputs(work_hours=100, preemptions_per_hour=0.5, checkpoint_s=10,
                               restart_s=120, interval_s=300)
        est = estimate_spot_run(inputs, SEED_RATE)
        assert est.spot_cost < est.on_demand_cost
        be = est.break_even_per_hour
        at = estimate_spot_run(SpotRunInputs(work_hours=100, preemptions_per_hour=be,
                                             checkpoint_s=10, restart_s=120, interval_s=300),
                               SEED_RATE)
        assert at.spot_cost == pytest.approx(at.on_demand_cost, rel=1e-6)

    def test_bad_input(self) -> None:
        with pytest.raises(ConfigError, match="--work-hours"):
            SpotRunInputs(work_hours=-1, preemptions_per_hour=1, checkpoint_s=1, restart_s=1,
                          interval_s=1)


class TestFleetPlan:
    """The plan's baseline is the cheapest of all baselines, and beats all on demand."""

    def test_baseline_covers_the_always_busy_machines(self) -> None:
        demand = [8 + (16 if 9 <= h % 24 <= 17 else 0) for h in range(720)]
        plan = plan_fleet(demand, SEED_RATE, FleetOptions(commitment="cud_3y", spot_cap=12))
        assert plan.best.baseline == 8  # busy 100% of hours; #9 only 37.5%
        assert plan.best.total == min(c.total for c in plan.candidates)
        assert plan.best.total < plan.all_on_demand
        assert any("machine #9" in line for line in plan.reasoning())

    def test_empty_or_negative_demand(self) -> None:
        with pytest.raises(ConfigError, match="empty"):
            plan_fleet([], SEED_RATE)
        with pytest.raises(ConfigError, match="hour 1"):
            plan_fleet([1, -2], SEED_RATE)


class TestRightsize:
    """The pick fits with headroom and is the cheapest per step; misfits say why."""

    def test_big_model_needs_big_gpu(self) -> None:
        profile = WorkloadProfile(workload="big", parameters=10**10, state_gb=60,
                                  activations_gb=10, peak_host_gb=40, peak_device_gb=70,
                                  step_s=1.0, device="NVIDIA_A100_80GB")
        rec = recommend(profile, CATALOG, region="us-central1", headroom=0.1)
        assert rec.best.shape.gpu_memory_gb >= 77
        assert rec.best.cost_per_step is not None
        fitting = [c for c in rec.candidates if c.fits]
        assert rec.best.cost_per_step == min(c.cost_per_step for c in fitting)
        assert any("GB per GPU <" in c.why for c in rec.candidates if not c.fits)

    def test_nothing_fits(self) -> None:
        profile = WorkloadProfile(workload="huge", parameters=1, state_gb=500,
                                  activations_gb=0, peak_host_gb=1, peak_device_gb=500,
                                  step_s=1.0, device="cpu")
        with pytest.raises(ConfigError, match="sharding"):
            recommend(profile, CATALOG, region="us-central1")


class TestCliBadInput:
    """Negative hours, unknown machine, zero MTBF, a missing price: one line, exit 2."""

    @pytest.mark.parametrize(("argv", "needle"), [
        (["compare", "--on-demand-hourly", "3", "--hours-per-month", "-1"], "--hours-per-month"),
        (["compare", "--machine-type", "n9-huge-8", "--region", "us-central1",
          "--hours-per-month", "1"], "n9-huge-8"),
        (["compare", "--machine-type", "a2-highgpu-1g", "--region", "asia-east1",
          "--hours-per-month", "1"], "a2-highgpu-1g in asia-east1"),
        (["interval", "--checkpoint-seconds", "3", "--mtbf-hours", "0"], "--mtbf-hours"),
        (["interval", "--checkpoint-seconds", "3"], "--mtbf-hours"),
        (["spot-run", "--on-demand-hourly", "3", "--work-hours", "5", "--mtbf-hours", "0",
          "--checkpoint-seconds", "1"], "--mtbf-hours"),
        (["plan", "--on-demand-hourly", "3", "--demand", "/nonexistent/d.json"], "--demand"),
        (["compare", "--hours-per-month", "5"], "--machine-type"),
    ])
    def test_one_line_exit_2(self, capsys, argv, needle) -> None:
        code, out, err = cli(capsys, *argv)
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and needle in err

    def test_plan_and_spot_run_json(self, capsys, tmp_path) -> None:
        demand = tmp_path / "demand.csv"
        demand.write_text("machines\n" + "\n".join(["2", "2", "5", "2"] * 6) + "\n")
        code, out, _ = cli(capsys, "plan", "--machine-type", "g2-standard-8", "--region",
                           "us-central1", "--demand", str(demand), "--json")
        body = json.loads(out)
        assert code == 0 and body["hours"] == 24 and body["total"] <= body["all_on_demand"]
        code, out, _ = cli(capsys, "spot-run", "--on-demand-hourly", "24.8", "--work-hours",
                           "100", "--mtbf-hours", "2", "--checkpoint-seconds", "10", "--json")
        assert code == 0 and json.loads(out)["break_even_preemptions_per_hour"] > 0.5


class TestRightsizeProfile:
    """A real profiled run of `digits` measures what the model holds, and round-trips."""

    def test_profile_and_recommend(self, capsys, tmp_path, monkeypatch) -> None:
        from vertex_patterns.training.workloads.digits import build

        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        path = tmp_path / "profile.json"
        code, out, _ = cli(capsys, "rightsize", "--workload", "digits", "--steps", "3",
                           "--region", "us-central1", "--save-profile", str(path), "--json")
        body = json.loads(out)
        profile = body["profile"]
        import torch

        model = build(seed=0, device=torch.device("cpu")).model
        params = sum(p.numel() for p in model.parameters())
        assert code == 0 and profile["parameters"] == params
        # fp32 parameters + gradients + Adam's two moments, at least
        assert profile["state_gb"] * 1024**3 >= 4 * params * 4
        assert profile["peak_device_gb"] >= profile["state_gb"] and profile["step_s"] > 0
        assert body["machine_type"] and all(c["fits"] for c in body["considered"])
        code, again, _ = cli(capsys, "rightsize", "--profile", str(path), "--region",
                             "us-central1", "--json")
        assert code == 0 and json.loads(again)["machine_type"] == body["machine_type"]
