"""Readiness: Redis and database must answer; workers are reported, never required.

An orchestrator pulls an API replica that is not ready. Workers restart for their own reasons,
so their absence is reported (`workers: down`) without failing readiness. Results are cached a
few seconds so frequent probes do not hammer the broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import redis.asyncio as aioredis
from celery import Celery
from sqlalchemy import Engine

from jeffrey_core.store.engine import ping as ping_database


@dataclass
class ReadinessReport:
    checks: dict[str, dict[str, Any]]
    workers: str
    worker_names: list[str] = field(default_factory=list)
    breakers: dict[str, str] = field(default_factory=dict)
    checked_at: float = field(default_factory=time.time)

    @property
    def ready(self) -> bool:
        return all(check["status"] == "ok" for check in self.checks.values())

    @property
    def failing(self) -> list[str]:
        return [name for name, check in self.checks.items() if check["status"] != "ok"]

    def public_dict(self, cached: bool) -> dict[str, Any]:
        """What anyone may read: check names and their status, the worker and breaker states.

        No exception text, latency, host, port or worker name: those are for admins (`as_dict`)."""
        return {
            "status": "ready" if self.ready else "not_ready",
            "checks": {name: {"status": check["status"]} for name, check in self.checks.items()},
            "workers": self.workers,
            "breakers": self.breakers,
            "cached": cached,
            "checked_at": self.checked_at,
        }

    def as_dict(self, cached: bool) -> dict[str, Any]:
        return {
            "status": "ready" if self.ready else "not_ready",
            "checks": self.checks,
            "workers": self.workers,
            "worker_names": self.worker_names,
            "breakers": self.breakers,
            "cached": cached,
            "checked_at": self.checked_at,
        }


class ReadinessProbe:
    """Runs the checks concurrently, each under its own deadline, and caches the report."""

    def __init__(
        self,
        redis: aioredis.Redis,
        engine: Engine,
        celery: Celery,
        cache_seconds: float,
        worker_ping_timeout: float,
        check_timeout: float = 2.0,
        breakers: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self._read_breakers = breakers  # blocking (jeffrey_core.breaker), run in a thread
        self._redis = redis
        self._engine = engine
        self._celery = celery
        self._cache_seconds = cache_seconds
        self._worker_ping_timeout = worker_ping_timeout
        self._check_timeout = check_timeout
        self._lock = asyncio.Lock()
        self._last: ReadinessReport | None = None
        # Its own thread budget: a burst of requests holding the shared pool (40 threads) must not make
        # the probe time out and pull a healthy replica. Created on first use, inside the event loop.
        self._threads: anyio.CapacityLimiter | None = None

    def _in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        if self._threads is None:
            self._threads = anyio.CapacityLimiter(3)
        return anyio.to_thread.run_sync(func, *args, limiter=self._threads)

    async def report(self) -> tuple[ReadinessReport, bool]:
        """The current report and whether it came from the cache."""
        async with self._lock:
            if self._last and time.time() - self._last.checked_at < self._cache_seconds:
                return self._last, True
            self._last = await self._run()
            return self._last, False

    async def _run(self) -> ReadinessReport:
        redis_check, db_check = await asyncio.gather(
            self._timed(self._redis.ping()),
            self._timed(self._in_thread(ping_database, self._engine)),
        )
        workers, names, breakers = "unknown", [], {}
        if redis_check["status"] == "ok":
            names = await self._ping_workers()
            workers = "up" if names else "down"
            breakers = await self._breakers()
        return ReadinessReport(
            checks={"redis": redis_check, "database": db_check},
            workers=workers,
            worker_names=names,
            breakers=breakers,
        )

    async def _breakers(self) -> dict[str, str]:
        """Circuit breaker states (reported, never failing readiness: the fallback keeps serving)."""
        if self._read_breakers is None:
            return {}
        try:
            states: dict[str, str] = await self._in_thread(self._read_breakers)
            return states
        except Exception:
            return {}

    async def _timed(self, awaitable: Any) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(awaitable, timeout=self._check_timeout)
        except TimeoutError:
            return {"status": "fail", "error": f"no answer within {self._check_timeout:g}s"}
        except Exception as exc:
            return {"status": "fail", "error": f"{exc.__class__.__name__}: {exc}"[:300]}
        return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}

    async def _ping_workers(self) -> list[str]:
        def ping() -> list[str]:
            replies = self._celery.control.ping(timeout=self._worker_ping_timeout) or []
            return sorted(name for reply in replies for name in reply)

        try:
            return await asyncio.wait_for(
                self._in_thread(ping), timeout=self._worker_ping_timeout + self._check_timeout
            )
        except Exception:
            return []
