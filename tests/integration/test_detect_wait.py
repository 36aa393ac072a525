"""POST /emotion/detect waits for its worker without holding a thread, for at most API_RESULT_MAX_WAIT
(issue 11, item 2): real uvicorn, a private Redis, and a real worker that consumes every queue but the
emotion one, so the API sees a live worker while no answer ever comes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from jeffrey_api.admission import queue_depth
from jeffrey_core.auth import mint_token
from tests.support.processes import eventually, service_env, start_api, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MAX_WAIT = 10  # the default; the margin between every call waiting and the first timing out
CALLS = 50  # more than the 40 threads of the API's pool


@dataclass
class Api:
    base: str
    redis: redis.Redis
    headers: dict[str, str]


@pytest.fixture
def api(redis_url: str, sqlite_url: str, log_dir: Path) -> Iterator[Api]:
    env = service_env(redis_url, sqlite_url, API_RESULT_MAX_WAIT=str(MAX_WAIT))
    worker = start_worker(env, log_dir, f"no-emotion-{uuid.uuid4().hex[:6]}@localhost", queues="default")
    process, base = start_api(env, log_dir)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    token = mint_token(env["JEFFREY_SECRET_KEY"], "alice", ["memories"], 600)
    try:
        eventually(lambda: httpx.get(f"{base}/readyz").json()["workers"] == "up", 20, "worker not seen")
        yield Api(base, client, {"Authorization": f"Bearer {token}"})
    finally:
        process.stop()
        worker.stop()
        client.close()


def test_waiting_detect_calls_hold_no_thread_and_end_in_504(api: Api) -> None:
    async def scenario() -> None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            # A body asking for 30 s is cut to API_RESULT_MAX_WAIT.
            body = {"text": "I am so happy today", "timeout": 30}
            url = f"{api.base}/api/v1/emotion/detect"
            calls = [
                asyncio.create_task(client.post(url, json=body, headers=api.headers)) for _ in range(CALLS)
            ]
            # Every call has sent its task and is now waiting for an answer that cannot come.
            await _until(lambda: queue_depth(api.redis, "emotion") == CALLS or any(c.done() for c in calls))
            assert not any(c.done() for c in calls), "a detect call ended before all of them were waiting"
            # The process still serves, threadpool routes included (/metrics renders in a thread).
            assert (await client.get(f"{api.base}/healthz")).status_code == 200
            assert (await client.get(f"{api.base}/metrics")).status_code == 200
            assert (await client.get(f"{api.base}/readyz")).status_code == 200
            assert not all(c.done() for c in calls)
            responses = await asyncio.gather(*calls)
        for response in responses:
            assert response.status_code == 504, response.text
            error = response.json()["error"]
            assert error["code"] == "worker_timeout" and f"within {MAX_WAIT}s" in error["message"]

    asyncio.run(scenario())


async def _until(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
