"""The API application factory. `uvicorn jeffrey_api.main:app` builds it on first access."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_fastapi_instrumentator import Instrumentator

import jeffrey_core
from jeffrey_api.dream_metrics import DreamCollector
from jeffrey_api.errors import install_error_handlers
from jeffrey_api.middleware import RequestIdMiddleware
from jeffrey_api.readiness import ReadinessProbe
from jeffrey_api.routes import dlq, dreams, emotion, events, health, memories, ops
from jeffrey_api.schemas import ErrorEnvelope
from jeffrey_api.state import AppState
from jeffrey_core.celery_factory import create_celery
from jeffrey_core.contract import EMOTION_BREAKER
from jeffrey_core.logging import configure_logging
from jeffrey_core.redis_client import create_async_redis, create_sync_redis
from jeffrey_core.redis_keys import RedisKeys
from jeffrey_core.settings import Settings, get_settings
from jeffrey_core.store.engine import create_db_engine, create_session_factory


def create_app(settings: Settings | None = None) -> FastAPI:
    """A fresh API app; clients are opened in the lifespan, not here."""
    settings = settings or get_settings()
    configure_logging("api", settings.observability.log_level, settings.observability.log_format)
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_db_engine(settings.database)
        redis = create_async_redis(settings.redis)
        sync_redis = create_sync_redis(settings.redis)
        celery = create_celery(settings, main="jeffrey-api")
        app.state.jeffrey = AppState(
            settings=settings,
            engine=engine,
            sessions=create_session_factory(engine),
            redis=redis,
            sync_redis=sync_redis,
            celery=celery,
            readiness=ReadinessProbe(
                redis,
                engine,
                celery,
                cache_seconds=settings.api.readiness_cache_seconds,
                worker_ping_timeout=settings.api.worker_ping_timeout,
                breaker_keys={
                    EMOTION_BREAKER: RedisKeys(settings.redis.key_prefix).breaker_state(EMOTION_BREAKER)
                },
            ),
            registry=registry,
            keys=RedisKeys(settings.redis.key_prefix),
        )
        try:
            yield
        finally:
            await redis.aclose()
            sync_redis.close()
            celery.close()
            engine.dispose()

    error_responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorEnvelope} for code in (401, 403, 404, 422, 503)
    }
    app = FastAPI(
        title="Jeffrey OS dream infrastructure",
        version=jeffrey_core.__version__,
        description=(
            "Store memories, annotate emotions, consolidate dreams. Auth: `Authorization: Bearer <jwt>`."
        ),
        lifespan=lifespan,
        responses=error_responses,
    )
    install_error_handlers(app)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.security.cors_origins,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
        expose_headers=["X-Request-ID", "Retry-After", "Idempotent-Replayed"],
    )
    app.add_middleware(RequestIdMiddleware)
    Instrumentator(
        registry=registry,
        excluded_handlers=["/metrics"],
        should_group_status_codes=False,
    ).instrument(app)
    registry.register(DreamCollector(lambda: getattr(app.state, "jeffrey", None)))
    app.include_router(health.router)
    app.include_router(memories.router)
    app.include_router(emotion.router)
    app.include_router(dreams.router)
    app.include_router(events.router)
    app.include_router(dlq.router)
    app.include_router(ops.router)
    app.include_router(ops.brain_router)
    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn jeffrey_api.main:app` resolves `app` here, so importing this module has no side effects.
    if name == "app":
        return create_app()
    raise AttributeError(name)
