"""Alert delivery for real: a worker and Flower, a real Prometheus with the real alert expression, a real
Alertmanager with the committed routing, and a webhook receiver in this test. Stopping the worker must
page (JeffreyNoWorkerOnline reaches the webhook through the `critical` route), the worker's own
target-down alert must be inhibited by it, and restarting the worker must resolve it.

Only the rules' `for:` is shortened (seconds instead of minutes) and the intervals are 1-2 s;
expressions, labels, routes, grouping and inhibitions are the committed ones. The delay from stopping
the worker to the webhook receiving the alert is printed (production adds the rule's real `for:`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from jeffrey_dev.stack import free_port
from tests.conftest import require
from tests.support.processes import ROOT, ServiceProcess, eventually, flower_env, service_env, start_worker
from tests.unit.test_monitoring import render_alertmanager

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]
FLOWER_DOWN = 'ALERTS{alertname="JeffreyTargetDown", job="flower", alertstate="firing"}'
RULES = ROOT / "monitoring" / "prometheus" / "rules" / "jeffrey-alerts.yml"
# The committed rules with shorter `for:` (production: 5m and 2m). Target-down waits longer than the
# page, as in production, so one slow scrape of Flower on a loaded machine does not inhibit the page.
LIVE_ALERTS = {"JeffreyNoWorkerOnline": "2s", "JeffreyTargetDown": "10s"}


@dataclass
class Webhook:
    """Alertmanager's webhook JSON, each with the monotonic time it arrived."""

    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, body: dict[str, Any]) -> None:
        with self.lock:
            self.received.append((time.monotonic(), body))

    def first(self, alertname: str, status: str, after: float) -> tuple[float, dict[str, Any]] | None:
        with self.lock:
            for at, body in self.received:
                names = {a["labels"].get("alertname") for a in body["alerts"] if a["status"] == status}
                if at >= after and alertname in names:
                    return at, body
        return None


@pytest.fixture
def webhook() -> Iterator[tuple[Webhook, str]]:
    sink = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            sink.record(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield sink, f"http://127.0.0.1:{server.server_address[1]}/alerts"
    server.shutdown()
    server.server_close()


def live_rules() -> dict[str, Any]:
    """The committed rules, unchanged but for a short `for:`."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [
        dict(r, **{"for": LIVE_ALERTS[r["alert"]]})
        for g in groups
        for r in g["rules"]
        if r["alert"] in LIVE_ALERTS
    ]
    assert {r["alert"] for r in rules} == set(LIVE_ALERTS)
    return {"groups": [{"name": "jeffrey-live", "rules": rules}]}


def start_alertmanager(tmp_path: Path, log_dir: Path, webhook_url: str) -> tuple[ServiceProcess, str]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    require(binary is not None, "alertmanager is not installed (Debian package 'prometheus-alertmanager')")
    assert binary is not None
    config = tmp_path / "alertmanager.yml"
    env = {"ALERTMANAGER_WEBHOOK_URL": webhook_url}
    assert render_alertmanager("alertmanager.yml", config, env).returncode == 0
    port = free_port()
    argv = [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'am-data'}"]
    argv += [f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]
    process = ServiceProcess("alertmanager", argv, {"PATH": os.environ["PATH"]}, log_dir).start()
    url = f"http://127.0.0.1:{port}"
    eventually(lambda: _answers(f"{url}/-/ready"), 60, "alertmanager never got ready")
    return process, url


def start_prometheus(
    tmp_path: Path, log_dir: Path, targets: dict[str, int], alertmanager: str
) -> tuple[ServiceProcess, str]:
    binary = shutil.which("prometheus")
    require(binary is not None, "prometheus is not installed (Debian package 'prometheus')")
    assert binary is not None
    (tmp_path / "rules").mkdir()
    port = free_port()
    config = {
        # A scrape may take as long as its interval (Flower answers slowly on a busy machine).
        "global": {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "1s"},
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager.split("//")[1]]}]}]},
        # Empty until the targets are scraped: absent() must not fire before Flower is first read.
        "rule_files": [str(tmp_path / "rules" / "*.yml")],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{p}"]}]}
            for job, p in targets.items()
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    argv = [
        binary,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
    ]
    argv += [f"--web.listen-address=127.0.0.1:{port}"]
    process = ServiceProcess("prometheus", argv, {"PATH": os.environ["PATH"]}, log_dir).start()
    url = f"http://127.0.0.1:{port}"
    eventually(lambda: _answers(f"{url}/-/ready"), 60, "prometheus never got ready")
    return process, url


def load_rules(prometheus: ServiceProcess, url: str, tmp_path: Path) -> None:
    (tmp_path / "rules" / "live.yml").write_text(yaml.safe_dump(live_rules()))
    os.kill(prometheus.pid, signal.SIGHUP)  # Prometheus reloads its configuration and rules
    eventually(lambda: len(alert_states(url)) == len(LIVE_ALERTS), 30, "rules never loaded")
    # A reload empties Prometheus' list of Alertmanagers until discovery fills it again (up to 5 s): an
    # alert firing in between is dropped and only resent a minute later (--rules.alert.resend-delay).
    eventually(lambda: bool(active_alertmanagers(url)), 30, "Prometheus lost its Alertmanager")


def active_alertmanagers(prometheus: str) -> list[dict[str, Any]]:
    data = httpx.get(f"{prometheus}/api/v1/alertmanagers", timeout=5).json()["data"]
    active: list[dict[str, Any]] = data["activeAlertmanagers"]
    return active


def wait_for_worker_seen(
    prometheus: str, flower: ServiceProcess, flower_port: int, worker: ServiceProcess
) -> None:
    try:
        eventually(
            lambda: bool(query(prometheus, "sum(flower_worker_online) == 1")), 120, "worker never seen"
        )
    except AssertionError as exc:
        # Everything needed to tell "Flower missed the worker's events" from "the worker never
        # started" or "Prometheus could not scrape Flower" when this fails on a loaded machine.
        active = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        health = [(t["labels"]["job"], t["health"], t["lastError"]) for t in active]
        metrics = httpx.get(f"http://127.0.0.1:{flower_port}/metrics", timeout=5).text
        online = [line for line in metrics.splitlines() if line.startswith("flower_worker_online")]
        raise AssertionError(
            f"{exc}; targets: {health}; Flower's flower_worker_online: {online}\n"
            f"--- flower log ---\n{flower.output()[-3000:]}\n--- worker log ---\n{worker.output()[-3000:]}"
        ) from None


def alert_states(prometheus: str) -> dict[str, str]:
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    return {r["name"]: r["state"] for g in groups for r in g["rules"] if r["type"] == "alerting"}


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = httpx.get(
        f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5
    ).json()["data"]["result"]
    return result


def am_alerts(alertmanager: str, *matchers: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(
        f"{alertmanager}/api/v2/alerts", params={"filter": list(matchers)}, timeout=5
    ).json()
    return found


def worker_target_inhibited(alertmanager: str) -> bool:
    alerts = am_alerts(alertmanager, 'alertname="JeffreyTargetDown"', 'job="jeffrey-worker"')
    return bool(alerts) and all(
        a["status"]["state"] == "suppressed" and a["status"]["inhibitedBy"] for a in alerts
    )


def watch_firing(prometheus: str, alertmanager: str, sink: Webhook, stopped_at: float) -> dict[str, float]:
    """Wait for the page, noting when each stage was first seen (for the printed breakdown)."""
    checks = {
        "worker process gone": lambda: True,
        "worker gone from Flower": lambda: not query(prometheus, "sum(flower_worker_online) > 0"),
        "rule firing": lambda: alert_states(prometheus)["JeffreyNoWorkerOnline"] == "firing",
        "in Alertmanager": lambda: bool(am_alerts(alertmanager, 'alertname="JeffreyNoWorkerOnline"')),
        # Only seen when Flower's scrapes fail: the page is then inhibited until Flower is back.
        "Flower target down": lambda: bool(query(prometheus, FLOWER_DOWN)),
        "webhook": lambda: sink.first("JeffreyNoWorkerOnline", "firing", stopped_at) is not None,
    }
    seen: dict[str, float] = {}

    def progress() -> bool:
        for stage, check in checks.items():
            if stage not in seen and check():
                seen[stage] = time.monotonic()
        return "webhook" in seen

    eventually(progress, 180, "JeffreyNoWorkerOnline never reached the webhook")
    return seen


def test_no_worker_online_pages_through_alertmanager_and_resolves(
    redis_url: str, sqlite_url: str, log_dir: Path, tmp_path: Path, webhook: tuple[Webhook, str]
) -> None:
    sink, webhook_url = webhook
    worker_port, flower_port = free_port(), free_port()
    env = service_env(
        redis_url,
        sqlite_url,
        WORKER_METRICS_PORT=str(worker_port),
        WORKER_METRICS_HOST="127.0.0.1",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "multiproc"),
        FLOWER_BASIC_AUTH="ops:test-flower-password-0123456789abcdef",
    )
    name = f"alerts-{uuid.uuid4().hex[:6]}@localhost"
    processes: list[ServiceProcess] = []
    try:
        # Flower first, so it is listening when the worker announces itself (worker-online), as it
        # is when the worker restarts below. (What once looked like Flower missing the worker for
        # minutes was Flower's gauges exported twice through a shared PROMETHEUS_MULTIPROC_DIR,
        # so the sum was 2: see flower_env.)
        flower_argv = [sys.executable, "-m", "celery", "-A", "jeffrey_worker.app", "flower"]
        flower_argv += [f"--port={flower_port}", "--address=127.0.0.1"]
        flower = ServiceProcess("flower", flower_argv, flower_env(env), log_dir).start()
        processes.append(flower)
        flower_up = f"http://127.0.0.1:{flower_port}/healthcheck"
        eventually(lambda: _answers(flower_up), 120, f"flower never answered: {flower.output()[-2000:]}")
        worker = start_worker(env, log_dir, name)
        processes.append(worker)
        alertmanager_process, alertmanager = start_alertmanager(tmp_path, log_dir, webhook_url)
        processes.append(alertmanager_process)
        scraped = {"jeffrey-worker": worker_port, "flower": flower_port}
        prometheus_process, prometheus = start_prometheus(tmp_path, log_dir, scraped, alertmanager)
        processes.append(prometheus_process)
        wait_for_worker_seen(prometheus, flower, flower_port, worker)
        eventually(lambda: len(query(prometheus, "up == 1")) == 2, 30, "targets not up")
        load_rules(prometheus_process, prometheus, tmp_path)
        assert alert_states(prometheus)["JeffreyNoWorkerOnline"] == "inactive"

        stopped_at = time.monotonic()
        worker.stop()
        milestones = watch_firing(prometheus, alertmanager, sink, stopped_at)
        arrived_at, body = sink.first("JeffreyNoWorkerOnline", "firing", stopped_at) or (0.0, {})
        delay = arrived_at - stopped_at
        steps = ", ".join(f"{k} +{v - stopped_at:.1f} s" for k, v in milestones.items())
        print(
            f"\nalert delay: worker stopped -> webhook got JeffreyNoWorkerOnline in {delay:.1f} s ({steps})"
        )
        assert body["receiver"] == "critical" and body["status"] == "firing"
        assert body["commonLabels"]["severity"] == "critical"
        eventually(lambda: worker_target_inhibited(alertmanager), 60, "worker target-down not inhibited")

        restarted_at = time.monotonic()
        processes.append(start_worker(env, log_dir, name))
        eventually(
            lambda: sink.first("JeffreyNoWorkerOnline", "resolved", restarted_at) is not None,
            180,
            "JeffreyNoWorkerOnline never resolved at the webhook",
        )
        resolved_at, _ = sink.first("JeffreyNoWorkerOnline", "resolved", restarted_at) or (0.0, {})
        print(f"alert resolved at the webhook {resolved_at - restarted_at:.1f} s after the worker restarted")
    finally:
        for process in reversed(processes):
            process.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
