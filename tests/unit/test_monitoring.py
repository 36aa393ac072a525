"""Monitoring as code: Prometheus config and alert rules (promtool), Grafana provisioning and dashboards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require
from tests.support.processes import ROOT

pytestmark = pytest.mark.unit
PROMETHEUS = ROOT / "monitoring" / "prometheus"
GRAFANA = ROOT / "monitoring" / "grafana"
ALERTMANAGER = ROOT / "monitoring" / "alertmanager"
# What each Alertmanager configuration needs from the environment, with harmless test values.
ALERTMANAGER_ENV = {
    "ALERTMANAGER_WEBHOOK_URL": "http://127.0.0.1:9/alerts?token=a&b=c|d",
    "ALERTMANAGER_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/XXXX",
    "ALERTMANAGER_SLACK_CHANNEL_CRITICAL": "#jeffrey-oncall",
    "ALERTMANAGER_SLACK_CHANNEL_WARNING": "#jeffrey-ops",
    "ALERTMANAGER_SMTP_SMARTHOST": "smtp.example.com:587",
    "ALERTMANAGER_SMTP_FROM": "alerts@example.com",
    "ALERTMANAGER_SMTP_USERNAME": "alerts@example.com",
    "ALERTMANAGER_SMTP_PASSWORD": "p@ss: #word&1",
    "ALERTMANAGER_EMAIL_CRITICAL": "oncall@example.com",
    "ALERTMANAGER_EMAIL_WARNING": "ops@example.com",
}
ALERTMANAGER_CONFIGS = ["alertmanager.yml", "examples/slack.yml", "examples/email.yml"]
DASHBOARDS = {
    "jeffrey-brain-complete": "Jeffrey Brain Complete",
    "jeffrey-system-overview": "System Overview",
    "jeffrey-dream-analytics": "Dream Analytics",
}
# Grafana's macros, replaced by what Prometheus itself accepts.
MACROS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    require(binary is not None, "promtool is not installed (Debian package 'prometheus')")
    assert binary is not None
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("amtool")
    require(binary is not None, "amtool is not installed (Debian package 'prometheus-alertmanager')")
    assert binary is not None
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)


def render_alertmanager(
    name: str, target: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Render with the same awk script compose runs in the alertmanager container."""
    awk = shutil.which("awk")
    assert awk is not None
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **(ALERTMANAGER_ENV if env is None else env),
    }
    result = subprocess.run(
        [awk, "-f", str(ALERTMANAGER / "render-config.awk"), str(ALERTMANAGER / name)],
        capture_output=True,
        text=True,
        timeout=30,
        env=environment,
    )
    target.write_text(result.stdout)
    return result


def alert_rules() -> list[dict[str, Any]]:
    return [
        r
        for f in sorted((PROMETHEUS / "rules").glob("*.yml"))
        for g in yaml.safe_load(f.read_text())["groups"]
        for r in g["rules"]
    ]


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))}


def panel_expressions() -> list[tuple[str, str, str]]:
    found = []
    for uid, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for macro, value in MACROS.items():
                    expr = expr.replace(macro, value)
                found.append((uid, panel["title"], expr))
    return found


def test_prometheus_config_is_valid() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_are_valid_and_complete() -> None:
    result = promtool("check", "rules", *[str(p) for p in sorted((PROMETHEUS / "rules").glob("*.yml"))])
    assert result.returncode == 0, result.stdout + result.stderr
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert names == {
        "JeffreyNoDreamSuccess24h",
        "JeffreyDeadLetterQueueHigh",
        "JeffreyApiHighLatencyP95",
        "JeffreyQueueSaturation",
        "JeffreyTargetDown",
        "JeffreyTaskFailureRatioHigh",
        "JeffreyNoWorkerOnline",
    }
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"] and rule["for"]


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
    result = promtool("test", "rules", *[str(p) for p in sorted((PROMETHEUS / "tests").glob("*.test.yml"))])
    assert result.returncode == 0, result.stdout + result.stderr
    tested: dict[str, set[bool]] = {}
    for path in (PROMETHEUS / "tests").glob("*.test.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                tested.setdefault(check["alertname"], set()).add(bool(check["exp_alerts"]))
    assert all(outcomes == {True, False} for outcomes in tested.values()), tested
    assert len(tested) == 7


def test_prometheus_scrapes_every_service() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert {"api:8000", "worker:9808", "flower:5555", "localhost:9090", "alertmanager:9093"} <= targets


def test_prometheus_sends_alerts_to_alertmanager() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    managers = config["alerting"]["alertmanagers"]
    assert [t for m in managers for sc in m["static_configs"] for t in sc["targets"]] == ["alertmanager:9093"]


@pytest.mark.parametrize("name", ALERTMANAGER_CONFIGS)
def test_alertmanager_config_is_valid(name: str, tmp_path: Path) -> None:
    rendered = tmp_path / "alertmanager.yml"
    assert render_alertmanager(name, rendered).returncode == 0
    result = amtool("check-config", str(rendered))
    assert result.returncode == 0, result.stdout + result.stderr
    text = rendered.read_text()
    assert "${" not in text.split("#")[0]
    # Secrets come from the environment; the committed file holds only references.
    committed = (ALERTMANAGER / name).read_text()
    for secret in (
        "ALERTMANAGER_WEBHOOK_URL",
        "ALERTMANAGER_SLACK_WEBHOOK_URL",
        "ALERTMANAGER_SMTP_PASSWORD",
    ):
        assert ALERTMANAGER_ENV[secret] not in committed
        if "${" + secret + "}" in committed:
            assert ALERTMANAGER_ENV[secret] in text, (name, secret)


@pytest.mark.parametrize("name", ALERTMANAGER_CONFIGS)
@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=JeffreyNoWorkerOnline"], "critical"),
        (["severity=critical", "alertname=JeffreyTargetDown", "job=flower"], "critical"),
        (["severity=warning", "alertname=JeffreyDeadLetterQueueHigh"], "warning"),
        (["alertname=SomethingWithoutSeverity"], "warning"),
    ],
)
def test_alertmanager_routes_by_severity(name: str, labels: list[str], receiver: str, tmp_path: Path) -> None:
    rendered = tmp_path / "alertmanager.yml"
    assert render_alertmanager(name, rendered).returncode == 0
    result = amtool(
        "config", "routes", "test", f"--config.file={rendered}", f"--verify.receivers={receiver}", *labels
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_routes_to_the_receiver_of_its_severity(tmp_path: Path) -> None:
    rendered = tmp_path / "alertmanager.yml"
    assert render_alertmanager("alertmanager.yml", rendered).returncode == 0
    for rule in alert_rules():
        labels = [f"alertname={rule['alert']}", *(f"{k}={v}" for k, v in rule["labels"].items())]
        result = amtool(
            "config",
            "routes",
            "test",
            f"--config.file={rendered}",
            f"--verify.receivers={rule['labels']['severity']}",
            *labels,
        )
        assert result.returncode == 0, (rule["alert"], result.stdout + result.stderr)


def test_alertmanager_groups_and_examples_share_routes() -> None:
    main = yaml.safe_load((ALERTMANAGER / "alertmanager.yml").read_text())
    assert {"alertname", "job"} <= set(main["route"]["group_by"])
    for name in ALERTMANAGER_CONFIGS[1:]:
        example = yaml.safe_load((ALERTMANAGER / name).read_text())
        assert example["route"] == main["route"], name
        assert example["inhibit_rules"] == main["inhibit_rules"], name
        assert {r["name"] for r in example["receivers"]} == {r["name"] for r in main["receivers"]}


def _matchers(matchers: list[str]) -> dict[str, str]:
    pairs = (m.split("=", 1) for m in matchers)
    return {k: v.strip('"') for k, v in pairs}


def test_inhibitions_name_real_alerts_and_dependencies() -> None:
    """Target-down silences the alerts computed from that target's metrics (label `depends_on`)."""
    rules = {r["alert"]: r["labels"] for r in alert_rules()}
    inhibit = yaml.safe_load((ALERTMANAGER / "alertmanager.yml").read_text())["inhibit_rules"]
    silenced: dict[str, set[str]] = {}
    for rule in inhibit:
        source, target = _matchers(rule["source_matchers"]), _matchers(rule["target_matchers"])
        assert source["alertname"] in rules
        matching = {
            name
            for name, labels in rules.items()
            if all(({"alertname": name} | labels).get(k) == v for k, v in target.items())
        }
        if "depends_on" in target:
            assert matching, rule
        silenced.setdefault(source.get("job", source["alertname"]), set()).update(matching)
    assert silenced["flower"] == {"JeffreyNoWorkerOnline", "JeffreyTaskFailureRatioHigh"}
    assert (
        "JeffreyNoDreamSuccess24h" in silenced["jeffrey-api"]
        and "JeffreyTargetDown" not in silenced["jeffrey-api"]
    )
    assert {r["labels"].get("depends_on") for r in alert_rules()} <= {None, "flower", "jeffrey-api"}


def test_render_names_a_missing_variable_and_never_a_value(tmp_path: Path) -> None:
    env = {k: v for k, v in ALERTMANAGER_ENV.items() if k != "ALERTMANAGER_SLACK_WEBHOOK_URL"}
    result = render_alertmanager("examples/slack.yml", tmp_path / "out.yml", env)
    assert result.returncode == 1
    assert "ALERTMANAGER_SLACK_WEBHOOK_URL is not set" in result.stderr
    assert not any(value in result.stderr for value in env.values())


def test_dashboards_structure() -> None:
    boards = dashboards()
    assert {uid: board["title"] for uid, board in boards.items()} == DASHBOARDS
    assert {board["uid"] for board in boards.values()} == set(DASHBOARDS)
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    for board in boards.values():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)) and len(ids) >= 8
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == uid, panel["title"]
            assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
            assert panel["targets"] and all(
                t["expr"] and t["datasource"]["uid"] == uid for t in panel["targets"]
            )


def test_committed_dashboards_match_their_generator(tmp_path: Path) -> None:
    before = {p.name: p.read_text() for p in (GRAFANA / "dashboards").glob("*.json")}
    subprocess.run(
        [sys.executable, str(GRAFANA / "build_dashboards.py")], check=True, capture_output=True, timeout=60
    )
    after = {p.name: p.read_text() for p in (GRAFANA / "dashboards").glob("*.json")}
    assert before == after, "run `make dashboards` and commit the result"


def test_every_panel_expression_parses(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "panels", "rules": []}]}
    for i, (_uid, _title, expr) in enumerate(panel_expressions()):
        rules["groups"][0]["rules"].append({"record": f"panel:expr:{i}", "expr": expr})
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_admin_password_comes_from_the_environment() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    assert "GF_SECURITY_ADMIN_PASSWORD: ${GF_SECURITY_ADMIN_PASSWORD:?" in compose
