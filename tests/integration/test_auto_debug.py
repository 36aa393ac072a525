"""auto-debug reports what is really wrong: a stopped worker, a full dead-letter queue."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from jeffrey_core.auth import mint_token
from jeffrey_core.celery_factory import create_celery
from jeffrey_core.dlq import dead_letter_record, publish_dead_letter
from jeffrey_core.settings import Settings
from tests.support.processes import eventually, service_env, start_api, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def findings(base: str, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    body = httpx.get(f"{base}/api/v1/brain/auto-debug", headers=headers, timeout=20).json()
    assert 0 <= body["health_score"] <= 100
    return {f["check"]: f | {"score": body["health_score"]} for f in body["findings"]}


def test_auto_debug_sees_a_stopped_worker_and_a_full_dlq(
    redis_url: str, sqlite_url: str, log_dir: Path
) -> None:
    env = service_env(redis_url, sqlite_url, WORKER_METRICS_PORT="0")
    api, base = start_api(env, log_dir)
    admin = {"Authorization": f"Bearer {mint_token(env['JEFFREY_SECRET_KEY'], 'ops', ['admin'], 600)}"}
    user = {"Authorization": f"Bearer {mint_token(env['JEFFREY_SECRET_KEY'], 'u', ['memories'], 600)}"}
    worker = start_worker(env, log_dir, f"debug-{uuid.uuid4().hex[:6]}@localhost")
    try:
        assert httpx.get(f"{base}/api/v1/brain/auto-debug", headers=user).status_code == 403
        eventually(lambda: findings(base, admin)["workers"]["severity"] == "info", 20, "worker not seen")
        healthy = findings(base, admin)
        assert (
            healthy["dead_letters"]["severity"] == "info"
            and healthy["breaker:emotion-model"]["severity"] == "info"
        )
        assert healthy["settings:mode"]["severity"] == "warning"  # the suite runs in dev mode

        worker.stop()
        eventually(
            lambda: findings(base, admin)["workers"]["severity"] == "critical",
            20,
            "stopped worker not reported",
        )
        assert "celery" in findings(base, admin)["workers"]["action"]

        celery = create_celery(Settings())
        celery.conf.broker_url = celery.conf.result_backend = env["REDIS_URL"]  # never the default Redis
        for i in range(11):
            publish_dead_letter(
                celery,
                dead_letter_record(
                    "jeffrey.emotion.detect", f"t{i}", [], {}, "emotion", ValueError("bad"), "", 1, "test"
                ),
            )
        report = findings(base, admin)
        assert report["dead_letters"]["severity"] == "critical"
        assert report["dead_letters"]["details"]["by_error"] == {"jeffrey.emotion.detect: ValueError": 11}
        assert report["workers"]["score"] <= 40
    finally:
        api.stop()
        worker.stop()
