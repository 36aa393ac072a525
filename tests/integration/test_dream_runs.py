"""Dream runs against real Redis, SQLite and PostgreSQL, and real worker processes (prefork)."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select

from jeffrey_core.auth import mint_token
from jeffrey_core.store.models import Memory
from jeffrey_worker.dream import synthetic
from tests.support.dreams import consolidated, pool_children
from tests.support.processes import ServiceProcess, eventually, service_env, start_api, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class DreamStack:
    api: str
    env: dict[str, str]
    database_url: str
    worker: ServiceProcess

    def headers(self, user: str) -> dict[str, str]:
        token = mint_token(self.env["JEFFREY_SECRET_KEY"], user, ["memories", "admin"], 600)
        return {"Authorization": f"Bearer {token}"}

    def seed(self, user: str, memories: list[synthetic.SyntheticMemory]) -> None:
        body = {"memories": [{"text": m.text, "created_at": m.created_at.isoformat()} for m in memories]}
        assert (
            httpx.post(
                f"{self.api}/api/v1/memories", json=body, headers=self.headers(user), timeout=60
            ).status_code
            == 201
        )

    def start_run(self, user: str) -> str:
        response = httpx.post(f"{self.api}/api/v1/dream/run", headers=self.headers(user))
        assert response.status_code == 202, response.text
        assert response.json()["status_url"].endswith(response.json()["run_id"])
        run_id: str = response.json()["run_id"]
        return run_id

    def run(self, user: str, run_id: str) -> dict:  # type: ignore[type-arg]
        body: dict = httpx.get(f"{self.api}/api/v1/dream/runs/{run_id}", headers=self.headers(user)).json()  # type: ignore[type-arg]
        return body

    def wait(self, user: str, run_id: str, timeout: float = 90) -> dict:  # type: ignore[type-arg]
        eventually(
            lambda: self.run(user, run_id)["status"] in ("succeeded", "failed"),
            timeout,
            f"run {run_id} never ended",
        )
        return self.run(user, run_id)

    def partition(self, user: str) -> tuple[set[frozenset[str]], int]:
        """Dreams as sets of member texts, and the number of singletons."""
        engine = create_engine(self.database_url)
        with engine.connect() as conn:
            rows = conn.execute(select(Memory.text, Memory.dream_id).where(Memory.user_id == user)).all()
        engine.dispose()
        groups: dict[str, set[str]] = {}
        for row_text, dream_id in rows:
            if dream_id:
                groups.setdefault(dream_id, set()).add(row_text)
        return {frozenset(g) for g in groups.values()}, sum(1 for _, d in rows if d is None)


def _stack(
    database_url: str, redis_url: str, log_dir: Path, **extra: str
) -> tuple[DreamStack, ServiceProcess]:
    env = service_env(redis_url, database_url, WORKER_METRICS_PORT="0", **extra)
    worker = start_worker(env, log_dir, f"dream-{uuid.uuid4().hex[:6]}@localhost", concurrency=2)
    api, base = start_api(env, log_dir)
    return DreamStack(base, env, database_url, worker), api


@pytest.fixture
def stack(database_url: str, redis_url: str, log_dir: Path) -> Iterator[DreamStack]:
    dream_stack, api = _stack(database_url, redis_url, log_dir)
    yield dream_stack
    api.stop()
    dream_stack.worker.stop()


def test_forced_run_consolidates_every_memory_once_into_sensible_dreams(
    stack: DreamStack, user_id: str
) -> None:
    memories = synthetic.generate(300, themes=5, seed=17)
    stack.seed(user_id, memories)
    run = stack.wait(user_id, stack.start_run(user_id))
    assert run["status"] == "succeeded", run
    assert run["memories_processed"] == 300 and run["batches"] >= 2 and run["quality"] >= 0.5
    assert consolidated(stack.database_url, user_id) == (300, 300, 300)

    headers = stack.headers(user_id)
    dreams = httpx.get(f"{stack.api}/api/v1/dreams", params={"limit": 200}, headers=headers).json()["items"]
    assert 5 <= len(dreams) <= 12
    detail = httpx.get(f"{stack.api}/api/v1/dreams/{dreams[0]['id']}", headers=headers).json()
    assert len(detail["member_ids"]) == detail["member_count"] and detail["theme"] and detail["summary"]
    # Dreams match the generator's themes (adjusted Rand index over all memories).
    theme_of = {m.text: m.theme for m in memories}
    groups, _ = stack.partition(user_id)
    predicted = {t: f"d{i}" for i, g in enumerate(groups) for t in g}
    texts = sorted(theme_of)
    ari = synthetic.adjusted_rand_index(
        [theme_of[t] for t in texts], [predicted.get(t, f"s-{t}") for t in texts]
    )
    assert ari >= 0.6, ari

    # A user's own view (an admin token would count other tests' memories in the shared database).
    own = {
        "Authorization": "Bearer " + mint_token(stack.env["JEFFREY_SECRET_KEY"], user_id, ["memories"], 600)
    }
    status = httpx.get(f"{stack.api}/api/v1/dream/status", headers=own).json()
    assert status["runs"]["succeeded"] >= 1 and status["pending_memories"] == 0 and status["last_success_at"]
    metrics = httpx.get(f"{stack.api}/metrics").text
    assert 'jeffrey_dream_runs_total{outcome="succeeded"}' in metrics and "jeffrey_dream_quality " in metrics
    # Current row counts are gauges (they go down when dreams merge); the worker counts the events.
    assert "# TYPE jeffrey_dreams gauge" in metrics and "jeffrey_dreams{dominant_emotion=" in metrics
    assert (
        "# TYPE jeffrey_dream_memories_consolidated gauge" in metrics
        and "jeffrey_dreams_total" not in metrics
    )
    other = stack.headers("someone-else")
    assert httpx.get(f"{stack.api}/api/v1/dreams/{dreams[0]['id']}", headers=other).status_code == 404


def test_one_active_run_per_user_and_force_is_for_admins(stack: DreamStack, user_id: str) -> None:
    stack.seed(user_id, synthetic.generate(200, themes=4, seed=5))
    url = f"{stack.api}/api/v1/dream/run"
    user_token = mint_token(stack.env["JEFFREY_SECRET_KEY"], user_id, ["memories"], 600)
    user = {"Authorization": f"Bearer {user_token}"}
    forced = httpx.post(url, params={"force": "true"}, headers=user)
    assert forced.status_code == 403 and forced.json()["error"]["code"] == "forbidden"
    first = stack.start_run(user_id)
    second = httpx.post(url, headers=user)
    assert second.status_code == 409 and second.json()["error"]["code"] == "run_active", second.text
    assert second.json()["error"]["details"]["run_id"] == first
    a = stack.wait(user_id, first)
    assert a["status"] == "succeeded" and a["memories_processed"] == 200
    stack.seed(user_id, synthetic.generate(20, themes=2, seed=6))
    again = stack.wait(user_id, stack.start_run(user_id))  # once finished, a new run is welcome
    assert again["status"] == "succeeded" and again["started_at"] >= a["finished_at"]
    assert consolidated(stack.database_url, user_id) == (220, 220, 220)


def test_sigkill_mid_batch_loses_and_duplicates_nothing(
    database_url: str, redis_url: str, log_dir: Path, user_id: str
) -> None:
    fixed = {
        "DREAM_BATCH_MIN": "40",
        "DREAM_BATCH_MAX": "40",
        "DREAM_BATCH_INITIAL": "40",
        "DREAM_FAULT_DELAY_SECONDS": "1.0",
    }
    stack, api = _stack(database_url, redis_url, log_dir, **fixed)
    try:
        memories = synthetic.generate(200, themes=4, seed=9)
        disturbed, calm = user_id, user_id + "-calm"
        stack.seed(disturbed, memories)
        stack.seed(calm, memories)
        run_id = stack.start_run(disturbed)
        kills = 0
        for target_batches in (1, 3):
            eventually(
                lambda t=target_batches: stack.run(disturbed, run_id)["batches"] >= t,
                60,
                "run did not progress",
            )
            time.sleep(0.3)  # inside the next batch's open transaction (the hook holds it 1 s)
            for child in pool_children(stack.worker.pid):
                os.kill(child, signal.SIGKILL)
                kills += 1
        assert kills >= 2
        finished = stack.wait(disturbed, run_id, timeout=120)
        assert finished["status"] == "succeeded", finished
        assert consolidated(database_url, disturbed) == (200, 200, 200)

        reference = stack.wait(calm, stack.start_run(calm), timeout=120)
        assert reference["status"] == "succeeded"
        assert stack.partition(disturbed) == stack.partition(calm)
        assert finished["memories_processed"] == reference["memories_processed"] == 200
    finally:
        api.stop()
        stack.worker.stop()
