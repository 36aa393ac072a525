"""Monitoring as code: Prometheus config and alert rules (promtool), Grafana provisioning and dashboards."""

from __future__ import annotations

import json
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
    rules = [
        r
        for f in (PROMETHEUS / "rules").glob("*.yml")
        for g in yaml.safe_load(f.read_text())["groups"]
        for r in g["rules"]
    ]
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
    assert {"api:8000", "worker:9808", "flower:5555", "localhost:9090"} <= targets


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
