"""The API application factory. `uvicorn jeffrey_api.main:app` builds it on first access."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

import jeffrey_core
from jeffrey_api.dream_metrics import DreamCollector
from jeffrey_api.errors import install_error_handlers
from jeffrey_api.http_metrics import HttpMetrics, HttpMetricsMiddleware
from jeffrey_api.middleware import (
    ApiAuthMiddleware,
    BodySizeLimitMiddleware,
    RateLimitMiddleware,
    RequestIdMiddleware,
)
from jeffrey_api.multiprocess_metrics import mark_self_dead, multiprocess_dir, scrape_registry, watch_streams
from jeffrey_api.routes import audit, dlq, dreams, emotion, events, health, memories, ops, tokens, users
from jeffrey_api.schemas import ErrorEnvelope
from jeffrey_api.state import AppState
from jeffrey_api.streams import StreamCollector
from jeffrey_core.auth import key_ring
from jeffrey_core.logging import configure_logging
from jeffrey_core.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """A fresh API app; clients are opened in the lifespan, not here."""
    settings = settings or get_settings()
    if settings.is_prod and settings.security.secret_key is None:
        # Other services run without it (blank or unset); the API verifies every token with it.
        raise RuntimeError("SECURITY_MODE=prod refuses to start the API: JEFFREY_SECRET_KEY is missing")
    if settings.security.secret_key is not None:
        key_ring(settings.security)  # a malformed JEFFREY_KEY_ID / JEFFREY_VERIFY_KEYS fails here, named
    configure_logging("api", settings.observability.log_level, settings.observability.log_format)
    # One process: one registry, written and scraped. Several (PROMETHEUS_MULTIPROC_DIR): the
    # instruments write to files and /metrics serves the files' sum (jeffrey_api.multiprocess_metrics).
    multiproc = multiprocess_dir()
    registry = CollectorRegistry()
    if multiproc is None:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    scrape = registry if multiproc is None else scrape_registry(multiproc)
    error_responses: dict[int | str, dict[str, Any]] = {
        # 400: a body that is not even text (FastAPI's parse error); 429: the rate limits of /api/v1.
        code: {"model": ErrorEnvelope}
        for code in (400, 401, 403, 404, 413, 422, 429, 503)
    }
    app = FastAPI(
        title="Jeffrey OS dream infrastructure",
        version=jeffrey_core.__version__,
        description=(
            "Store memories, annotate emotions, consolidate dreams. Auth: `Authorization: Bearer <jwt>`."
        ),
        lifespan=_lifespan(settings, scrape, multiproc),
        responses=error_responses,
    )
    install_error_handlers(app)
    _add_middleware(app, settings)
    _add_metrics(app, registry, scrape, multiproc)
    _include_routers(app)
    return app


def _lifespan(
    settings: Settings, registry: CollectorRegistry, multiproc: Path | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = AppState.open(settings, registry)
        app.state.jeffrey = state
        if multiproc is not None:
            watch_streams(state.streams)
        try:
            yield
        finally:
            await state.close()
            if multiproc is not None:
                mark_self_dead(multiproc)

    return lifespan


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    # Added innermost first. A request meets: metrics, request id, CORS (answers preflights), the
    # body-size limit (413 before anything else reads), the rate limits of /api/v1 (429, per IP and
    # per user, sharing the token verification with the next layer), authentication of /api/v1 (401
    # before the body is parsed), then the routes.
    app.add_middleware(ApiAuthMiddleware, settings=settings)
    app.add_middleware(RateLimitMiddleware, settings=settings)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.api.max_body_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.security.cors_origins,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
        expose_headers=[
            "X-Request-ID",
            "Retry-After",
            "Idempotent-Replayed",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
            "RateLimit-Policy",
        ],
    )
    app.add_middleware(RequestIdMiddleware)


def _add_metrics(
    app: FastAPI, registry: CollectorRegistry, scrape: CollectorRegistry, multiproc: Path | None
) -> None:
    # Outermost layer: it times everything the other layers do (jeffrey_api.http_metrics).
    app.add_middleware(HttpMetricsMiddleware, metrics=HttpMetrics(registry))
    # Read from the database and Redis when scraped: once per scrape, by the process that answers.
    scrape.register(DreamCollector(lambda: getattr(app.state, "jeffrey", None)))
    if multiproc is None:  # else `livesum` gauges summed over the processes (watch_streams)
        scrape.register(
            StreamCollector(lambda: getattr(getattr(app.state, "jeffrey", None), "streams", None))
        )


def _include_routers(app: FastAPI) -> None:
    for router in (
        health.router,
        memories.write_router,
        memories.router,
        emotion.router,
        dreams.router,
        events.router,
        dlq.router,
        ops.router,
        ops.brain_router,
        tokens.router,
        audit.router,
        users.router,
    ):
        app.include_router(router)


def __getattr__(name: str) -> FastAPI:
    # `uvicorn jeffrey_api.main:app` resolves `app` here, so importing this module has no side effects.
    if name == "app":
        return create_app()
    raise AttributeError(name)
