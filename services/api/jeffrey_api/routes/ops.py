"""Operator endpoints (admin scope)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from jeffrey_api.auto_debug import diagnose
from jeffrey_api.deps import StateDep, require_admin
from jeffrey_api.schemas import EchoRequest
from jeffrey_api.tasks import call
from jeffrey_core.contract import TaskName, echo_payload

router = APIRouter(prefix="/api/v1/ops", tags=["ops"], dependencies=[Depends(require_admin)])


@router.post(
    "/echo",
    summary="Round trip through the broker: a worker answers with its name and clock",
    responses={
        503: {"description": "broker unreachable"},
        504: {"description": "no worker answered in time"},
    },
)
async def echo(body: EchoRequest, state: StateDep) -> dict[str, Any]:
    answer: dict[str, Any] = await call(
        state, TaskName.SYSTEM_ECHO, body.timeout, **echo_payload(body.message)
    )
    return answer


brain_router = APIRouter(prefix="/api/v1/brain", tags=["ops"], dependencies=[Depends(require_admin)])


@brain_router.get(
    "/auto-debug",
    summary="Diagnosis of the live system: findings with severity and suggested action, and a health score",
)
async def auto_debug(state: StateDep) -> dict[str, Any]:
    return await diagnose(state)
