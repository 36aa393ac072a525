"""Operator endpoints (admin scope)."""

from __future__ import annotations

from typing import Any

import anyio
from celery.exceptions import TimeoutError as CeleryTimeoutError
from fastapi import APIRouter
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

from jeffrey_api.auto_debug import diagnose
from jeffrey_api.deps import AdminDep, StateDep
from jeffrey_api.errors import ApiError, unavailable
from jeffrey_api.schemas import EchoRequest
from jeffrey_api.tasks import send
from jeffrey_core.contract import TaskName, echo_payload

router = APIRouter(prefix="/api/v1/ops", tags=["ops"])


@router.post(
    "/echo",
    summary="Round trip through the broker: a worker answers with its name and clock",
    responses={
        503: {"description": "broker unreachable"},
        504: {"description": "no worker answered in time"},
    },
)
async def echo(body: EchoRequest, state: StateDep, _: AdminDep) -> dict[str, Any]:
    def round_trip() -> dict[str, Any]:
        result = send(state, TaskName.SYSTEM_ECHO, **echo_payload(body.message))
        try:
            value: dict[str, Any] = result.get(timeout=body.timeout, propagate=True)
            return value
        finally:
            result.forget()

    try:
        return await anyio.to_thread.run_sync(round_trip)
    except CeleryTimeoutError as exc:
        raise ApiError(504, "worker_timeout", f"no worker answered within {body.timeout:g}s") from exc
    except (KombuOperationalError, RedisError, OSError) as exc:
        raise unavailable("broker_unavailable", "the broker (Redis) is not reachable; retry later") from exc


brain_router = APIRouter(prefix="/api/v1/brain", tags=["ops"])


@brain_router.get(
    "/auto-debug",
    summary="Diagnosis of the live system: findings with severity and suggested action, and a health score",
)
async def auto_debug(state: StateDep, _: AdminDep) -> dict[str, Any]:
    return await diagnose(state)
