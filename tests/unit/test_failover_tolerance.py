"""What keeps the API and beat going through a Redis failover (docs/operations.md)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockNotOwnedError

from jeffrey_api import deps
from jeffrey_api.errors import ApiError
from jeffrey_beat.scheduler import RETRY_SECONDS, FailoverTolerantScheduler
from jeffrey_core.auth import Principal
from jeffrey_core.redis_keys import RedisKeys

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class RevocationRedis:
    """Answers EXISTS, or raises ConnectionError while `down`."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    async def exists(self, key: str) -> int:
        self.calls += 1
        if self.down:
            raise RedisConnectionError("master gone")
        return 0


def test_revocation_gate_reopens_under_steady_traffic(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(deps, "time", clock)
    redis = RevocationRedis()
    state: Any = SimpleNamespace(redis=redis, keys=RedisKeys())
    admin = Principal(user_id="ops", scopes=frozenset({"admin", "memories"}), jti="j1")
    gate = deps.RevocationGate(timeout=0.5, down_seconds=2.0)

    async def scenario() -> None:
        with pytest.raises(ApiError):
            await gate.refuse_revoked(admin, state)  # Redis fails: admin tokens get 503
        redis.down = False  # the failover is over
        while clock.now < 1001.9:  # a request every 0.1 s inside the window: refused without asking Redis
            clock.now += 0.1
            with pytest.raises(ApiError):
                await gate.refuse_revoked(admin, state)
        assert redis.calls == 1
        clock.now = 1002.01  # the window ends 2 s after the failure, however many requests came
        await gate.refuse_revoked(admin, state)
        assert redis.calls == 2

    asyncio.run(scenario())


def test_beat_tick_rides_out_an_unreachable_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes: list[Any] = [RedisConnectionError("master gone"), RedisConnectionError("still"), 4.0]

    def tick(self: Any, *args: Any, **kwargs: Any) -> float:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return float(outcome)

    monkeypatch.setattr("redbeat.RedBeatScheduler.tick", tick)
    scheduler = object.__new__(FailoverTolerantScheduler)  # no app or Redis needed for tick()
    assert scheduler.tick() == RETRY_SECONDS
    assert scheduler.unreachable_since is not None
    assert scheduler.tick() == RETRY_SECONDS
    assert scheduler.tick() == 4.0
    assert scheduler.unreachable_since is None


def test_beat_still_stops_when_another_beat_took_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    def tick(self: Any, *args: Any, **kwargs: Any) -> float:
        raise LockNotOwnedError("lock lost")

    monkeypatch.setattr("redbeat.RedBeatScheduler.tick", tick)
    scheduler = object.__new__(FailoverTolerantScheduler)
    with pytest.raises(LockNotOwnedError):
        scheduler.tick()
