"""Redis-backed rate limits (issue 11, item 2) against real uvicorn servers sharing a private Redis:
429 with Retry-After and the RateLimit headers, one budget shared by two API processes, independent
users, a per-IP budget that anonymous callers spend too, exempt paths, and fail-open when Redis is down.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from jeffrey_api.rate_limit import Budget, Caller, RateLimiter
from jeffrey_core.auth import mint_token
from jeffrey_core.settings import RateLimitSettings
from jeffrey_core.store.migrate import upgrade
from tests.support.processes import RedisServer, ServiceProcess, eventually, service_env, start_api

pytestmark = pytest.mark.integration
SECRET = service_env("", "")["JEFFREY_SECRET_KEY"]
REDIS_DB = 11
# Per user; per IP twice that (every test client is 127.0.0.1).
LIMITS = {
    "RATE_LIMIT_WRITES": "3/minute",
    "RATE_LIMIT_DETECT": "1/minute",
    "RATE_LIMIT_DREAM_RUNS": "1/hour",
    "RATE_LIMIT_READS": "5/minute",
    "RATE_LIMIT_IP_MULTIPLIER": "2",
}
HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")


def auth(user: str, *scopes: str) -> dict[str, str]:
    token = mint_token(SECRET, user, list(scopes or ("memories",)), 3600)
    return {"Authorization": f"Bearer {token}"}


def new_user() -> str:
    return f"rl-{uuid.uuid4().hex[:8]}"


def write(base: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{base}/api/v1/memories", json={"text": "a note"}, headers=headers, timeout=10)


def assert_refused(response: httpx.Response, budget: str, caller: str) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    assert f"'{budget}'" in error["message"] and f"this {caller}" in error["message"], error["message"]
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["ratelimit-remaining"] == "0"
    assert int(response.headers["ratelimit-reset"]) >= 0


@pytest.fixture(scope="module")
def apis(
    redis_server: RedisServer, log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[str]]:
    """Two API processes on one database and one Redis db: the replicas of one deployment."""
    db = f"sqlite:///{tmp_path_factory.mktemp('ratelimits') / 'jeffrey.db'}"
    upgrade(db)
    env = service_env(redis_server.url(REDIS_DB), db, **LIMITS)
    started: list[tuple[ServiceProcess, str]] = []
    try:
        for _ in range(2):
            started.append(start_api(env, log_dir))
        yield [base for _, base in started]
    finally:
        for process, _ in started:
            process.stop()


@pytest.fixture
def bases(apis: list[str], redis_server: RedisServer) -> list[str]:
    """Fresh budgets for each test (the per-IP ones are shared by every test's client)."""
    client = redis_server.client(REDIS_DB)
    client.flushdb()
    client.close()
    return apis


def test_over_budget_gets_429_with_retry_after_and_ratelimit_headers(bases: list[str]) -> None:
    base, user = bases[0], auth(new_user())
    for remaining in (2, 1, 0):
        accepted = write(base, user)
        assert accepted.status_code == 201, accepted.text
        assert accepted.headers["ratelimit-limit"] == "3"
        assert accepted.headers["ratelimit-remaining"] == str(remaining)
        assert 0 <= int(accepted.headers["ratelimit-reset"]) <= 60
        assert accepted.headers["ratelimit-policy"] == "3;w=60"
    refused = write(base, user)
    assert_refused(refused, "writes", "user")
    assert refused.headers["ratelimit-limit"] == "3"
    assert int(refused.headers["retry-after"]) <= 60
    # The other budgets are untouched: reads, detect and dream runs each have their own.
    listed = httpx.get(f"{base}/api/v1/memories", headers=user)
    assert listed.status_code == 200 and listed.headers["ratelimit-limit"] == "5"
    detect = httpx.post(f"{base}/api/v1/emotion/detect", json={}, headers=user)
    assert detect.status_code == 422 and detect.headers["ratelimit-limit"] == "1"
    assert_refused(httpx.post(f"{base}/api/v1/emotion/detect", json={}, headers=user), "detect", "user")
    first_run = httpx.post(f"{base}/api/v1/dream/run", headers=user)
    assert first_run.status_code != 429 and first_run.headers["ratelimit-limit"] == "1"
    assert_refused(httpx.post(f"{base}/api/v1/dream/run", headers=user), "dream_runs", "user")
    # A DELETE is a write too, and refused before the route looks for the memory.
    missing = f"{base}/api/v1/memories/{uuid.uuid4()}"
    assert_refused(httpx.delete(missing, headers=user), "writes", "user")


def test_two_api_processes_share_one_budget(bases: list[str]) -> None:
    user = auth(new_user())
    remaining = []
    for i in range(3):
        response = write(bases[i % 2], user)
        assert response.status_code == 201, response.text
        remaining.append(response.headers["ratelimit-remaining"])
    assert remaining == ["2", "1", "0"]  # counted across both processes
    for base in bases:
        assert_refused(write(base, user), "writes", "user")


def test_users_have_independent_budgets(bases: list[str]) -> None:
    alice, bob = auth(new_user()), auth(new_user())
    assert [write(bases[0], alice).status_code for _ in range(3)] == [201, 201, 201]
    assert_refused(write(bases[1], alice), "writes", "user")
    first = write(bases[1], bob)
    assert first.status_code == 201 and first.headers["ratelimit-remaining"] == "1"  # bob's 2 left... and
    # the address's: 6 per IP, alice spent 4 (her refused request counted for the address), bob 1.
    assert write(bases[0], bob).status_code == 201
    assert_refused(write(bases[0], bob), "writes", "ip")


def test_anonymous_callers_spend_the_address_budget(bases: list[str]) -> None:
    anonymous = [write(bases[i % 2], {}) for i in range(6)]
    assert [r.status_code for r in anonymous] == [401] * 6
    assert anonymous[0].headers["ratelimit-limit"] == "6"  # the per-IP budget: 3 x 2
    assert anonymous[-1].headers["ratelimit-remaining"] == "0"
    assert_refused(write(bases[0], {}), "writes", "ip")
    assert_refused(write(bases[1], {"Authorization": "Bearer not-a-token"}), "writes", "ip")
    # A valid token from the same address is refused too: the address is over its budget.
    assert_refused(write(bases[0], auth(new_user())), "writes", "ip")


def test_a_revoked_token_spends_only_the_address_budget(bases: list[str]) -> None:
    """The revocation lookup rides on the limiter's one Redis round trip: a revoked token is refused
    (401 token_revoked) and counted like an anonymous request, for the address alone."""
    user = new_user()
    token = mint_token(SECRET, user, ["memories"], 3600)
    assert write(bases[0], {"Authorization": f"Bearer {token}"}).headers["ratelimit-remaining"] == "2"
    revoke = httpx.post(
        f"{bases[1]}/api/v1/tokens/revoke", json={"token": token}, headers=auth("rl-ops", "admin")
    )
    assert revoke.status_code == 200 and revoke.json()["revoked"] is True, revoke.text
    for base in bases:  # both replicas see it
        refused = write(base, {"Authorization": f"Bearer {token}"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "token_revoked"
    # The address spent 4 of its 6; the user's budget still holds 2, so a fresh token of theirs has 1 left.
    assert refused.headers["ratelimit-limit"] == "6" and refused.headers["ratelimit-remaining"] == "2"
    fresh = write(bases[0], auth(user))
    assert fresh.status_code == 201 and fresh.headers["ratelimit-remaining"] == "1", fresh.headers


def test_exempt_paths_are_never_limited(bases: list[str]) -> None:
    for _ in range(8):  # more than the read budget (5 per user, 10 per IP)
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
            response = httpx.get(f"{bases[0]}{path}", timeout=10)
            assert response.status_code in (200, 503), (path, response.status_code)
            assert not any(h in response.headers for h in HEADERS), path
    preflight = httpx.options(
        f"{bases[0]}/api/v1/memories",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    user = auth(new_user())
    assert httpx.get(f"{bases[0]}/api/v1/memories", headers=user).headers["ratelimit-remaining"] == "4"


def test_redis_down_fails_open_quickly(log_dir: Path, tmp_path: Path) -> None:
    redis = RedisServer(log_dir).start()
    db = f"sqlite:///{tmp_path / 'jeffrey.db'}"
    upgrade(db)
    env = service_env(redis.url(0), db, **LIMITS, RATE_LIMIT_FAIL_OPEN_SECONDS="1")
    api, base = start_api(env, log_dir)
    user = auth(new_user())
    try:
        assert write(base, user).headers["ratelimit-remaining"] == "2"
        redis.stop()
        timings = []
        for _ in range(5):  # more than the budget: nothing counts while Redis is away
            started = time.monotonic()
            accepted = write(base, user)
            listed = httpx.get(f"{base}/api/v1/memories", headers=user, timeout=10)
            timings.append(time.monotonic() - started)
            assert accepted.status_code == 201, accepted.text  # the database is the outbox
            assert listed.status_code == 200
            assert not any(h in accepted.headers or h in listed.headers for h in HEADERS)
        assert max(timings) < 1.0, timings
        assert "rate limiter cannot reach Redis" in api.output()
        redis.start()
        eventually(lambda: "ratelimit-limit" in write(base, user).headers, 20, "limits never came back")
    finally:
        api.stop()
        redis.stop()


def test_one_script_counts_as_the_limits_package_does(redis_server: RedisServer) -> None:
    """The limiter's single script (one round trip for both budgets) keeps `limits`' keys and counts:
    `limits`' own sliding-window-counter strategy, reading the same keys, agrees on what is left."""
    asyncio.run(_compare_with_limits(redis_server.url(REDIS_DB)))


async def _compare_with_limits(url: str) -> None:
    settings = RateLimitSettings.model_validate(
        {"RATE_LIMIT_WRITES": "3/minute", "RATE_LIMIT_IP_MULTIPLIER": "2"}
    )
    prefix = f"jeffrey-test-{uuid.uuid4().hex[:8]}:ratelimit"  # keys of this test only: no flush
    pool = aioredis.ConnectionPool.from_url(url)
    limiter = RateLimiter(settings, pool, prefix)
    reference = SlidingWindowCounterRateLimiter(
        RedisStorage("async+redis://", implementation="redispy", key_prefix=prefix, connection_pool=pool)
    )
    ip, alice, bob = f"10.{uuid.uuid4().int % 250}.0.1", new_user(), new_user()
    try:
        seen = []
        for user in (alice, alice, alice, alice, bob, bob, bob):
            quota = await limiter.check(Budget.WRITES, ip, user)
            assert quota is not None
            seen.append((quota.allowed, quota.caller.value, quota.remaining))
            for caller, identity in ((Caller.IP, ip), (Caller.USER, user)):
                item = limiter.items[Budget.WRITES, caller]
                stats = await reference.get_window_stats(item, "writes", caller.value, identity)
                if caller is quota.caller:
                    assert stats.remaining == quota.remaining, (caller, seen)
        # alice: 3 allowed, the 4th refused by her budget (the address's counted it); bob: the address
        # has 6 - 4 = 2 left, the tighter budget, so his 2nd request empties it and his 3rd is refused.
        assert seen == [
            (True, "user", 2),
            (True, "user", 1),
            (True, "user", 0),
            (False, "user", 0),
            (True, "ip", 1),
            (True, "ip", 0),
            (False, "ip", 0),
        ]
        assert not await reference.test(limiter.items[Budget.WRITES, Caller.IP], "writes", "ip", ip)
    finally:
        await limiter.aclose()


def test_concurrent_checks_share_round_trips_and_count_exactly(redis_server: RedisServer) -> None:
    """Checks made at once are sent together (one pipeline) yet counted one by one: of 40 concurrent
    requests against a budget of 25, exactly 25 pass, and the remaining counts run 24 down to 0."""
    asyncio.run(_concurrent_checks(redis_server.url(REDIS_DB)))


async def _concurrent_checks(url: str) -> None:
    settings = RateLimitSettings.model_validate(
        {"RATE_LIMIT_WRITES": "25/minute", "RATE_LIMIT_IP_MULTIPLIER": "100"}
    )
    prefix = f"jeffrey-test-{uuid.uuid4().hex[:8]}:ratelimit"
    pool = aioredis.ConnectionPool.from_url(url)
    limiter = RateLimiter(settings, pool, prefix)
    sent: list[int] = []
    original = limiter._spends._send

    async def counting(calls: Any) -> Any:
        sent.append(len(calls))
        return await original(calls)

    limiter._spends._send = counting  # type: ignore[method-assign]
    try:
        await limiter.check(Budget.WRITES, "10.9.9.8", new_user())  # loads the script (NOSCRIPT, then resent)
        sent.clear()
        user = new_user()
        quotas = await asyncio.gather(*(limiter.check(Budget.WRITES, "10.9.9.9", user) for _ in range(40)))
        assert all(q is not None for q in quotas)
        allowed = [q for q in quotas if q is not None and q.allowed]
        assert len(allowed) == 25
        assert sorted(q.remaining for q in allowed) == list(range(25))
        assert sum(sent) == 40 and len(sent) < 40, sent  # shared round trips, every call sent once
        await aioredis.Redis(connection_pool=pool).script_flush()  # as after a restart: reloaded, not failed
        again = await limiter.check(Budget.WRITES, "10.9.9.9", new_user())
        assert again is not None and again.allowed and sent[-2:] == [1, 1]
    finally:
        await limiter.aclose()
