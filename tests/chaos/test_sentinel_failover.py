"""Chaos: Redis high availability with Sentinel. One master, one replica and three Sentinels on free
loopback ports; a real API, worker and beat configured only through REDIS_SENTINELS (their REDIS_URL
points at a closed port, so any client that bypassed Sentinel would fail). Memories are written in a
loop and a dream run is going when the master is SIGKILLed; Sentinel promotes the replica.

Required: the API keeps answering (201, or a fast 503 with Retry-After; never a hang), the worker and
beat reconnect by themselves, and every memory answered with 201 is stored once, annotated and
consolidated exactly once. Replication is asynchronous, so writes the master had not yet shipped are
lost with it (broker messages, heartbeats); the database is the outbox and beat's sweeps re-send
what the database says is still to do (docs/operations.md).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import create_engine, select

from jeffrey_core.store.models import Memory
from jeffrey_dev.stack import find_redis_server, free_port, wait_until
from jeffrey_worker.dream import synthetic
from tests.chaos.test_chaos import Client
from tests.support.dreams import consolidated
from tests.support.processes import ServiceProcess, eventually, service_env, start_api, start_worker

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(400)]

MASTER_NAME = "jeffrey-ha"
PASSWORD = "sentinel-test-redis-password-0123456789"
SEEDED = 600
BATCH = "50"
HARD_LIMIT = 15  # a run whose batch message was lost resumes after 2 x 15 s without a heartbeat
CLIENT_TIMEOUT = 5.0
USER = f"ha-{uuid.uuid4().hex[:8]}"


@dataclass
class Node:
    """One redis-server (data node or Sentinel) started from a config file, stopped by its PID."""

    name: str
    config: str
    log_dir: Path
    port: int = field(default_factory=free_port)
    process: ServiceProcess | None = None

    def start(self, sentinel: bool = False) -> Node:
        binary = find_redis_server()
        if binary is None:
            pytest.skip("redis-server is not installed")
        path = self.log_dir / f"{self.name}-{self.port}.conf"  # Sentinel rewrites its file: no stdin
        # `dir`: RDB files (a replica's full sync) go to the test's folder, never the working tree.
        path.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.log_dir}\n{self.config}")
        argv = [binary, str(path)] + (["--sentinel"] if sentinel else [])
        self.process = ServiceProcess(self.name, argv, dict(os.environ), self.log_dir).start()
        return self

    def client(self, password: str | None = PASSWORD) -> redis.Redis:
        return redis.Redis(port=self.port, password=password, socket_timeout=1, decode_responses=True)

    def kill(self) -> None:
        if self.process:
            self.process.stop(signal.SIGKILL)


def _replication(node: Node) -> dict[str, Any]:
    try:
        with node.client() as c:
            info: dict[str, Any] = c.info("replication")
            return info
    except redis.RedisError:
        return {}


def _master_of(sentinel: Node) -> int | None:
    try:
        with sentinel.client(None) as c:
            addr = c.sentinel_get_master_addr_by_name(MASTER_NAME)
            return int(addr[1]) if addr else None
    except redis.RedisError:
        return None


def _sentinel_ready(sentinel: Node) -> bool:
    """This Sentinel knows the master, its replica and the two other Sentinels (quorum possible)."""
    try:
        with sentinel.client(None) as c:
            master = c.sentinel_master(MASTER_NAME)
            return int(master["num-other-sentinels"]) == 2 and int(master["num-slaves"]) == 1
    except redis.RedisError:
        return False


def start_topology(log_dir: Path) -> tuple[Node, Node, list[Node]]:
    auth = f'requirepass "{PASSWORD}"\nmasterauth "{PASSWORD}"\nsave ""\nappendonly no\n'
    master = Node("redis-master", auth, log_dir).start()
    replica = Node("redis-replica", auth + f"replicaof 127.0.0.1 {master.port}\n", log_dir).start()
    eventually(lambda: _replication(replica).get("master_link_status") == "up", 20, "replica never synced")
    monitor = (
        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} 2\n"
        f'sentinel auth-pass {MASTER_NAME} "{PASSWORD}"\n'
        f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
        f"sentinel failover-timeout {MASTER_NAME} 4000\n"
        f"sentinel parallel-syncs {MASTER_NAME} 1\n"
    )
    sentinels = [Node(f"sentinel{i}", monitor, log_dir).start(sentinel=True) for i in range(3)]
    eventually(lambda: all(_sentinel_ready(s) for s in sentinels), 30, "sentinels never met")
    return master, replica, sentinels


@dataclass
class Load:
    """Writes one memory at a time for USER; records (status, seconds, text, finished at)."""

    base: str
    headers: dict[str, str]
    outcomes: list[tuple[int, float, str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        i = 0
        with httpx.Client(timeout=CLIENT_TIMEOUT) as http:
            while not self.stop.is_set():
                text = f"failover memory {i} {uuid.uuid4().hex[:8]}"
                started = time.monotonic()
                try:
                    r = http.post(f"{self.base}/api/v1/memories", json={"text": text}, headers=self.headers)
                    status = r.status_code if r.status_code != 503 or r.headers.get("retry-after") else -503
                except httpx.HTTPError as exc:
                    status = 0  # timed out or refused: counted, never waited on longer than the timeout
                    self.errors.append(exc.__class__.__name__)
                self.outcomes.append((status, time.monotonic() - started, text, time.monotonic()))
                i += 1
                time.sleep(0.05)


def _write(base: str, headers: dict[str, str], text: str) -> httpx.Response:
    return httpx.post(
        f"{base}/api/v1/memories", json={"text": f"{text} {uuid.uuid4().hex[:8]}"}, headers=headers
    )


def _detect_ok(base: str, client: Client) -> bool:
    try:
        r = httpx.post(
            f"{base}/api/v1/emotion/detect", json={"text": "I am happy"}, headers=client.h(), timeout=3
        )
        return r.status_code == 200
    except httpx.HTTPError:
        return False


def _stored(database_url: str) -> list[tuple[str, bool]]:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(Memory.text, Memory.annotated_at).where(Memory.user_id == USER)).all()
    engine.dispose()
    return [(text, annotated is not None) for text, annotated in rows]


def test_master_killed_sentinel_promotes_the_replica_and_nothing_is_lost(
    postgres_url: str, log_dir: Path, figures: dict[str, Any]
) -> None:
    # PostgreSQL, as in production: SQLite's single writer would make memory writes wait behind the
    # dream batches' (deliberately slow) transactions, which is not what this test is about.
    database_url = postgres_url
    master, replica, sentinels = start_topology(log_dir)
    fixed = {"DREAM_BATCH_MIN": BATCH, "DREAM_BATCH_MAX": BATCH, "DREAM_BATCH_INITIAL": BATCH}
    limits = {"CELERY_TASK_TIME_LIMIT": str(HARD_LIMIT), "CELERY_TASK_SOFT_TIME_LIMIT": str(HARD_LIMIT - 3)}
    env = service_env(
        f"redis://127.0.0.1:{free_port()}/0",  # nothing listens here: only the Sentinels say where Redis is
        database_url,
        REDIS_SENTINELS=",".join(f"127.0.0.1:{s.port}" for s in sentinels),
        REDIS_SENTINEL_MASTER=MASTER_NAME,
        REDIS_PASSWORD=PASSWORD,
        REDIS_SOCKET_TIMEOUT="1",
        WORKER_METRICS_PORT="0",
        EMOTION_SWEEP_SECONDS="3",
        DREAM_RECOVERY_SECONDS="3",
        DREAM_FAULT_DELAY_SECONDS="0.5",
        DREAM_SCHEDULE="0 0 1 1 *",
        **fixed,
        **limits,
    )
    nodes = [master, replica, *sentinels]
    services: list[ServiceProcess] = []
    load: Load | None = None
    try:
        services.append(start_worker(env, log_dir, f"ha-{uuid.uuid4().hex[:6]}@localhost", concurrency=2))
        beat_argv = [sys.executable, "-m", "celery", "-A", "jeffrey_beat.app", "beat", "--loglevel", "INFO"]
        services.append(ServiceProcess("beat", beat_argv, env, log_dir).start())
        api, base = start_api(env, log_dir)
        services.append(api)
        client = Client(base, env)
        eventually(lambda: _detect_ok(base, client), 60, "the worker never answered through Sentinel")

        memories = synthetic.generate(SEEDED, themes=6, seed=3)
        client.seed(USER, memories[: SEEDED // 2])
        client.seed(USER, memories[SEEDED // 2 :])
        run_id = client.run(USER)
        load = Load(base, client.user_h(USER))
        writer = threading.Thread(target=load.run, daemon=True)
        writer.start()
        eventually(lambda: client.get_run(run_id)["batches"] >= 2, 90, "the dream run never got going")

        batches_at_kill = client.get_run(run_id)["batches"]
        writes_before = len(load.outcomes)
        killed_at = time.monotonic()
        master.kill()
        eventually(
            lambda: _master_of(sentinels[0]) == replica.port, 60, "sentinel never promoted the replica"
        )
        promoted_after = time.monotonic() - killed_at
        eventually(lambda: _detect_ok(base, client), 120, "workers never answered after the failover")
        detect_after = time.monotonic() - killed_at
        eventually(
            lambda: client.get_run(run_id)["batches"] > batches_at_kill + 1, 120, "the run never progressed"
        )
        run_progress_after = time.monotonic() - killed_at
        # The rate limiter (which keeps one connection of its own) counts on the new master again.
        eventually(
            lambda: "ratelimit-limit" in _write(base, load.headers, "after the failover").headers,
            30,
            "the rate limiter never came back on the new master",
        )
        # A few more seconds of writes against the new master, then stop the load.
        wait_until(lambda: False, timeout=3)
        load.stop.set()
        writer.join(timeout=CLIENT_TIMEOUT + 5)

        run = client.wait(run_id, 240)
        assert run["status"] == "succeeded", run
        # Memories written while the run went are consolidated by the next run.
        final_id = client.run(USER)
        assert client.wait(final_id, 240)["status"] == "succeeded"

        outcomes = load.outcomes
        statuses = Counter(o[0] for o in outcomes)
        accepted = [o[2] for o in outcomes if o[0] == 201]
        during = [o for o in outcomes[writes_before:] if o[3] - killed_at <= detect_after]
        slowest = max(o[1] for o in outcomes)
        # No 500, no 503 without Retry-After, no client timeout.
        assert set(statuses) <= {201, 503}, (statuses, load.errors)
        assert slowest < CLIENT_TIMEOUT

        stored = Counter(text for text, _ in _stored(database_url))
        lost = [t for t in accepted if stored[t] == 0]
        duplicated = [o[2] for o in outcomes if stored[o[2]] > 1]  # load texts are unique
        assert not lost and not duplicated, (len(lost), len(duplicated))
        eventually(lambda: all(a for _, a in _stored(database_url)), 60, "memories were never annotated")
        total = len(stored)
        assert consolidated(database_url, USER) == (total, total, total)
        assert all(s.running() for s in services), "a service died with the master"
        figures.update(
            seeded=SEEDED,
            writes=len(outcomes),
            accepted_201=len(accepted),
            refused_503=statuses[503],
            writes_during_failover=len(during),
            accepted_during_failover=sum(1 for o in during if o[0] == 201),
            refused_503_during_failover=sum(1 for o in during if o[0] == 503),
            longest_write_s=round(slowest, 2),
            promoted_after_s=round(promoted_after, 1),
            workers_answer_after_s=round(detect_after, 1),
            run_progress_after_s=round(run_progress_after, 1),
            memories_stored=total,
            consolidated_once=total,
            lost=len(lost),
            duplicated=len(duplicated),
        )
        print(f"sentinel failover figures: {figures}")
    finally:
        if load:
            load.stop.set()
        for service in services:
            service.stop()
        for node in nodes:
            node.kill()
