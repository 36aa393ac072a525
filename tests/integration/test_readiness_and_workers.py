"""Readiness against real Redis, a real database and real Celery worker processes."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jeffrey_core.auth import mint_token
from jeffrey_dev.stack import free_port
from tests.support.processes import (
    RedisServer,
    ServiceProcess,
    eventually,
    service_env,
    start_api,
    start_worker,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def ready(base: str, admin: bool = False) -> httpx.Response:
    headers = {}
    if admin:  # details (errors, latencies, worker names) are for admins only
        token = mint_token(service_env("", "")["JEFFREY_SECRET_KEY"], "ops", ["admin"], 60)
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(f"{base}/readyz", timeout=10, headers=headers)


def workers_state(base: str) -> str:
    state: str = ready(base).json().get("workers") or ready(base).json()["error"]["details"]["workers"]
    return state


@pytest.fixture
def env(redis_url: str, sqlite_url: str) -> dict[str, str]:
    return service_env(redis_url, sqlite_url)


@pytest.fixture
def api(env: dict[str, str], log_dir: Path) -> Iterator[str]:
    process, base = start_api(env, log_dir)
    yield base
    process.stop()


def test_readyz_reports_workers_up_then_down_without_failing(
    api: str, env: dict[str, str], log_dir: Path
) -> None:
    body = ready(api).json()
    assert body["status"] == "ready" and body["workers"] == "down"
    assert body["checks"]["redis"]["status"] == "ok" and body["checks"]["database"]["status"] == "ok"

    hostname = f"readyz-{uuid.uuid4().hex[:6]}@localhost"
    worker = start_worker(env, log_dir, hostname)
    try:
        eventually(lambda: ready(api).json()["workers"] == "up", 15, "readyz never saw the worker")
        assert hostname in ready(api, admin=True).json()["worker_names"]
        anonymous = ready(api)
        assert "worker_names" not in anonymous.json() and hostname.split("@")[0] not in anonymous.text
    finally:
        worker.stop()
    started = time.monotonic()
    eventually(lambda: ready(api).json()["workers"] == "down", 10, "readyz still reports the stopped worker")
    assert time.monotonic() - started < 10
    assert ready(api).status_code == 200  # workers down never fails readiness


def test_readyz_is_cached_briefly(api: str) -> None:
    first = ready(api).json()
    second = ready(api).json()
    assert second["cached"] is True and second["checked_at"] == first["checked_at"]


def test_readyz_fails_fast_while_redis_is_down_and_recovers(
    env: dict[str, str], sqlite_url: str, log_dir: Path
) -> None:
    own = RedisServer(log_dir).start()
    process, base = start_api(service_env(own.url(0), sqlite_url), log_dir)
    try:
        assert ready(base).status_code == 200
        own.stop()

        def redis_named() -> bool:
            started = time.monotonic()
            response = ready(base)
            assert time.monotonic() - started < 5, "readiness hung while Redis was down"
            return response.status_code == 503 and "redis" in response.json()["error"]["message"]

        eventually(redis_named, 10, "readyz did not go 503 naming redis")
        down = ready(base)
        assert down.headers["retry-after"]
        details = down.json()["error"]["details"]
        assert (
            details["checks"]["redis"]["status"] == "fail" and details["checks"]["database"]["status"] == "ok"
        )
        own.start()
        eventually(lambda: ready(base).status_code == 200, 15, "readyz did not recover after Redis came back")
    finally:
        process.stop()
        own.stop()


def test_readyz_is_503_when_the_database_is_unreachable(redis_url: str, log_dir: Path) -> None:
    dead_db = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    process, base = start_api(service_env(redis_url, dead_db, DATABASE_CONNECT_TIMEOUT="1"), log_dir)
    try:
        started = time.monotonic()
        response = ready(base)
        assert time.monotonic() - started < 5
        assert response.status_code == 503 and response.headers["retry-after"]
        error = response.json()["error"]
        assert error["code"] == "not_ready" and "database" in error["message"]
        assert error["details"]["checks"] == {"redis": {"status": "ok"}, "database": {"status": "fail"}}
        port = dead_db.rsplit(":", 1)[1].split("/")[0]
        assert port not in response.text and "127.0.0.1" not in response.text
        detailed = ready(base, admin=True).json()["error"]["details"]["checks"]["database"]
        assert detailed["status"] == "fail" and detailed["error"]
        token = mint_token(service_env("", "")["JEFFREY_SECRET_KEY"], "u1", ["memories"], 60)
        write = httpx.post(
            f"{base}/api/v1/memories", json={"text": "hi"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert write.status_code == 503 and write.json()["error"]["code"] == "database_unavailable"
        assert write.headers["retry-after"]
    finally:
        process.stop()


def test_echo_round_trip_through_a_real_worker(api: str, env: dict[str, str], log_dir: Path) -> None:
    admin = {"Authorization": f"Bearer {mint_token(env['JEFFREY_SECRET_KEY'], 'ops', ['admin'], 60)}"}
    no_worker = httpx.post(
        f"{api}/api/v1/ops/echo", json={"message": "anyone?", "timeout": 1}, headers=admin, timeout=10
    )
    assert no_worker.status_code == 504 and no_worker.json()["error"]["code"] == "worker_timeout"

    hostname = f"echo-{uuid.uuid4().hex[:6]}@localhost"
    worker = start_worker(env, log_dir, hostname)
    try:
        # The message sent while no worker ran waits in the queue; the worker takes it first (acks_late).
        response = httpx.post(f"{api}/api/v1/ops/echo", json={"message": "hello"}, headers=admin, timeout=15)
        assert response.status_code == 200, response.text
        assert response.json()["message"] == "hello" and response.json()["worker"] == hostname

        ping = subprocess.run(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "jeffrey_worker.app",
                "inspect",
                "ping",
                "-d",
                hostname,
                "-t",
                "5",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ping.returncode == 0, ping.stdout + ping.stderr
        assert "pong" in ping.stdout
    finally:
        worker.stop()


def test_two_beats_only_one_schedules(env: dict[str, str], log_dir: Path, redis_server: RedisServer) -> None:
    beat_env = {**env, "BEAT_HEARTBEAT_SECONDS": "1", "REDIS_KEY_PREFIX": f"test-{uuid.uuid4().hex[:6]}"}
    argv = [sys.executable, "-m", "celery", "-A", "jeffrey_beat.app", "beat", "--loglevel", "DEBUG"]
    beats = [ServiceProcess(f"beat{i}", argv, beat_env, log_dir).start() for i in range(2)]
    try:
        eventually(
            lambda: sum("Acquired lock" in b.output() for b in beats) == 1,
            30,
            "no beat acquired the redbeat lock",
        )
        leader = next(b for b in beats if "Acquired lock" in b.output())
        standby = next(b for b in beats if b is not leader)
        eventually(
            lambda: leader.output().count("Sending due task beat-heartbeat") >= 3,
            30,
            "leader is not scheduling",
        )
        assert "Sending due task" not in standby.output()
        # Fail-over: when the leader dies, the standby takes the lock and schedules.
        leader.stop()
        eventually(
            lambda: "Sending due task beat-heartbeat" in standby.output(), 60, "standby never took over"
        )
    finally:
        for beat in beats:
            beat.stop()
