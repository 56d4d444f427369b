"""Monitoring as code: rendered JSON is golden and parses as each API's own type; `apply`
through the real client libraries against a strict loopback emulator creates everything once,
then changes nothing, and updates only what changed."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
import requests
from google.protobuf import json_format

from vertex_patterns.cli.main import main
from vertex_patterns.emulators.monitoring import MonitoringEmulator
from vertex_patterns.monitoring.apply import apply
from vertex_patterns.monitoring.config import MonitoringConfig
from vertex_patterns.monitoring.render import parse_as, read_rendered, render, write_rendered

GOLDEN = Path(__file__).parent / "golden" / "monitoring"
CONFIG = MonitoringConfig(project="my-project", billing_account="012345-6789AB-CDEF01",
                          notification_channels=("projects/my-project/notificationChannels/123",))


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*.json"))}


@pytest.fixture(scope="module")
def emulator():
    with MonitoringEmulator() as em:
        yield em


class TestRender:
    """`render` writes exactly the golden files, and each parses as its API's type."""

    def test_matches_golden(self, tmp_path):
        write_rendered(render(CONFIG), str(tmp_path))
        assert tree(tmp_path) == tree(GOLDEN), (
            "rendered monitoring JSON changed: re-render tests/golden/monitoring with "
            "`vertex-patterns monitoring render --project my-project --billing-account "
            "012345-6789AB-CDEF01 --notification-channel "
            "projects/my-project/notificationChannels/123 --out tests/golden/monitoring`")

    def test_each_file_is_its_api_type(self):
        resources = read_rendered(str(GOLDEN))
        kinds = [r.kind for r in resources]
        assert kinds.count("alert_policy") == 6 and kinds.count("log_metric") == 7
        assert kinds.count("dashboard") == 1 and kinds.count("budget") == 1
        budget = next(parse_as("budget", r.body) for r in resources if r.kind == "budget")
        assert [round(t.threshold_percent, 2) for t in budget.threshold_rules] == \
            [0.5, 0.75, 0.9, 1.0]
        assert budget.notifications_rule.pubsub_topic == \
            "projects/my-project/topics/vertex-patterns-budget"
        stale = next(parse_as("alert_policy", r.body) for r in resources
                     if "staleness" in r.key)
        assert stale.conditions[0].condition_absent.duration.total_seconds() == 3600

    def test_rpo_tier_sets_the_staleness_window(self):
        policies = {r.key: r for r in render(MonitoringConfig(project="my-project",
                                                              rpo="critical"))}
        body = policies["vertex-patterns: checkpoint staleness (critical RPO)"].body
        assert body["conditions"][0]["conditionAbsent"]["duration"] == "900s"
        assert not any(r.kind == "budget" for r in policies.values())

    def test_unknown_field_fails_to_parse(self):
        with pytest.raises(json_format.ParseError):
            parse_as("dashboard", {"displayName": "x", "mosaicLayot": {}})


class TestApply:
    """Created once, unchanged on the second apply, updated only where the input changed."""

    def test_idempotent_and_updates_in_place(self, emulator):
        clients = emulator.clients()
        rendered = render(CONFIG)
        first = apply(rendered, project="my-project", billing_account=CONFIG.billing_account,
                      clients=clients)
        assert first.count("created") == 15 and first.count("unchanged") == 0
        writes = emulator.writes
        assert sum(writes.values()) == 15
        second = apply(rendered, project="my-project", billing_account=CONFIG.billing_account,
                       clients=clients)
        assert second.count("unchanged") == 15
        assert emulator.writes == writes, "a second apply wrote something"
        changed = render(MonitoringConfig(project="my-project", hang_minutes=45,
                                          billing_account=CONFIG.billing_account,
                                          notification_channels=CONFIG.notification_channels))
        third = apply(changed, project="my-project", billing_account=CONFIG.billing_account,
                      clients=clients)
        assert [row[1] for row in third.rows if row[2] == "updated"] == \
            ["vertex-patterns: no training progress (hang)"]
        stored = emulator.resources("alert_policy")
        assert len(stored) == 6
        hang = next(p for p in stored.values() if "hang" in p.display_name)
        assert hang.conditions[0].condition_absent.duration.total_seconds() == 45 * 60


class TestEmulatorIsStrict:
    """The emulator decodes requests into the API types: unknown fields fail, nothing kept."""

    def test_rest_unknown_field_is_400(self, emulator):
        url = f"http://127.0.0.1:{emulator.http_port}/v1/projects/p-strict/dashboards"
        response = requests.post(url, json={"displayName": "x", "bogusField": 1}, timeout=10)
        assert response.status_code == 400
        assert "bogusField" in response.json()["error"]["message"]
        assert not [n for n in emulator.resources("dashboard") if "p-strict" in n]

    def test_browser_requests_are_refused(self, emulator):
        url = f"http://127.0.0.1:{emulator.http_port}/v1/projects/p-strict/dashboards"
        response = requests.get(url, headers={"Origin": "https://evil.example"}, timeout=10)
        assert response.status_code == 403

    def test_grpc_unknown_field_fails(self, emulator):
        from google.cloud import monitoring_v3

        request = monitoring_v3.CreateAlertPolicyRequest(
            name="projects/p-strict", alert_policy=monitoring_v3.AlertPolicy(display_name="x"))
        data = monitoring_v3.CreateAlertPolicyRequest.serialize(request)
        data += b"\xb8\x3e\x01"  # field 999, varint 1: not in the message type
        with grpc.insecure_channel(f"127.0.0.1:{emulator.grpc_port}") as channel:
            call = channel.unary_unary("/google.monitoring.v3.AlertPolicyService/"
                                       "CreateAlertPolicy")
            with pytest.raises(grpc.RpcError):
                call(data, timeout=10)
        assert not [n for n in emulator.resources("alert_policy") if "p-strict" in n]


class TestCli:
    """render writes the files; bad input is one line and exit 2."""

    def test_render(self, tmp_path, capsys):
        out = tmp_path / "mon"
        assert main(["monitoring", "render", "--project", "my-project", "--out",
                     str(out)]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 14  # no budget without account
        assert json.loads((out / "dashboard.json").read_text())["mosaicLayout"]["columns"] == 48

    @pytest.mark.parametrize("args,needle", [
        (["render", "--project", "X", "--out", "o"], "--project 'X'"),
        (["render", "--project", "my-project", "--rpo", "gold", "--out", "o"],
         "unknown RPO tier"),
        (["render", "--project", "my-project", "--billing-account", "nope", "--out", "o"],
         "--billing-account"),
        (["apply", "--project", "my-project", "--from", "/nonexistent"], "--from"),
    ])
    def test_bad_input(self, tmp_path, capsys, monkeypatch, args, needle):
        monkeypatch.chdir(tmp_path)
        assert main(["monitoring", *args]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and needle in err
        assert not (tmp_path / "o").exists()
