"""Open endpoints for orchestrators and Prometheus: /healthz, /readyz, /metrics."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from jeffrey_api.deps import REVOCATION_UNAVAILABLE, StateDep, authenticate, verify_request_token
from jeffrey_api.errors import RETRY_AFTER_SECONDS, ApiError, error_response
from jeffrey_core.auth import Principal

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers (no dependency is checked)")
async def healthz() -> dict[str, Any]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: Redis and database answer; workers reported as up/down without failing",
    description=(
        "Open to anyone with check names and statuses only; an admin token also gets each check's "
        "error and latency and the worker names."
    ),
    responses={503: {"description": "a required check failed; the error details name it"}},
)
async def readyz(request: Request, state: StateDep) -> JSONResponse:
    report, cached = await state.readiness.report()
    body = report.as_dict(cached) if await _is_admin(request, state) else report.public_dict(cached)
    if report.ready:
        return JSONResponse(body)
    failing = ", ".join(report.failing)
    return error_response(
        503,
        "not_ready",
        f"not ready: {failing} unreachable",
        body,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _is_admin(request: Request, state: StateDep) -> bool:
    """Whether the caller sent a valid, unrevoked admin token (no token, or a bad one, just gets the
    public view). While Redis cannot say whether it was revoked, a valid admin token still gets the
    details: that is when operators need them, and they hold no user data."""
    if "authorization" not in request.headers:
        return False
    result = await authenticate(request.scope, state.settings)
    if isinstance(result, ApiError) and result.code == REVOCATION_UNAVAILABLE:
        result = verify_request_token(request, state.settings)
    return isinstance(result, Principal) and result.is_admin


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=PlainTextResponse,
)
async def metrics(state: StateDep) -> Response:
    # Collectors read the database and Redis: keep that off the event loop.
    body = await anyio.to_thread.run_sync(generate_latest, state.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
