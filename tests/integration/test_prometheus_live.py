"""A real Prometheus scrapes the real running stack; every dashboard panel and alert is evaluated."""

from __future__ import annotations

import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from jeffrey_core.auth import mint_token
from jeffrey_dev.stack import free_port, wait_until
from jeffrey_worker.dream import synthetic
from tests.conftest import require
from tests.support.processes import (
    ROOT,
    ServiceProcess,
    eventually,
    flower_env,
    service_env,
    start_api,
    start_worker,
)
from tests.unit.test_monitoring import panel_expressions

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]
RULES = ROOT / "monitoring" / "prometheus" / "rules"

# What each alert watches, without its threshold: it must return data on a healthy stack
# (the alert expressions themselves are rightly empty when nothing is wrong).
ALERT_SIGNALS = {
    # `and` keeps the left side only when every right side has data: all three metrics must be there.
    "JeffreyNoDreamSuccess24h": (
        "(time() - max(jeffrey_dream_last_success_timestamp_seconds))"
        " and on() max(jeffrey_dream_users_due) and on() max(jeffrey_dream_enabled)"
    ),
    "JeffreyDeadLetterQueueHigh": "max(jeffrey_dream_dlq_size)",
    "JeffreyApiHighLatencyP95": (
        "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_highr_seconds_bucket[1m])))"
    ),
    "JeffreyQueueSaturation": "max by (queue) (jeffrey_queue_saturation_ratio)",
    "JeffreyTargetDown": "up",
    "JeffreyTaskFailureRatioHigh": 'sum(rate(flower_events_total{type=~"task-succeeded|task-failed"}[1m]))',
    "JeffreyNoWorkerOnline": "sum(flower_worker_online)",
}
# Panels allowed to come back empty, with the reason. (None at the moment.)
EMPTY_ALLOWED: dict[str, str] = {}


def query(prometheus: str, expr: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    return body


def test_every_panel_and_alert_evaluates_against_the_live_stack(
    redis_url: str, sqlite_url: str, log_dir: Path, tmp_path: Path
) -> None:
    binary = shutil.which("prometheus")
    require(binary is not None, "prometheus is not installed (Debian package 'prometheus')")
    assert binary is not None
    worker_port, flower_port, prom_port = free_port(), free_port(), free_port()
    env = service_env(
        redis_url,
        sqlite_url,
        WORKER_METRICS_PORT=str(worker_port),
        WORKER_METRICS_HOST="127.0.0.1",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "multiproc"),
        FLOWER_BASIC_AUTH="ops:test-flower-password-0123456789abcdef",
    )
    processes: list[ServiceProcess] = []
    try:
        worker = start_worker(env, log_dir, f"prom-{uuid.uuid4().hex[:6]}@localhost", concurrency=2)
        processes.append(worker)
        flower_argv = [sys.executable, "-m", "celery", "-A", "jeffrey_worker.app", "flower"]
        flower_argv += [f"--port={flower_port}", "--address=127.0.0.1"]
        processes.append(ServiceProcess("flower", flower_argv, flower_env(env), log_dir).start())
        api, base = start_api(env, log_dir)
        processes.append(api)
        api_port = base.rsplit(":", 1)[1]
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in sorted(RULES.glob("*.yml"))],
            "scrape_configs": [
                {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{prom_port}"]}]},
                {"job_name": "jeffrey-api", "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}]},
                {"job_name": "jeffrey-worker", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
                {"job_name": "flower", "static_configs": [{"targets": [f"127.0.0.1:{flower_port}"]}]},
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        prom_argv = [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        ]
        prom_argv += [f"--web.listen-address=127.0.0.1:{prom_port}"]
        processes.append(ServiceProcess("prometheus", prom_argv, env, log_dir).start())
        prometheus = f"http://127.0.0.1:{prom_port}"
        eventually(lambda: _answers(f"{prometheus}/-/ready"), 60, "prometheus never got ready")
        eventually(
            lambda: _answers(f"http://127.0.0.1:{flower_port}/healthcheck"), 60, "flower never answered"
        )

        # Traffic: memories (annotated by the worker), detections, a dream run, a hygiene scan.
        admin = {
            "Authorization": "Bearer "
            + mint_token(env["JEFFREY_SECRET_KEY"], "ops", ["admin", "memories"], 600)
        }
        memories = synthetic.generate(60, themes=3, seed=4)
        body = {"memories": [{"text": m.text} for m in memories]}
        assert httpx.post(f"{base}/api/v1/memories", json=body, headers=admin, timeout=30).status_code == 201
        eventually(lambda: httpx.get(f"{base}/readyz").json()["workers"] == "up", 30, "worker not seen")
        for text in ("I love this", "This is terrifying", "Je suis en colère"):
            assert (
                httpx.post(
                    f"{base}/api/v1/emotion/detect", json={"text": text}, headers=admin, timeout=15
                ).status_code
                == 200
            )
        run = httpx.post(f"{base}/api/v1/dream/run", params={"force": "true"}, headers=admin).json()
        eventually(
            lambda: httpx.get(f"{base}{run['status_url']}", headers=admin).json()["status"] == "succeeded",
            60,
            "dream run did not succeed",
        )
        from jeffrey_core.celery_factory import create_celery
        from jeffrey_core.contract import TaskName
        from jeffrey_core.settings import Settings

        celery = create_celery(Settings())
        celery.conf.broker_url = celery.conf.result_backend = env["REDIS_URL"]  # never the default Redis
        celery.send_task(TaskName.REDIS_HYGIENE.value, queue="default")
        for _ in range(20):
            httpx.get(f"{base}/api/v1/memories", headers=admin)
        eventually(
            lambda: len(query(prometheus, "up == 1")["data"]["result"]) == 4, 30, "not every target is up"
        )
        eventually(
            lambda: (
                bool(query(prometheus, "jeffrey_redis_keys_without_ttl")["data"]["result"])
                and bool(query(prometheus, "flower_task_runtime_seconds_count")["data"]["result"])
            ),
            30,
            "late metrics never scraped",
        )

        # Rates need two samples of each series inside their window.
        rate_probe = "sum(rate(jeffrey_emotion_predictions_total[1m]))"
        eventually(lambda: bool(query(prometheus, rate_probe)["data"]["result"]), 30, "rates never available")
        # Each target is scraped on its own clock: wait (with a deadline) until every panel has
        # two samples of its series, instead of judging them all at one instant.
        empty: list[str] = []

        def every_panel_has_data() -> bool:
            empty.clear()
            for uid, title, expr in panel_expressions():
                answer = query(prometheus, expr)
                assert answer["status"] == "success", (uid, title, answer)
                if not answer["data"]["result"] and title not in EMPTY_ALLOWED:
                    empty.append(f"{uid} / {title}: {expr}")
            return not empty

        if not wait_until(every_panel_has_data, timeout=30, interval=1):
            raise AssertionError("panels without data (waited 30s):\n" + "\n".join(empty))

        rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        alerts = {r["name"]: r for g in rules for r in g["rules"] if r["type"] == "alerting"}
        assert set(alerts) == set(ALERT_SIGNALS)
        for name, rule in alerts.items():
            assert rule["health"] in ("ok", "unknown"), (name, rule.get("lastError"))
            assert query(prometheus, rule["query"])["status"] == "success", name
            assert query(prometheus, ALERT_SIGNALS[name])["data"]["result"], (
                f"{name}: no data behind the alert"
            )
        firing = {n for n, r in alerts.items() if r["state"] == "firing"}
        assert not firing, firing
    finally:
        for process in reversed(processes):
            process.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
