"""Export and erasure of one user's data, against a real API, real workers, Redis and both databases."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import create_engine, func, select, text

from jeffrey_core.auth import mint_token
from jeffrey_core.celery_factory import create_celery
from jeffrey_core.dlq import dead_letter_record, publish_dead_letter
from jeffrey_core.settings import Settings
from jeffrey_core.store.models import AuditRecord, Dream, DreamRun, IdempotencyKey, Memory
from jeffrey_worker.dream import synthetic
from tests.support.processes import ServiceProcess, eventually, service_env, start_api, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Stack:
    def __init__(self, database_url: str, redis_url: str, log_dir: Path) -> None:
        self.env = service_env(
            redis_url,
            database_url,
            WORKER_METRICS_PORT="0",
            DREAM_BATCH_INITIAL="50",
            DREAM_BATCH_MAX="50",
            ERASURE_SWEEP_DELAY_SECONDS="3",
        )
        self.database_url, self.redis_url = database_url, redis_url
        self.worker: ServiceProcess | None = None
        self.api, self.base = start_api(self.env, log_dir)
        self.log_dir = log_dir

    def start_worker(self) -> None:
        self.worker = start_worker(self.env, self.log_dir, f"erase-{uuid.uuid4().hex[:6]}@localhost")

    def headers(self, user: str, *scopes: str) -> dict[str, str]:
        token = mint_token(self.env["JEFFREY_SECRET_KEY"], user, list(scopes or ("memories",)), 600)
        return {"Authorization": f"Bearer {token}"}

    def seed(self, user: str, count: int, seed: int) -> None:
        memories = synthetic.generate(count, themes=4, seed=seed)
        body = {"memories": [{"text": m.text, "created_at": m.created_at.isoformat()} for m in memories]}
        for start in range(0, count, 500):
            chunk = {"memories": body["memories"][start : start + 500]}
            headers = self.headers(user) | {"Idempotency-Key": f"seed-{seed}-{start}"}
            response = httpx.post(f"{self.base}/api/v1/memories", json=chunk, headers=headers, timeout=60)
            assert response.status_code == 201, response.text

    def run(self, user: str) -> str:
        response = httpx.post(f"{self.base}/api/v1/dream/run", headers=self.headers(user))
        assert response.status_code == 202, response.text
        run_id: str = response.json()["run_id"]
        return run_id

    def run_status(self, user: str, run_id: str) -> str:
        body = httpx.get(f"{self.base}/api/v1/dream/runs/{run_id}", headers=self.headers(user)).json()
        status: str = body["status"]
        return status

    def stop(self) -> None:
        self.api.stop()
        if self.worker is not None:
            self.worker.stop()


@pytest.fixture
def stack(database_url: str, redis_url: str, log_dir: Path) -> Iterator[Stack]:
    running = Stack(database_url, redis_url, log_dir)
    yield running
    running.stop()


def rows_of(database_url: str, user: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            counts = {
                name: int(conn.scalar(select(func.count()).select_from(model).where(column == user)) or 0)
                for name, model, column in (
                    ("memories", Memory, Memory.user_id),
                    ("dreams", Dream, Dream.user_id),
                    ("runs", DreamRun, DreamRun.user_id),
                    ("idempotency_keys", IdempotencyKey, IdempotencyKey.user_id),
                )
            }
            counts["consolidations"] = int(
                conn.scalar(
                    text(
                        "SELECT count(*) FROM consolidations WHERE memory_id NOT IN (SELECT id FROM memories)"
                    )
                )
                or 0
            )
            counts["erasure_audit"] = int(
                conn.scalar(
                    select(func.count())
                    .select_from(AuditRecord)
                    .where(AuditRecord.action == "user.erase", AuditRecord.outcome == "ok")
                    .where(AuditRecord.target.like(f"{user}%"))
                )
                or 0
            )
        return counts
    finally:
        engine.dispose()


def redis_mentions(redis_url: str, needles: set[str]) -> list[str]:
    """Keys of this test's Redis db whose name or value mentions one of `needles`."""
    client = redis.Redis.from_url(redis_url)
    hits = []
    try:
        for key in client.scan_iter(count=500):
            name = key.decode(errors="replace")
            kind = client.type(key).decode()
            if kind == "string":
                value = str(client.get(key))
            elif kind == "list":
                value = str(client.lrange(key, 0, -1))
            elif kind == "hash":
                value = str(client.hgetall(key))
            elif kind == "zset":
                value = str(client.zrange(key, 0, -1))
            elif kind == "set":
                value = str(client.smembers(key))
            else:
                value = ""
            if any(n in name or n in value for n in needles):
                hits.append(name)
    finally:
        client.close()
    return hits


def test_export_then_erase_while_a_run_is_active_leaves_nothing(stack: Stack, user_id: str) -> None:
    other = f"other-{uuid.uuid4().hex[:8]}"
    stack.seed(other, 30, seed=3)
    stack.seed(user_id, 120, seed=1)
    stack.start_worker()
    first = stack.run(user_id)
    eventually(lambda: stack.run_status(user_id, first) == "succeeded", 120, "first run never succeeded")
    stack.seed(user_id, 1500, seed=2)
    active = stack.run(user_id)
    eventually(lambda: stack.run_status(user_id, active) == "running", 60, "second run never started")
    celery = create_celery(Settings())
    celery.conf.broker_url = celery.conf.result_backend = stack.env["REDIS_URL"]  # never the default Redis
    publish_dead_letter(
        celery,
        dead_letter_record(
            "jeffrey.dream.consolidate", "t1", [active], {}, "dream", ValueError("x"), "", 1, "test"
        ),
    )

    # Export: a header line, then every memory, dream and run; another user cannot export it.
    response = httpx.get(f"{stack.base}/api/v1/export", headers=stack.headers(user_id), timeout=60)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[0]["type"] == "export" and lines[0]["records_at_start"] >= 1622  # a run adds dreams
    kinds = [line["type"] for line in lines[1:]]
    assert kinds.count("memory") == 1620 and kinds.count("dream") >= 2 and kinds.count("run") == 2
    assert all("embedding" not in line for line in lines) and all(
        line.get("user_id") == user_id for line in lines
    )
    denied = httpx.get(
        f"{stack.base}/api/v1/export", params={"user_id": user_id}, headers=stack.headers(other)
    )
    assert denied.status_code == 403

    # Erasure: only with the confirmation, never of someone else by a user.
    url = f"{stack.base}/api/v1/users/{user_id}"
    assert httpx.delete(url, headers=stack.headers(user_id)).status_code == 400
    assert httpx.delete(url, headers=stack.headers(other), params={"confirm": user_id}).status_code == 403
    erased = httpx.delete(url, headers=stack.headers(user_id), params={"confirm": user_id}, timeout=60)
    assert erased.status_code == 200, erased.text
    report = erased.json()["erased"]
    assert report["memories"] == 1620 and report["runs"] == 2 and report["dead_letters"] == 1
    memory_ids = {line["id"] for line in lines[1:] if line["type"] == "memory"}
    run_ids = {line["id"] for line in lines[1:] if line["type"] == "run"}

    # The batch in flight cannot bring anything back, and the second pass removes what it left in Redis.
    needles = {user_id} | run_ids | set(sorted(memory_ids)[:200])
    eventually(lambda: redis_mentions(stack.redis_url, needles) == [], 60, "erased ids still in Redis")
    assert rows_of(stack.database_url, user_id) == {
        "memories": 0,
        "dreams": 0,
        "runs": 0,
        "idempotency_keys": 0,
        "consolidations": 0,
        "erasure_audit": 1,
    }
    assert rows_of(stack.database_url, other)["memories"] == 30  # nobody else's data went
    assert httpx.get(f"{stack.base}/api/v1/memories", headers=stack.headers(user_id)).json()["items"] == []
