"""/api/v1/audit (admin): the audit log of admin actions, newest first. Read-only: no route deletes it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict

from jeffrey_api.deps import CursorDep, LimitQuery, SessionDep, require_admin
from jeffrey_core.store.audit import AuditAction, AuditFilter, list_audit

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], dependencies=[Depends(require_admin)])


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    at: datetime
    actor: str
    action: str
    target: str | None
    request_id: str | None
    outcome: str


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None


@router.get("", response_model=AuditPage, summary="Admin actions, newest first (cursor pagination)")
def list_audit_log(
    session: SessionDep,
    cursor: CursorDep,
    limit: LimitQuery = 50,
    actor: Annotated[str | None, Query(min_length=1, max_length=128, description="Only this admin.")] = None,
    action: Annotated[AuditAction | None, Query(description="Only this action.")] = None,
) -> AuditPage:
    rows, next_cursor = list_audit(
        session, AuditFilter(actor, action.value if action else None), limit, cursor
    )
    return AuditPage(
        items=[AuditOut.model_validate(r) for r in rows],
        next_cursor=next_cursor.encode() if next_cursor else None,
    )
