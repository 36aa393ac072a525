"""Chaos: the worker's MAIN process is SIGKILLed (with its pool, as a host crash would) in the middle
of a dream run, and a new worker takes over.

The batch message the dead worker held stays unacknowledged in Redis until the visibility timeout
(300 s). The run must not wait for it: the recovery sweep re-sends the stalled batch once the run's
heartbeat is gone — on worker start (phase 1) and from beat (phase 2) — and when the original
messages are finally redelivered, the batch sequence guard drops them as duplicates.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection

from jeffrey_core.celery_factory import create_celery
from jeffrey_core.contract import TaskName
from jeffrey_core.redis_keys import RedisKeys
from jeffrey_core.retry_policy import MAX_DELIVERIES
from jeffrey_core.settings import Settings
from jeffrey_worker.dream import synthetic
from tests.chaos.test_chaos import Client
from tests.support.dreams import consolidated, pool_children
from tests.support.processes import ServiceProcess, eventually, service_env, start_api, start_worker

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(400)]

MEMORIES = 2000
BATCH = "100"
HARD_LIMIT = 15  # stall window: 2 x 15 s without a heartbeat


def _active_batch(app: Celery, hostname: str) -> tuple[str, int] | None:
    """(task id, seq) of the consolidation batch `hostname` is running now, if any."""
    active = app.control.inspect(destination=[hostname], timeout=1).active() or {}
    for task in active.get(hostname, []):
        if task.get("name") == TaskName.DREAM_CONSOLIDATE_BATCH.value:
            seq = (task.get("kwargs") or {}).get("seq")
            if seq is not None:
                return str(task["id"]), int(seq)
    return None


def _crash(worker: ServiceProcess) -> None:
    """SIGKILL the main process first, then its pool processes: nothing gets to acknowledge or requeue."""
    children = pool_children(worker.pid)
    os.kill(worker.pid, signal.SIGKILL)
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    assert worker.proc is not None
    worker.proc.wait(timeout=10)


def _kill_mid_batch(client: Client, inspector: Celery, worker: ServiceProcess, hostname: str, run_id: str,
                    at_least: int) -> tuple[str, int]:  # fmt: skip
    """Wait until `worker` runs batch >= at_least (its transaction held open), then crash it there."""
    found: list[tuple[str, int]] = []

    def running() -> bool:
        batch = _active_batch(inspector, hostname)
        if batch is not None and batch[1] >= at_least:
            found.append(batch)
        return bool(found)

    eventually(running, 90, f"batch {at_least} never ran")
    _crash(worker)
    task_id, seq = found[0]
    assert client.get_run(run_id)["batches"] == seq, "the killed batch had not committed"
    return task_id, seq


def _unacked_task_ids(broker_url: str) -> dict[str, str]:
    """task id -> delivery tag of every message delivered but never acknowledged (kombu's unacked hash)."""
    with Connection(broker_url) as conn:
        channel: Any = conn.default_channel
        client = redis.Redis.from_url(broker_url)
        held = client.hgetall(channel.unacked_key)
        client.close()
    return {json.loads(raw)[0]["headers"]["id"]: tag.decode() for tag, raw in held.items()}


def _redeliver(broker_url: str, tags: list[str]) -> None:
    """What Redis does once the visibility timeout has passed (kombu's own restore), without the wait."""
    with Connection(broker_url) as conn:
        channel: Any = conn.default_channel
        for tag in tags:
            channel.qos.restore_by_tag(tag)


def test_worker_main_process_killed_mid_run_resumes_without_the_visibility_timeout(
    redis_url: str, sqlite_url: str, log_dir: Path, figures: dict[str, Any]
) -> None:
    fixed = {"DREAM_BATCH_MIN": BATCH, "DREAM_BATCH_MAX": BATCH, "DREAM_BATCH_INITIAL": BATCH}
    limits = {"CELERY_TASK_TIME_LIMIT": str(HARD_LIMIT), "CELERY_TASK_SOFT_TIME_LIMIT": str(HARD_LIMIT - 3)}
    env = service_env(
        redis_url, sqlite_url, WORKER_METRICS_PORT="0", DREAM_FAULT_DELAY_SECONDS="1.5",
        DREAM_RECOVERY_SECONDS="3", DREAM_SCHEDULE="0 0 1 1 *", **fixed, **limits,
    )  # fmt: skip
    heartbeats = redis.Redis.from_url(redis_url, decode_responses=True)
    inspector = create_celery(Settings(), main="chaos-crash")
    inspector.conf.broker_url = inspector.conf.result_backend = redis_url
    names = [f"crash{i}-{uuid.uuid4().hex[:6]}@localhost" for i in range(3)]
    workers = [start_worker(env, log_dir, names[0], concurrency=1)]
    api, base = start_api(env, log_dir)
    client = Client(base, env)
    beat: ServiceProcess | None = None
    try:
        memories = synthetic.generate(MEMORIES, themes=8, seed=13)
        for start in range(0, MEMORIES, 500):
            client.seed("crashed", memories[start : start + 500])
        run_id = client.run("crashed")
        heartbeat = RedisKeys().dream_heartbeat(run_id)

        # Phase 1 - recovery on worker start: crash, stay down until the heartbeat is gone, restart.
        first_id, first_seq = _kill_mid_batch(client, inspector, workers[0], names[0], run_id, 2)
        killed_at = time.monotonic()
        eventually(lambda: heartbeats.exists(heartbeat) == 0, 2 * HARD_LIMIT + 15, "heartbeat never expired")
        down_for = time.monotonic() - killed_at
        launched = time.monotonic()
        workers.append(start_worker(env, log_dir, names[1], concurrency=1))
        ready_after = time.monotonic() - launched
        eventually(lambda: heartbeats.exists(heartbeat) == 1, 60, "the stalled run was never claimed")
        resent_after = time.monotonic() - launched  # the sweep claimed the run and re-sent its batch
        eventually(lambda: client.get_run(run_id)["batches"] > first_seq, 60, "run did not resume on start")
        resume_after_start = time.monotonic() - launched

        # Phase 2 - recovery by beat's sweep: crash again and restart at once (the heartbeat still lives).
        argv = [sys.executable, "-m", "celery", "-A", "jeffrey_beat.app", "beat", "--loglevel", "INFO"]
        beat = ServiceProcess("beat", argv, env, log_dir).start()
        second_id, second_seq = _kill_mid_batch(
            client, inspector, workers[1], names[1], run_id, first_seq + 3
        )
        killed_at = time.monotonic()
        workers.append(start_worker(env, log_dir, names[2], concurrency=1))
        restarted_after = time.monotonic() - killed_at
        eventually(lambda: client.get_run(run_id)["batches"] > second_seq, 60, "run did not resume (beat)")
        resume_after_kill = time.monotonic() - killed_at

        run = client.wait(run_id, 180)
        assert run["status"] == "succeeded", run
        assert consolidated(sqlite_url, "crashed") == (MEMORIES, MEMORIES, MEMORIES)

        # The dead workers' batch messages were never acknowledged: Redis would hand them out again
        # after its visibility timeout. Do it now; the sequence guard must drop both as duplicates.
        unacked = _unacked_task_ids(redis_url)
        assert first_id in unacked and second_id in unacked, unacked
        _redeliver(redis_url, [unacked[first_id], unacked[second_id]])
        for task_id in (first_id, second_id):
            result = inspector.AsyncResult(task_id)
            eventually(lambda r=result: r.state == "SUCCESS", 60, f"redelivered {task_id} never ran")
            assert result.result["status"] == "duplicate", result.result
        assert consolidated(sqlite_url, "crashed") == (MEMORIES, MEMORIES, MEMORIES)
        assert client.get_run(run_id)["status"] == "succeeded"
        assert client.dlq()["total"] == 0
        recovered = sum(w.output().count("stalled (no heartbeat") for w in workers)
        figures.update(
            memories=MEMORIES,
            batches=run["batches"],
            stall_window_s=2 * HARD_LIMIT,
            phase1_down_s=round(down_for, 1),
            phase1_worker_ready_after_s=round(ready_after, 1),
            phase1_resent_after_restart_s=round(resent_after, 1),
            phase1_resume_after_restart_s=round(resume_after_start, 1),
            phase2_restart_after_kill_s=round(restarted_after, 1),
            phase2_resume_after_kill_s=round(resume_after_kill, 1),
            runs_resent=recovered,
            redelivered_originals_dropped=2,
            consolidated_once=MEMORIES,
            lost=0,
            duplicated=0,
        )
        print(f"resume delay: batch re-sent {resent_after:.1f}s and committed {resume_after_start:.1f}s "
              f"after the restart (worker ready after {ready_after:.1f}s), "
              f"{resume_after_kill:.1f}s after the kill with an immediate restart (beat sweep)")  # fmt: skip
        assert recovered == 2
    finally:
        heartbeats.close()
        inspector.close()
        api.stop()
        if beat:
            beat.stop()
        for worker in workers:
            worker.stop()


def _batch_in_live_child(
    inspector: Celery, hostname: str, worker: ServiceProcess, killed: list[int], found: list[tuple[str, int]]
) -> bool:
    """Whether a consolidation batch runs in a pool process not yet killed; (task id, pid) into `found`."""
    active = inspector.control.inspect(destination=[hostname], timeout=1).active() or {}
    for task in active.get(hostname, []):
        pid = int(task.get("worker_pid") or 0)
        live = pid in pool_children(worker.pid) and pid not in killed
        if task.get("name") == TaskName.DREAM_CONSOLIDATE_BATCH.value and live:
            found.append((str(task["id"]), pid))
    return bool(found)


def test_a_message_that_kills_its_pool_process_every_time_is_dead_lettered_at_its_fourth_delivery(
    redis_url: str, sqlite_url: str, log_dir: Path, figures: dict[str, Any]
) -> None:
    """Celery on Redis would hand such a message out forever (acks_late + reject_on_worker_lost
    requeue it each time). The base task counts only deliveries kombu flags `redelivered`, so a
    first delivery costs no Redis call; the bound must still hold: three kills, then the DLQ."""
    one = {"DREAM_BATCH_MIN": "40", "DREAM_BATCH_MAX": "40", "DREAM_BATCH_INITIAL": "40"}
    env = service_env(redis_url, sqlite_url, WORKER_METRICS_PORT="0", DREAM_FAULT_DELAY_SECONDS="30", **one)
    hostname = f"killer-{uuid.uuid4().hex[:6]}@localhost"
    inspector = create_celery(Settings(), main="chaos-killer")
    inspector.conf.broker_url = inspector.conf.result_backend = redis_url
    worker = start_worker(env, log_dir, hostname, concurrency=1)
    api, base = start_api(env, log_dir)
    client = Client(base, env)
    killed: list[int] = []
    try:
        client.seed("killer", synthetic.generate(40, themes=2, seed=5))
        run_id = client.run("killer")
        task_ids: set[str] = set()
        for _ in range(MAX_DELIVERIES):
            running: list[tuple[str, int]] = []
            eventually(
                lambda found=running: _batch_in_live_child(inspector, hostname, worker, killed, found),
                60,
                "the batch was not delivered again",
            )
            task_id, pid = running[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            task_ids.add(task_id)
        assert len(task_ids) == 1, task_ids  # the same message every time

        eventually(lambda: client.dlq()["total"] == 1, 60, "the fourth delivery was not dead-lettered")
        record = client.dlq()["items"][0]
        assert record["task_id"] == task_ids.pop(), record
        assert record["reason"] == f"redelivered {MAX_DELIVERIES + 1} times after worker loss", record
        assert client.get_run(run_id)["batches"] == 0  # never committed, never run a fourth time
        figures.update(kills=len(killed), deliveries=MAX_DELIVERIES + 1, dead_lettered=1)
    finally:
        inspector.close()
        api.stop()
        worker.stop()
