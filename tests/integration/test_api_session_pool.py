"""More concurrent reads than database connections and request threads: none stalls on the pool.

A read leaves its session in a transaction; closing it (which returns the connection) needs a
thread. When that close queued in the shared request threadpool, the pool's connections were held
by finished requests while every request thread waited for a connection: each wave stalled for
the pool timeout (5 s) and then failed. GET /api/v1/dreams at 60 connections went from ~300 to ~25
requests/s and stopped answering (found under load; fixed in jeffrey_api.deps.get_session).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from jeffrey_core.auth import mint_token
from tests.support.processes import service_env, start_api

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# More than the request threadpool (40 threads) and than the connections (2 × DATABASE_POOL_SIZE).
CONCURRENT = 120


def test_concurrent_reads_beyond_the_pool_all_succeed(redis_url: str, sqlite_url: str, log_dir: Path) -> None:
    env = service_env(redis_url, sqlite_url, DATABASE_POOL_SIZE="1")
    api, base = start_api(env, log_dir)
    token = mint_token(env["JEFFREY_SECRET_KEY"], "reader", ["memories"], 600)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        created = httpx.post(f"{base}/api/v1/memories", json={"text": "the sea"}, headers=headers, timeout=10)
        assert created.status_code == 201, created.text

        async def burst() -> list[int]:
            limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits) as client:
                paths = ["/api/v1/dreams", "/api/v1/memories"] * (CONCURRENT // 2)
                answers = await asyncio.gather(*(client.get(p) for p in paths))
            return [a.status_code for a in answers]

        for _ in range(3):  # each wave outnumbers the threads again
            try:
                codes = asyncio.run(burst())
            except httpx.TimeoutException as exc:
                raise AssertionError(f"a read stalled: {api.output()[-3000:]}") from exc
            assert codes == [200] * CONCURRENT, {c: codes.count(c) for c in set(codes)}
    finally:
        api.stop()
